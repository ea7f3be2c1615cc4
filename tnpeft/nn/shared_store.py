"""Shared tensors on a model: each adapter whose graphs share tensors across layers keeps their
values once, in ``model.tnpeft_shared[adapter_name]`` (a :class:`~tnpeft.runtime.SharedValues`).

Being a submodule of the model, the values move with ``model.to(...)``, appear once in
``model.parameters()`` and the state dict, and are wrapped like any other parameter by DDP and
FSDP (at the level of the module that holds them). Every layer's :class:`GraphModule` reads
them through a reference, so they are saved once (``tnpeft_shared.<key>.<param>`` in the adapter
file) and counted once.
"""

from __future__ import annotations

from typing import Mapping, cast

import torch
from torch import nn

from tnpeft.graph import Graph, shared_nodes
from tnpeft.runtime import SharedValues
from tnpeft.storage.adapter_folder import SHARED_ATTR, SHARED_PREFIX

__all__ = ["SHARED_ATTR", "SHARED_PREFIX", "shared_values", "build_shared", "install_shared", "remove_shared",
           "activate_shared", "shared_state"]


def shared_values(model: nn.Module, adapter_name: str) -> SharedValues | None:
    """The shared tensors of adapter ``adapter_name`` on ``model`` (``None`` if it has none)."""
    store = _store(model)
    return cast(SharedValues, store[adapter_name]) if store is not None and adapter_name in store else None


def _store(model: nn.Module) -> nn.ModuleDict | None:
    return cast("nn.ModuleDict | None", model._modules.get(SHARED_ATTR))


def build_shared(graphs: Mapping[str, Graph], dtype: torch.dtype, device: torch.device,
                 rng: torch.Generator | None = None) -> SharedValues | None:
    """New values for the shared tensors the graphs use (``None`` when they share nothing); the
    graphs' declarations are checked to agree (:func:`tnpeft.graph.shared_nodes`)."""
    nodes = shared_nodes(graphs)
    return SharedValues(nodes, dtype=dtype, device=device, rng=rng) if nodes else None


def install_shared(model: nn.Module, adapter_name: str, values: SharedValues | None) -> None:
    """Make ``values`` the shared tensors of adapter ``adapter_name`` (inside a transaction)."""
    if values is None:
        return
    store = _store(model)
    if store is None:
        store = nn.ModuleDict()
        model.add_module(SHARED_ATTR, store)
    store[adapter_name] = values


def remove_shared(model: nn.Module, adapter_name: str | None = None) -> None:
    """Drop the shared tensors of one adapter (all of them with ``None``; inside a transaction)."""
    store = _store(model)
    if store is None:
        return
    if adapter_name is not None and adapter_name in store:
        del store[adapter_name]
    if adapter_name is None or len(store) == 0:
        del model._modules[SHARED_ATTR]


def activate_shared(model: nn.Module, names: list[str]) -> None:
    """Trainable shared tensors of the active adapters ``names`` train; every other one is frozen."""
    store = _store(model)
    for adapter, values in (store.items() if store is not None else ()):
        shared = cast(SharedValues, values)
        for key, node in shared.specs.items():
            shared.get_submodule(key).requires_grad_(adapter in names and node.trainable)


def shared_state(model: nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    """The shared values of an adapter as saved: ``{"tnpeft_shared.<key>.<param>": tensor}``."""
    values = shared_values(model, adapter_name)
    return {} if values is None else {SHARED_PREFIX + k: v for k, v in values.state_dict().items()}
