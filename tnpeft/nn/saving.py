"""Saving an adapter of a model, and loading one into a model: ``adapter_config.json`` +
``adapter_model.safetensors`` (the format is read and checked by
:mod:`tnpeft.storage.adapter_folder`, without a model).

The config holds every adapted module's graph as JSON (so any topology, built-in or a user's,
loads without its builder code) and the checksum of the weights file. Loading reads data only —
JSON and safetensors, never pickle — checks everything and builds every new module before the
model is touched, and is all or nothing (:mod:`tnpeft.nn.transaction`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.errors import AdapterFileError, AdapterStateError
from tnpeft.fileio import TNPEFT_ADAPTER, atomic_write_pair, checkpoint_folder, sha256, tensors_to_bytes
from tnpeft.graph import Graph, count_parameters
from tnpeft.nn.layer import LINEAR_TYPES, TNLinear, layer_sizes
from tnpeft.nn.model import (
    adapter_config,
    build_modules,
    check_adapter_name,
    check_saved_paths,
    enclosing_adapter_layer,
    install_modules,
    saved_modules,
    set_adapter,
    tn_layers,
)
from tnpeft.nn.shared_store import shared_state
from tnpeft.nn.transaction import transaction
from tnpeft.params.unitary import FrameScope
from tnpeft.runtime import GraphModule
from tnpeft.storage import read_adapter, split_adapter_state
from tnpeft.storage.adapter_folder import (
    CONFIG_NAME,
    FORMAT,
    SAVED_PREFIX,
    VERSION,
    WEIGHTS_NAME,
    cast_state,
    split_shared_state,
)


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
    state.update(shared_state(model, adapter_name))     # shared tensors: once
    return graphs, state


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP / accelerate / ``torch.compile`` wrappers (``.module``, ``._orig_mod``)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def check_materialized(state: dict[str, torch.Tensor], adapter_name: str) -> None:
    """:class:`AdapterStateError` if a tensor of adapter ``adapter_name`` is on the meta device."""
    meta = next((k for k, v in state.items() if v.is_meta), None)
    if meta is not None:
        raise AdapterStateError(f"adapter {adapter_name!r}: tensor {meta!r} is on the meta device and holds no values "
                                "to write; materialize the model first (e.g. model.to_empty(device='cpu'), then load "
                                "or train its values)")


def _full(t: torch.Tensor) -> torch.Tensor:
    # FSDP2 shards parameters as DTensors: gather the full tensor (a collective: every rank calls it)
    full = getattr(t, "full_tensor", None)
    return (full() if callable(full) else t).detach().cpu()


def save_adapter(model: nn.Module, directory: str | os.PathLike[str], adapter_name: str = "default",
                 main_process_only: bool = True, overwrite: bool = False) -> Path:
    """Write adapter ``adapter_name`` to ``directory`` (created if needed) and return its path.

    Under ``torch.distributed`` every rank must call it (sharded FSDP parameters are gathered with
    a collective) and, with ``main_process_only`` (default), only rank 0 writes. DDP / accelerate
    wrappers are unwrapped, so the file's keys are those of the plain model.

    Both files are written to temporary names and renamed into place, weights first, config (which
    records their checksum) last; the previous weights are kept until the new config is in place, so
    an interrupted save leaves the previous adapter loadable (:func:`tnpeft.fileio.atomic_write_pair`).
    Saves to one folder wait for each other (a lock file in it), so the last one wins whole. A
    folder that holds a checkpoint of another kind (a peft adapter checkpoint, a model, a graph) is
    refused with a :class:`~tnpeft.errors.WriteError` unless ``overwrite``, which removes its files
    first (:func:`tnpeft.fileio.checkpoint_folder`).
    """
    model = unwrap_model(model)
    graphs, state = adapter_state(model, adapter_name)
    check_materialized(state, adapter_name)
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
        "config": adapter_config(model, adapter_name),
        "base_model": getattr(getattr(model, "config", None), "_name_or_path", None),
        "num_parameters": count_parameters(graphs),
        "weights_sha256": sha256(blob),
        "modules": {path: g.to_dict() for path, g in graphs.items()},
    }
    with checkpoint_folder(d, TNPEFT_ADAPTER, overwrite=overwrite):
        atomic_write_pair(d, WEIGHTS_NAME, blob, CONFIG_NAME, cfg)
    return d


def _saved_state(model: nn.Module, cfg: dict[str, Any], tensors: dict[str, torch.Tensor], source: str,
                 targets: set[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The values of the saved whole modules, checked and cast to the model's dtypes."""
    paths = list((cfg.get("config") or {}).get("modules_to_save") or [])
    check_saved_paths(model, paths, targets, AdapterFileError, where=f"{source}: ")
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
        out[path] = cast_state(module, state, f"{source}, saved module {path!r}")
    return out


