"""Merging an adapter into a frozen weight, and taking it out again: the arithmetic, on tensors.

A layer computes ``y = x Wᵀ`` with ``W`` of shape ``(out, in)`` — or ``(in, out)`` for GPT-2's
``Conv1D`` (``fan_in_fan_out``). An additive adapter merges as ``W' = W + s·ΔW``; an input-mode
(multiplicative) adapter, ``y = W (D x)``, as ``W' = W D`` and comes out again with ``Dᵀ`` when
its graph is orthogonal by construction, with ``D⁻¹`` otherwise.
"""

from __future__ import annotations

import torch

from tnpeft.runtime.module import GraphModule


def delta_weight(module: GraphModule, fan_in_fan_out: bool = False) -> torch.Tensor:
    """``scale · ΔW`` in the layer weight's layout (transposed for ``fan_in_fan_out``)."""
    d = module.dense(scaled=True)
    return d.T if fan_in_fan_out else d


def _input_map(module: GraphModule, w: torch.Tensor, fan_in_fan_out: bool, inverse: bool) -> torch.Tensor:
    # y = W (D x): merged W' = W D, and W = W' D⁻¹ (Dᵀ when D is orthogonal by construction)
    d = module.dense(scaled=True).to(w.dtype)
    if inverse:
        d = d.T if module.graph.is_orthogonal else torch.linalg.inv(d)
    return d.T @ w if fan_in_fan_out else w @ d


def merged_weight(module: GraphModule, w: torch.Tensor, fan_in_fan_out: bool = False) -> torch.Tensor:
    """The weight with the adapter merged in (a new tensor; ``w`` is not changed)."""
    if module.graph.mode == "input":
        return _input_map(module, w, fan_in_fan_out, inverse=False)
    return w + delta_weight(module, fan_in_fan_out).to(w.dtype)


def unmerged_weight(module: GraphModule, w: torch.Tensor, fan_in_fan_out: bool = False) -> torch.Tensor:
    """The weight with the merged adapter taken out again (a new tensor)."""
    if module.graph.mode == "input":
        return _input_map(module, w, fan_in_fan_out, inverse=True)
    return w - delta_weight(module, fan_in_fan_out).to(w.dtype)
