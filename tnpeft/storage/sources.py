"""Where graphs and their values come from: one resolver for every tool that takes "an adapter".

:func:`graph_modules` turns a built :class:`Graph`, a :class:`GraphModule`, a mapping of them, a
graph file or a saved adapter folder into ``{module path: GraphModule}``. Higher floors add the
kinds of source they know with :func:`register_source` — :mod:`tnpeft.nn` adds models with
injected adapters — so lower floors (export, checks) accept them without importing upward.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tnpeft.errors import AdapterFileError, ConfigError, TNPeftError
from tnpeft.fileio import read_json
from tnpeft.graph.graph import Graph
from tnpeft.runtime.module import GraphModule
from tnpeft.storage.adapter_folder import CONFIG_NAME, read_adapter_modules
from tnpeft.storage.graph_folder import load_graph

#: ``resolver(source, adapter_name) -> {path: GraphModule} | None`` (``None``: not mine)
SourceResolver = Callable[[Any, str], "dict[str, GraphModule] | None"]
_RESOLVERS: list[SourceResolver] = []


def register_source(resolver: SourceResolver) -> SourceResolver:
    """Teach :func:`graph_modules` a new kind of source (tried after the built-in kinds)."""
    _RESOLVERS.append(resolver)
    return resolver


def resolve_graph_module(source: Any) -> tuple[Graph, GraphModule]:
    """``(graph, module)`` of a :class:`GraphModule`, or of a :class:`Graph` with a new module of its
    default initialisation (a graph holds no values)."""
    if isinstance(source, Graph):
        return source, GraphModule(source)
    if isinstance(source, GraphModule):
        return source.graph, source
    raise ConfigError(f"expected a tnpeft Graph or GraphModule, got {type(source).__name__}", field="source")


def graph_modules(source: Any, adapter_name: str = "default", *, finite: bool = True) -> dict[str, GraphModule]:
    """The graph modules (structure and values) of ``source``, by module path (``""`` for a single
    graph): a GraphModule, a Graph (a new module with its default initialisation), a ``{path: Graph | GraphModule}`` mapping, a saved adapter folder
    (values read as float64), a graph folder or ``.json`` graph file (default values), or any source
    a higher floor registered (a model with injected adapters: adapter ``adapter_name``).

    Files are read as data (JSON and safetensors; no code runs) and checked; ``finite=False`` lets
    NaN and infinite values through, for tools that report them (:func:`tnpeft.verify`)."""
    if isinstance(source, (Graph, GraphModule)):
        return {"": resolve_graph_module(source)[1]}
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source), finite)
    if isinstance(source, Mapping):
        out: dict[str, GraphModule] = {}
        for path, g in source.items():
            if not isinstance(g, (Graph, GraphModule)):
                raise ConfigError(f"module {path!r}: expected a Graph or GraphModule, got {type(g).__name__}",
                                  field="source")
            out[str(path)] = resolve_graph_module(g)[1]
        return out
    for resolver in _RESOLVERS:
        found = resolver(source, adapter_name)
        if found is not None:
            return found
    raise ConfigError(f"cannot read an adapter from a {type(source).__name__}: expected a Graph, a GraphModule, a "
                      "mapping of them, a model with injected adapters, a saved adapter folder or a graph file",
                      field="source")


def _from_path(p: Path, finite: bool = True) -> dict[str, GraphModule]:
    if p.is_dir() and (p / CONFIG_NAME).exists():
        return read_adapter_modules(p, finite=finite)
    if p.is_dir() and (p / "graph.json").exists():
        return {"": load_graph(p, finite).module}
    if p.is_file() and p.suffix.lower() == ".json":
        data = read_json(p, "graph file")
        try:
            graph = Graph.from_dict(data)
        except AdapterFileError:
            raise
        except TNPeftError as e:  # a GraphError: say which file
            raise AdapterFileError(f"graph file {str(p)!r}: {e}") from None
        return {"": GraphModule(graph)}
    raise AdapterFileError(f"{str(p)!r} is neither a saved adapter folder (with {CONFIG_NAME}), a saved graph "
                           "folder (with graph.json), nor a graph .json file")
