"""Merging an adapter into a frozen weight, and taking it out again: the arithmetic, on tensors.

A layer computes ``y = x Wᵀ + b`` with ``W`` of shape ``(out, in)`` — or ``(in, out)`` for GPT-2's
``Conv1D`` (``fan_in_fan_out``). An additive adapter merges as ``W' = W + s·ΔW``; an input-mode
(multiplicative) adapter, ``y = W (D x)``, as ``W' = W D``; an output-mode one, ``y = P (W x + b)``,
as ``W' = P W`` and ``b' = P b`` (the bias stays when the graph leaves it out); a two-sided one
(an input-mode graph with a ``post`` map) as ``W' = P W D``. They come out again with ``Dᵀ`` (``Pᵀ``)
when the map is orthogonal by construction, element-wise for a diagonal map, with the inverse
otherwise.
"""

from __future__ import annotations

import torch

from tnpeft.runtime.module import GraphModule


def delta_weight(module: GraphModule, fan_in_fan_out: bool = False) -> torch.Tensor:
    """``scale · ΔW`` in the layer weight's layout (transposed for ``fan_in_fan_out``)."""
    d = module.dense(scaled=True)
    return d.T if fan_in_fan_out else d


def _map(module: GraphModule, like: torch.Tensor, inverse: bool) -> torch.Tensor:
    """The multiplicative map ``D`` (or ``D⁻¹``) of an input- or output-mode module."""
    d = module.dense(scaled=True).to(like.dtype)
    if not inverse:
        return d
    if module.graph.is_orthogonal:
        return d.T
    diag = torch.diagonal(d)
    if torch.equal(torch.diag(diag), d):      # a diagonal map (IA³, BOFT's scale): element-wise
        return torch.diag(1.0 / diag)
    inv: torch.Tensor = torch.linalg.inv(d)
    return inv


def _input_map(module: GraphModule, w: torch.Tensor, fan_in_fan_out: bool, inverse: bool) -> torch.Tensor:
    # y = W (D x): merged W' = W D, and W = W' D⁻¹
    d = _map(module, w, inverse)
    return d.T @ w if fan_in_fan_out else w @ d


def _output_map(module: GraphModule, w: torch.Tensor, fan_in_fan_out: bool, inverse: bool) -> torch.Tensor:
    # y = P (W x): merged W' = P W, and W = P⁻¹ W'
    p = _map(module, w, inverse)
    return w @ p.T if fan_in_fan_out else p @ w


def merged_weight(module: GraphModule, w: torch.Tensor, fan_in_fan_out: bool = False) -> torch.Tensor:
    """The weight with the adapter merged in (a new tensor; ``w`` is not changed)."""
    mode = module.graph.mode
    if mode == "input":
        w = _input_map(module, w, fan_in_fan_out, inverse=False)
        return w if module.post is None else _output_map(module.post, w, fan_in_fan_out, inverse=False)
    if mode == "output":
        return _output_map(module, w, fan_in_fan_out, inverse=False)
    return w + delta_weight(module, fan_in_fan_out).to(w.dtype)


def unmerged_weight(module: GraphModule, w: torch.Tensor, fan_in_fan_out: bool = False) -> torch.Tensor:
    """The weight with the merged adapter taken out again (a new tensor)."""
    mode = module.graph.mode
    if mode == "input":
        if module.post is not None:
            w = _output_map(module.post, w, fan_in_fan_out, inverse=True)
        return _input_map(module, w, fan_in_fan_out, inverse=True)
    if mode == "output":
        return _output_map(module, w, fan_in_fan_out, inverse=True)
    return w - delta_weight(module, fan_in_fan_out).to(w.dtype)


def _bias_map(module: GraphModule) -> GraphModule | None:
    out: GraphModule | None = module if module.graph.mode == "output" else module.post
    return out if out is not None and out.graph.bias else None


def merged_bias(module: GraphModule, b: torch.Tensor | None) -> torch.Tensor | None:
    """The bias with the adapter merged in: ``P b`` for an output map that includes the bias, else
    ``b`` itself (unchanged)."""
    p = _bias_map(module)
    return b if b is None or p is None else _map(p, b, inverse=False) @ b


def unmerged_bias(module: GraphModule, b: torch.Tensor | None) -> torch.Tensor | None:
    """The bias with the merged adapter taken out again (``P⁻¹ b``; ``b`` itself when unchanged)."""
    p = _bias_map(module)
    return b if b is None or p is None else _map(p, b, inverse=True) @ b
