"""Adapter specs, as the command line takes them: a registered method (``lora``), a builder of
your own (``mypkg.topos:ttlora``, imported from the current folder or the installed packages), a
graph ``.json`` file or graph folder, or a saved adapter folder (``--adapter-dir``).

Importing ``mypkg.topos`` runs your code — you named it on your command line; files (graph JSON,
saved adapters) are only ever parsed as data. ``--import MODULE`` imports a module first, e.g. one
that registers a unitary parametrization or a method your saved adapter uses. Nothing here is
called when a file is loaded.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from tnpeft.adapters.methods import METHODS, check_hparams, get_builder
from tnpeft.errors import ConfigError, TNPeftError
from tnpeft.graph import Graph
from tnpeft.storage import graph_modules

_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_]\w*)$")


def import_user_module(name: str, what: str = "--import") -> Any:
    """Import module ``name`` — which runs its code — from the current folder if it is there, else
    from the installed packages; a :class:`ConfigError` says what went wrong. The current folder
    goes *last* on ``sys.path`` (for the module's own imports of its neighbours), so a file there
    named like an installed package (``qiskit.py``) never replaces that package."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    top = name.split(".")[0]
    try:
        spec = importlib.machinery.PathFinder.find_spec(top, [cwd]) if top not in sys.modules else None
        if spec is not None and spec.loader is not None:     # the user's own module, found in the folder
            module = importlib.util.module_from_spec(spec)
            sys.modules[top] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(top, None)
                raise
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{what}: no module named {e.name!r} (looked in the current folder {cwd!r} and the "
                          "installed packages)", field="adapter") from None
    except Exception as e:  # the user's module failed while importing: say so in one line
        raise ConfigError(f"{what}: importing {name!r} failed: {type(e).__name__}: {e}", field="adapter") from None


def is_user_builder(spec: str) -> bool:
    """``module.path:function`` (and not an existing file)."""
    return bool(_SPEC.match(spec)) and not Path(spec).exists()


def is_graph_file(spec: str) -> bool:
    p = Path(spec)
    return spec.lower().endswith(".json") or p.is_dir() or p.is_file()


def user_builder(spec: str) -> Callable[..., Graph]:
    """The function ``spec`` (``module.path:function``) names."""
    m = _SPEC.match(spec)
    if m is None:
        raise ConfigError(f"{spec!r} is not module.path:function", field="adapter")
    module = import_user_module(m["module"], f"adapter {spec!r}")
    fn: Callable[..., Graph] | None = getattr(module, m["name"], None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_")
                       and v.__module__ == module.__name__)
        raise ConfigError(f"adapter {spec!r}: module {m['module']!r} has no function {m['name']!r}; its functions: "
                          f"{found}", field="adapter")
    return fn


def builder_for(spec: str) -> Callable[..., Graph] | str:
    """A registered method name as it is, or the builder function of ``module.path:function``."""
    if is_user_builder(spec):
        return user_builder(spec)
    if spec not in METHODS:
        raise ConfigError(f"unknown adapter {spec!r}; expected a registered method {sorted(METHODS)}, a builder of "
                          "your own as module.path:function (e.g. mypkg.topos:ttlora), or a graph .json file",
                          field="adapter")
    return spec


def build(spec: str, in_features: int | None, out_features: int | None, hparams: dict[str, Any]) -> Graph:
    """The graph of a registered method or a builder of your own, for one layer's sizes."""
    builder = builder_for(spec)
    if not (isinstance(in_features, int) and isinstance(out_features, int) and in_features > 0 and out_features > 0):
        raise ConfigError(f"adapter {spec!r} needs positive --in-features and --out-features", field="in_features")
    check_hparams(builder, hparams)
    fn = get_builder(builder)
    try:
        g = fn(in_features, out_features, **hparams)
    except TNPeftError:
        raise
    except Exception as e:  # a builder of the user's failing: one line, not a traceback
        raise ConfigError(f"adapter {spec!r} failed to build {in_features} → {out_features}: "
                          f"{type(e).__name__}: {e}", field="adapter") from None
    if not isinstance(g, Graph):
        raise ConfigError(f"adapter {spec!r} returned a {type(g).__name__}, not a tnpeft Graph", field="adapter")
    if (g.in_features, g.out_features if g.mode == "add" else out_features) != (in_features, out_features):
        raise ConfigError(f"adapter {spec!r} built a {g.in_features} → {g.out_features} graph for a {in_features} → "
                          f"{out_features} layer", field="adapter")
    return g


def adapter_source(spec: str | None, adapter_dir: str | None, in_features: int | None, out_features: int | None,
                   hparams: dict[str, Any], imports: list[str] | None = None) -> tuple[str, Any]:
    """``(label, source)`` for the tools: a built :class:`Graph`, or the path of a graph file,
    graph folder or saved adapter folder (read by :func:`tnpeft.graph_modules`)."""
    for name in imports or ():
        import_user_module(name)
    if (spec is None) == (adapter_dir is None):
        raise ConfigError("give an adapter (a method name, module.path:function or a graph .json file) or "
                          "--adapter-dir DIR (one of the two)", field="adapter")
    if spec is not None and (is_user_builder(spec) or spec in METHODS or not is_graph_file(spec)):
        return spec, build(spec, in_features, out_features, hparams)
    path = adapter_dir if adapter_dir is not None else spec
    assert path is not None
    if hparams or in_features is not None or out_features is not None:
        raise ConfigError(f"{path!r} holds the sizes and hyper-parameters itself; drop --in-features, "
                          "--out-features and name=value", field="adapter")
    if adapter_dir is not None and not Path(adapter_dir).is_dir():
        raise ConfigError(f"--adapter-dir {adapter_dir!r} is not a folder", field="adapter_dir")
    return path, path


def pick_module(source: Any, module: str | None) -> tuple[str, Any]:
    """One ``(path, GraphModule)`` of a source: ``module`` if given, else the first."""
    mods = graph_modules(source)
    if module is None:
        return next(iter(mods.items()))
    if module not in mods:
        shown = list(mods)[:8]
        raise ConfigError(f"--module {module!r}: the adapter has no module of that path; it has {shown}"
                          f"{' …' if len(mods) > 8 else ''}", field="module")
    return module, mods[module]


def train_method(spec: str, hparams: dict[str, Any]) -> str | Callable[..., Graph]:
    """What ``tnpeft train --adapter SPEC`` injects: a registered name, a builder of your own, or a
    builder that returns the graph of a ``.json`` file for layers of its sizes."""
    if is_user_builder(spec) or spec in METHODS or not is_graph_file(spec):
        return builder_for(spec)
    if hparams:
        raise ConfigError(f"graph file {spec!r} holds its hyper-parameters; drop name=value", field="adapter")
    mods = graph_modules(spec)
    if len(mods) != 1:
        raise ConfigError(f"{spec!r} holds {len(mods)} adapted modules; to train on from a saved adapter use "
                          "--adapter-dir", field="adapter")
    graph = next(iter(mods.values())).graph

    def from_file(in_features: int, out_features: int) -> Graph:
        want = (graph.in_features, graph.out_features if graph.mode == "add" else graph.in_features)
        if (in_features, out_features if graph.mode == "add" else in_features) != want:
            raise ConfigError(f"graph file {spec!r} is a {graph.in_features} → {graph.out_features} adapter; choose "
                              "layers of that size with --target-modules", field="adapter")
        return graph

    from_file.__name__ = Path(spec).stem
    return from_file
