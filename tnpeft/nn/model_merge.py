"""Merging adapters into the base weights and out again, unloading, and deleting adapters — each
all or nothing (:mod:`tnpeft.nn.transaction`): every name and every adapter's mergeability is
checked first, each new weight is computed before it is written, and on any error every weight,
flag and record is restored exactly (the weights a call changes are copied first, so a merge
briefly needs their memory once more)."""

from __future__ import annotations

from typing import cast

from torch import nn

from tnpeft.errors import AdapterStateError
from tnpeft.nn.layer import TNLinear
from tnpeft.nn.model import activate, adapter_names, set_submodule, tn_layers
from tnpeft.nn.transaction import CONFIGS_ATTR, SCOPE_ATTR, transaction


def _check_names(model: nn.Module, names: str | list[str] | None) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    known = adapter_names(model)
    for n in names:
        if n not in known:
            raise AdapterStateError(f"no adapter named {n!r} on this model; it has {known}")
    return list(names)


def check_untied(model: nn.Module, paths: list[str]) -> None:
    """Refuse to merge into the base weight of a layer in ``paths`` that another module shares (a
    language model's ``lm_head`` tied to its input embeddings): merging would change both."""
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    for path in paths:
        w = cast(TNLinear, model.get_submodule(path)).base_layer.weight
        others = [n for n in owners.get(id(w), []) if not n.startswith(path + ".")]
        if others:
            raise AdapterStateError(
                f"module {path!r}: its weight is tied to {others[0]!r} (shared tensors, e.g. a language model's "
                "lm_head and its input embeddings); merging an adapter into it would change that module too. Keep "
                "the adapter unmerged, or untie the weights first (give the layer its own copy of the weight)")


def merge(model: nn.Module, adapter_names: str | list[str] | None = None, safe_merge: bool = False) -> nn.Module:
    """Add the active (or named) adapters into the base weights; their forward then costs nothing.
    A name the model does not have raises :class:`AdapterStateError`; nothing is merged unless
    everything can be (``safe_merge`` also refuses weights that would hold NaN or inf); a layer whose
    weight another module shares (a tied ``lm_head``) is refused (:func:`check_untied`)."""
    names = _check_names(model, adapter_names)
    layers = list(tn_layers(model))
    plans = [(layer, layer.merge_order([n for n in names if n in layer.tn_adapters] if names is not None else None))
             for _, layer in layers]                                       # every check before any write
    check_untied(model, [path for (path, _), (_, todo) in zip(layers, plans) if todo])
    with transaction(model) as tx:
        for layer, todo in plans:
            if todo:
                tx.backup(layer.base_layer.weight)
                layer.merge(todo, safe_merge=safe_merge)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Subtract every merged adapter from the base weights again."""
    with transaction(model) as tx:
        for _, layer in tn_layers(model):
            if layer.merged_adapters:
                tx.backup(layer.base_layer.weight)
                layer.unmerge()
    return model


def unload(model: nn.Module, merge_first: bool = False) -> nn.Module:
    """Replace every :class:`TNLinear` by its base layer (after merging the active adapters if
    ``merge_first``, else unmerging every merged one) and return the plain model.
    ``merge_and_unload`` is ``unload(model, True)``."""
    layers = list(tn_layers(model))
    if merge_first:
        for _, layer in layers:
            layer.merge_order()                                              # every check before any write
        check_untied(model, [path for path, layer in layers if layer.active_adapters])
    with transaction(model) as tx:
        for name, layer in layers:
            tx.backup(layer.base_layer.weight)
            if merge_first:
                layer.merge()
            else:
                layer.unmerge()
            set_submodule(model, name, layer.base_layer)
        for attr in (CONFIGS_ATTR, SCOPE_ATTR):
            if hasattr(model, attr):
                delattr(model, attr)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge the active adapters into the base weights and remove every adapter layer."""
    return unload(model, merge_first=True)


def delete_adapter(model: nn.Module, adapter_name: str) -> nn.Module:
    """Remove adapter ``adapter_name`` from every layer (unmerging it first where it is merged) and
    its record; the other adapters keep their state. Layers left without adapters stay wrapped
    (they compute their base output). Unknown names raise :class:`AdapterStateError`."""
    _check_names(model, [adapter_name])
    remaining: list[str] = []            # the active adapters, in the order they run
    for _, layer in tn_layers(model):
        remaining += [n for n in layer.active_adapters if n != adapter_name and n not in remaining]
    with transaction(model) as tx:
        for _, layer in tn_layers(model):
            if adapter_name in layer.tn_adapters:
                if adapter_name in layer.merged_adapters:
                    tx.backup(layer.base_layer.weight)
                layer.delete_adapter(adapter_name)
        getattr(model, CONFIGS_ATTR, {}).pop(adapter_name, None)
        activate(model, remaining)
    return model
