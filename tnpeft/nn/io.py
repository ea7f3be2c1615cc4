"""Saving and loading adapters: ``adapter_config.json`` + ``adapter_model.safetensors``.

The config holds every adapted module's graph as JSON (so any topology, built-in or a user's,
loads without its builder code) and the checksum of the weights file. Loading reads data only —
JSON and safetensors, never pickle — and checks everything before the model is touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.errors import AdapterFileError, AdapterStateError, TNPeftError
from tnpeft.fileio import atomic_write_pair, read_json, read_safetensors, sha256, tensors_to_bytes
from tnpeft.graph import Graph, GraphModule
from tnpeft.graph.io import check_state
from tnpeft.nn.layer import LINEAR_TYPES, TNLinear, layer_sizes
from tnpeft.nn.model import _CONFIGS_ATTR, attach_graphs, saved_modules, set_adapter, tn_layers

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SAVED_PREFIX = "modules_to_save."
FORMAT = "tnpeft.adapter"
VERSION = 1


def adapter_state(model: nn.Module, adapter_name: str = "default") -> tuple[dict[str, Graph], dict[str, torch.Tensor]]:
    """The graphs and values of one adapter: ``{module path: graph}``, ``{"<path>.<node>.<param>": tensor}``."""
    graphs: dict[str, Graph] = {}
    state: dict[str, torch.Tensor] = {}
    for path, layer in tn_layers(model):
        if adapter_name in layer.tn_adapters:
            module = layer.tn_adapters[adapter_name]
            graphs[path] = module.graph
            for k, v in module.state_dict().items():
                state[f"{path}.{k}"] = v
    if not graphs:
        raise AdapterStateError(f"the model has no adapter named {adapter_name!r}")
    for path in saved_modules(model, adapter_name):
        for k, v in model.get_submodule(path).state_dict().items():
            state[f"{SAVED_PREFIX}{path}.{k}"] = v
    return graphs, state


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP / accelerate / ``torch.compile`` wrappers (``.module``, ``._orig_mod``)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _full(t: torch.Tensor) -> torch.Tensor:
    # FSDP2 shards parameters as DTensors: gather the full tensor (a collective: every rank calls it)
    full = getattr(t, "full_tensor", None)
    return (full() if callable(full) else t).detach().cpu()


def save_adapter(model: nn.Module, directory: str | os.PathLike, adapter_name: str = "default",
                 main_process_only: bool = True) -> Path:
    """Write adapter ``adapter_name`` to ``directory`` (created if needed) and return its path.

    Under ``torch.distributed`` every rank must call it (sharded FSDP parameters are gathered with
    a collective) and, with ``main_process_only`` (default), only rank 0 writes. DDP / accelerate
    wrappers are unwrapped, so the file's keys are those of the plain model.

    Both files are written to temporary names and renamed into place, weights first, config (which
    records their checksum) last; the previous weights are kept until the new config is in place, so
    an interrupted save leaves the previous adapter loadable (:func:`tnpeft.fileio.atomic_write_pair`).
    """
    model = unwrap_model(model)
    graphs, state = adapter_state(model, adapter_name)
    state = {k: _full(v) for k, v in state.items()}
    d = Path(directory)
    if main_process_only and torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_rank() != 0:
        return d
    blob = tensors_to_bytes(state, metadata={"format": "pt", "tnpeft_adapter": adapter_name})
    cfg = {
        "format": FORMAT,
        "version": VERSION,
        "adapter_name": adapter_name,
        "config": getattr(model, _CONFIGS_ATTR, {}).get(adapter_name),
        "base_model": getattr(getattr(model, "config", None), "_name_or_path", None),
        "num_parameters": sum(g.num_parameters() for g in graphs.values()),
        "weights_sha256": sha256(blob),
        "modules": {path: g.to_dict() for path, g in graphs.items()},
    }
    atomic_write_pair(d, WEIGHTS_NAME, blob, CONFIG_NAME, cfg)
    return d


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


def split_adapter_state(graphs: dict[str, Graph], tensors: dict[str, torch.Tensor], source: str) -> dict[str, dict[str, torch.Tensor]]:
    """A saved adapter's tensors per module path (``modules_to_save`` entries left out), each set
    checked against its graph's keys, shapes and dtypes without allocating anything."""
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
        check_state(meta, per[path], f"{source}, module {path!r}")
    return per


