"""The saved-adapter format, read without a model: ``adapter_config.json`` + ``adapter_model.safetensors``.

The config holds every adapted module's graph as JSON (so any topology, built-in or a user's,
loads without its builder code) and the checksum of the weights file. Reading parses data only —
JSON and safetensors, never pickle — and checks everything: a folder that passes
:func:`read_adapter` and :func:`split_adapter_state` fits its graphs exactly. Putting the values
into a model is :func:`tnpeft.load_adapter`'s job (floor ``nn``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.errors import AdapterFileError, TNPeftError
from tnpeft.fileio import read_json, read_safetensors
from tnpeft.graph.graph import Graph
from tnpeft.graph.module import GraphModule

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SAVED_PREFIX = "modules_to_save."
FORMAT = "tnpeft.adapter"
VERSION = 1

# parameter names of tnpeft 0.1 files that have been renamed since: (old suffix, new suffix)
_RENAMED = ((".generator", ".skew_factor"),)


def check_state(module: nn.Module, state: dict[str, torch.Tensor], where: str, finite: bool = True) -> None:
    """Raise :class:`AdapterFileError` unless ``state`` has exactly the module's keys, shapes and
    floating dtypes, and (with ``finite``) only finite values."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise AdapterFileError(f"{where}: missing tensors {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                               f"unexpected tensors {extra[:5]}{'…' if len(extra) > 5 else ''}")
    for k, v in own.items():
        got = state[k]
        if tuple(got.shape) != tuple(v.shape):
            raise AdapterFileError(f"{where}: tensor {k!r} has shape {tuple(got.shape)}, expected {tuple(v.shape)}")
        if not got.is_floating_point():
            raise AdapterFileError(f"{where}: tensor {k!r} has dtype {got.dtype}, expected a floating-point dtype")
        if finite and not torch.isfinite(got).all():
            raise AdapterFileError(f"{where}: tensor {k!r} holds NaN or infinite values")


def upgrade_state(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with parameter names written by older versions renamed to the module's names
    (e.g. a skew frame's ``generator`` → ``skew_factor``); other keys are kept as they are."""
    own = module.state_dict()
    out = {}
    for key, v in state.items():
        if key not in own:
            for old, new in _RENAMED:
                if key.endswith(old) and key[: -len(old)] + new in own and key[: -len(old)] + new not in state:
                    key = key[: -len(old)] + new
                    break
        out[key] = v
    return out


def read_adapter(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Graph], dict[str, torch.Tensor]]:
    """Parse and check a saved adapter without touching any model: (config, graphs, tensors)."""
    d = Path(directory)
    if not d.is_dir():
        raise AdapterFileError(f"adapter folder {str(d)!r} does not exist")
    cfg = read_json(d / CONFIG_NAME, "adapter config")
    where = str(d / CONFIG_NAME)
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        hint = " (it looks like a peft checkpoint: use tnpeft.import_peft)" if isinstance(cfg, dict) and "peft_type" in cfg else ""
        raise AdapterFileError(f"{where!r} is not a tnpeft adapter config: field 'format' must be {FORMAT!r}{hint}")
    if cfg.get("version") != VERSION:
        raise AdapterFileError(f"{where!r}: format version {cfg.get('version')!r} is not supported (expected {VERSION})")
    name = cfg.get("adapter_name", "default")
    if not isinstance(name, str) or not name or "." in name:
        raise AdapterFileError(f"{where!r}: field 'adapter_name' must be a non-empty name without dots, got {name!r}")
    conf = cfg.get("config")
    if conf is not None:
        if not isinstance(conf, dict):
            raise AdapterFileError(f"{where!r}: field 'config' must be an object or null, got {type(conf).__name__}")
        saved = conf.get("modules_to_save")
        if saved is not None and (not isinstance(saved, list) or not all(isinstance(x, str) and x for x in saved)):
            raise AdapterFileError(f"{where!r}: config field 'modules_to_save' must be a list of module names, "
                                   f"got {saved!r}")
    modules = cfg.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise AdapterFileError(f"{where!r}: field 'modules' must map module names to graphs")
    bad = next((p for p in modules if not p or any(not part.isidentifier() and not part.isdigit()
                                                   for part in p.split("."))), None)
    if bad is not None:
        raise AdapterFileError(f"{where!r}: module path {bad!r} is not a dotted module name")
    graphs: dict[str, Graph] = {}
    for path, gd in modules.items():
        try:
            graphs[path] = Graph.from_dict(gd)
        except TNPeftError as e:
            raise AdapterFileError(f"{where!r}: the graph of module {path!r} is invalid: {e}") from None
    checksum = cfg.get("weights_sha256")
    if not isinstance(checksum, str):
        raise AdapterFileError(f"{where!r}: field 'weights_sha256' is missing")
    tensors = read_safetensors(d / WEIGHTS_NAME, checksum)
    return cfg, graphs, tensors


def split_adapter_state(graphs: dict[str, Graph], tensors: dict[str, torch.Tensor], source: str,
                        finite: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """A saved adapter's tensors per module path (``modules_to_save`` entries left out), each set
    checked against its graph's keys, shapes and dtypes (and, with ``finite``, values) without
    allocating anything."""
    per: dict[str, dict[str, torch.Tensor]] = {p: {} for p in graphs}
    # longest module path first, so "a.b" never claims a key of "a.b.c"
    paths = sorted(graphs, key=len, reverse=True)
    for key, v in tensors.items():
        if key.startswith(SAVED_PREFIX):
            continue
        owner = next((p for p in paths if key.startswith(p + ".")), None)
        if owner is None:
            raise AdapterFileError(f"{source}: tensor {key!r} belongs to no adapted module of the config")
        per[owner][key[len(owner) + 1:]] = v
    for path, g in graphs.items():
        # shapes and keys checked on a meta-device module: nothing is allocated
        try:
            meta = GraphModule(g, device="meta")
        except (RuntimeError, TypeError, ValueError, OverflowError) as e:  # sizes torch cannot even describe
            raise AdapterFileError(f"{source}, module {path!r}: the graph cannot be built ({e})") from None
        per[path] = upgrade_state(meta, per[path])
        check_state(meta, per[path], f"{source}, module {path!r}", finite)
    return per


def read_adapter_modules(directory: str | os.PathLike, dtype: torch.dtype = torch.float64,
                         finite: bool = True) -> dict[str, GraphModule]:
    """The saved adapter's graph modules with their values (``dtype``, default float64), by module
    path — for working with a saved adapter without the model it was trained on (export, checks).
    ``finite=False`` reads NaN and infinite values too (for :func:`tnpeft.verify`, which reports them)."""
    _, graphs, tensors = read_adapter(directory)
    per = split_adapter_state(graphs, tensors, f"adapter {str(directory)!r}", finite)
    out = {}
    for path, g in graphs.items():
        module = GraphModule(g, dtype=dtype)
        module.load_state_dict(per[path])
        out[path] = module
    return out
