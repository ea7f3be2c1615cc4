"""Snapshots of everything a failed call must leave as it was, shared by the reliability tests."""

from __future__ import annotations

import copy

import torch

from tnpeft.nn import tn_layers
from tnpeft.nn.transaction import CONFIGS_ATTR, SCOPE_ATTR


def snapshot(model: torch.nn.Module) -> dict:
    """Everything a failed call must leave as it was."""
    return {
        "modules": [(n, type(m).__name__, id(m), m.training) for n, m in model.named_modules()],
        "params": [(n, id(p), p.requires_grad, p.detach().clone()) for n, p in
                   model.named_parameters(remove_duplicate=False)],
        "buffers": [(n, id(b), b.clone()) for n, b in model.named_buffers(remove_duplicate=False)],
        "layers": [(n, list(m.tn_adapters), list(m.active_adapters), list(m.merged_adapters), m.disabled)
                   for n, m in tn_layers(model)],
        "configs": copy.deepcopy(getattr(model, CONFIGS_ATTR, None)),
        "scope": id(getattr(model, SCOPE_ATTR, None)),
    }


def same_snapshot(a: dict, b: dict) -> bool:
    def eq(x, y):
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, (list, tuple)):
            return type(x) is type(y) and len(x) == len(y) and all(eq(p, q) for p, q in zip(x, y))
        return x == y
    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)