def _saved_state(model: nn.Module, cfg: dict, tensors: dict[str, torch.Tensor], source: str) -> dict[str, dict]:
    paths = list((cfg.get("config") or {}).get("modules_to_save") or [])
    out: dict[str, dict[str, torch.Tensor]] = {p: {} for p in paths}
    for key, v in tensors.items():
        if not key.startswith(SAVED_PREFIX):
            continue
        rest = key[len(SAVED_PREFIX):]
        owner = next((p for p in sorted(paths, key=len, reverse=True) if rest.startswith(p + ".")), None)
        if owner is None:
            raise AdapterFileError(f"{source}: tensor {key!r} belongs to no module listed in modules_to_save")
        out[owner][rest[len(owner) + 1:]] = v
    for path, state in out.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise AdapterFileError(f"{source}: the model has no module {path!r} (listed in modules_to_save)") from None
        check_state(module, state, f"{source}, saved module {path!r}")
    return out


def load_adapter(model: nn.Module, directory: str | os.PathLike, adapter_name: str | None = None,
                 is_trainable: bool = False) -> nn.Module:
    """Load a saved adapter into ``model`` and make it active.

    If the model has no adapter of that name, the saved graphs are injected into the same module
    paths; if it has one (e.g. to resume training), the structures must be equal and the values
    are replaced. Every check — files, checksum, module paths, layer sizes, keys, shapes — runs
    before anything changes; on error the model is untouched. ``is_trainable=False`` (peft's
    default) loads the adapter frozen, for inference.
    """
    cfg, graphs, tensors = read_adapter(directory)
    name = adapter_name or cfg.get("adapter_name") or "default"
    source = f"adapter {str(directory)!r}"
    for path, g in graphs.items():
        sizes = linear_sizes_at(model, path, source)
        if (sizes[0], sizes[0] if g.mode == "input" else sizes[1]) != (g.in_features, g.out_features):
            raise AdapterFileError(f"{source}: module {path!r} maps {sizes[0]} → {sizes[1]} features but the saved "
                                   f"adapter maps {g.in_features} → {g.out_features}")
    per = split_adapter_state(graphs, tensors, source)
    saved = _saved_state(model, cfg, tensors, source)
    existing = {p: lay for p, lay in tn_layers(model) if name in lay.tn_adapters}
    if existing:
        if set(existing) != set(graphs):
            raise AdapterFileError(f"{source}: the model's adapter {name!r} sits on {len(existing)} modules, the saved one "
                                   f"on {len(graphs)} others; load it under another adapter_name")
        for p, layer in existing.items():
            if not layer.tn_adapters[name].graph.same_values_layout(graphs[p]):
                raise AdapterFileError(f"{source}: module {p!r}: the saved graph differs from the model's adapter {name!r}")
    else:
        attach_graphs(model, graphs, name, cfg.get("config") or {"adapter": "loaded"})
    for path, state in saved.items():
        model.get_submodule(path).load_state_dict(state)
    return fill_and_activate(model, name, per, is_trainable)


def linear_sizes_at(model: nn.Module, path: str, source: str) -> tuple[int, int]:
    """``(in, out)`` of the linear layer at ``path``, or :class:`AdapterFileError` naming ``source``."""
    try:
        layer = model.get_submodule(path)
    except AttributeError:
        raise AdapterFileError(f"{source}: the model has no module {path!r}; was it saved from another model?") from None
    if isinstance(layer, TNLinear):
        return layer.in_features, layer.out_features
    if isinstance(layer, LINEAR_TYPES):
        return layer_sizes(layer)
    raise AdapterFileError(f"{source}: module {path!r} is a {type(layer).__name__}, not a linear layer")


def fill_and_activate(model: nn.Module, name: str, values: dict[str, dict[str, torch.Tensor]],
                      is_trainable: bool) -> nn.Module:
    """Copy checked values into adapter ``name`` per module path, make it active, and freeze it
    unless ``is_trainable``."""
    for path, layer in tn_layers(model):
        if path in values:
            layer.tn_adapters[name].load_state_dict(values[path])
    set_adapter(model, name)
    if not is_trainable:
        for _, layer in tn_layers(model):
            if name in layer.tn_adapters:
                layer.tn_adapters[name].requires_grad_(False)
    return model