def load_adapter(model: nn.Module, directory: str | os.PathLike[str], adapter_name: str | None = None,
                 is_trainable: bool = False) -> nn.Module:
    """Load a saved adapter into ``model`` and make it active.

    If the model has no adapter of that name, the saved graphs are injected into the same module
    paths (new modules follow the host layers' train/eval mode); if it has one (e.g. to resume
    training), the structures must be equal and the values are replaced — unless that adapter is
    merged into the weights: then loading is refused (unmerge first), because new values under a
    merged adapter would leave its old update in the weights. Every check — files, checksum, module
    paths, layer sizes, keys, shapes, dtypes, finite values in the dtype they are stored in — runs
    and every new module is built before anything changes; on any error the model is exactly as it
    was. ``is_trainable=False`` (peft's default) loads the adapter frozen, for inference.
    """
    cfg, graphs, tensors = read_adapter(directory)
    name = check_adapter_name(adapter_name) if adapter_name is not None else cfg.get("adapter_name", "default")
    source = f"adapter {str(directory)!r}"
    for path, g in graphs.items():
        sizes = linear_sizes_at(model, path, source)
        if not g.fits(*sizes):
            raise AdapterFileError(f"{source}: module {path!r} maps {sizes[0]} → {sizes[1]} features but the saved "
                                   f"adapter maps {g.in_features} → {g.out_features}")
    per = split_adapter_state(graphs, tensors, source)
    shared = split_shared_state(graphs, tensors, source)
    saved = _saved_state(model, cfg, tensors, source, set(graphs))
    existing = {p: lay for p, lay in tn_layers(model) if name in lay.tn_adapters}
    scope: FrameScope | None = None
    if existing:
        if set(existing) != set(graphs):
            raise AdapterFileError(f"{source}: the model's adapter {name!r} sits on {len(existing)} modules, the saved one "
                                   f"on {len(graphs)} others; load it under another adapter_name")
        for p, layer in existing.items():
            if not layer.tn_adapters[name].graph.same_values_layout(graphs[p]):
                raise AdapterFileError(f"{source}: module {p!r}: the saved graph differs from the model's adapter {name!r}")
            if name in layer.merged_adapters:
                raise AdapterStateError(f"adapter {name!r} is merged into the weights of {p!r}; unmerge it first "
                                        "(tnpeft.unmerge) or load under another adapter_name")
        modules = {p: layer.tn_adapters[name] for p, layer in existing.items()}
    else:
        scope, modules = build_modules(model, graphs, name)
    values = {p: cast_state(modules[p], per[p], f"{source}, module {p!r}") for p in graphs}
    store = next((m.shared for m in modules.values() if m.shared is not None), None)
    shared = cast_state(store, shared, f"{source}, shared tensors") if store is not None else {}
    record = cfg.get("config") or {"method": None, "loaded_from": str(directory)}
    return put_adapter(model, name, scope, modules, values, saved, record if not existing else None, is_trainable,
                       shared)


def put_adapter(model: nn.Module, name: str, scope: FrameScope | None, modules: dict[str, GraphModule],
                values: dict[str, dict[str, torch.Tensor]], saved: dict[str, dict[str, torch.Tensor]],
                record: dict[str, Any] | None, is_trainable: bool,
                shared: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The one change of a load, all or nothing: install new ``modules`` (when ``record`` is given),
    copy checked ``values`` into them, ``shared`` into the tensors they share and ``saved`` into
    whole modules, make adapter ``name`` active, and freeze it unless ``is_trainable``."""
    store = next((m.shared for m in modules.values() if m.shared is not None), None)
    with transaction(model) as tx:
        if record is not None:
            install_modules(model, name, scope or FrameScope(), modules, record)
        if store is not None and shared:
            for t in store.state_dict().values():
                tx.backup(t)
            store.load_state_dict(shared)
        for path, state in values.items():
            if record is None:                      # values replaced in an existing adapter
                for t in modules[path].state_dict().values():
                    tx.backup(t)
            modules[path].load_state_dict(state)
        for path, state in saved.items():
            module = model.get_submodule(path)
            for t in module.state_dict().values():
                tx.backup(t)
            module.load_state_dict(state)
        set_adapter(model, name)
        if not is_trainable:
            for module in modules.values():
                module.requires_grad_(False)
            if store is not None:
                store.requires_grad_(False)
    return model


def linear_sizes_at(model: nn.Module, path: str, source: str) -> tuple[int, int]:
    """``(in, out)`` of the linear layer at ``path``, or :class:`AdapterFileError` naming ``source``
    (also for a path inside an adapted layer: its base layer or an adapter's own modules)."""
    inside = enclosing_adapter_layer(model, path)
    if inside is not None:
        raise AdapterFileError(f"{source}: module path {path!r} lies inside the adapted layer {inside!r} (its base "
                               "layer or an adapter's own modules); adapters go on the layer itself")
    try:
        layer = model.get_submodule(path)
    except AttributeError:
        raise AdapterFileError(f"{source}: the model has no module {path!r}; was it saved from another model?") from None
    if isinstance(layer, TNLinear):
        return layer.in_features, layer.out_features
    if isinstance(layer, LINEAR_TYPES):
        return layer_sizes(layer)
    raise AdapterFileError(f"{source}: module {path!r} is a {type(layer).__name__}, not a linear layer")
