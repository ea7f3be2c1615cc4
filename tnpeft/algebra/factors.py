"""Two matrices from a graph: a linear additive graph's update ``s·ΔW`` as ``B A``, cut along its
cheapest bonds, and truncated SVDs of such factors; the :class:`Combination` record the algebra
returns. See :mod:`tnpeft.algebra` for the whole picture."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from tnpeft.contract import plan_for
from tnpeft.errors import GraphError, NonFiniteError, NotMergeableError
from tnpeft.graph.graph import Graph
from tnpeft.graph.nodes import Dense, Nonlinear
from tnpeft.runtime.module import GraphModule

#: graphs with more free nodes (holding neither open leg) than this are not searched for a cut
MAX_CUT_SEARCH = 12


@dataclass
class Combination:
    """The result of :func:`weighted_sum` or :func:`compress` for one layer.

    Attributes:
        module: the new adapter (a :class:`GraphModule` of a linear additive graph, scale 1).
        rank: the rank of its update (the product of the cut bonds; ``None`` when not known).
        exact: whether ``module``'s update equals the requested sum (up to rounding).
        error: the relative Frobenius error ``‖target − update‖ / ‖target‖`` (0 when exact and
            nothing was truncated; measured for ``"svd"`` and ``"linear"``).
        how: ``"direct-sum"``, ``"factors"``, ``"linear"`` or ``"svd"``.
    """

    module: GraphModule
    rank: int | None
    exact: bool
    error: float = 0.0
    how: str = ""
    notes: list[str] = field(default_factory=list)


def as_module(source: Any, what: str = "a part") -> GraphModule:
    """``source``, checked to be a :class:`GraphModule` holding values (a :class:`Graph` is structure
    only: the error says to pass ``GraphModule(graph)``)."""
    if isinstance(source, Graph):
        raise GraphError(f"{what} is a Graph, which holds no values; pass the GraphModule that holds them "
                         "(GraphModule(graph), or an adapted layer's layer.tn_adapters[name])")
    if not isinstance(source, GraphModule) or any(t.is_meta for t in source.state_dict().values()):
        raise GraphError(f"{what} must be a tnpeft GraphModule holding values, got "
                         f"{'one on the meta device' if isinstance(source, GraphModule) else type(source).__name__}")
    return source


def finite_result(c: Combination, what: str) -> Combination:
    """``c``, unless its values or update ``B A`` are not finite in its dtype, or its error is not."""
    module, error, top = c.module, c.error, 0.0
    bad = next((n.split(".")[0] for n, p in module.named_parameters() if not torch.isfinite(p).all()), None)
    big, dt = torch.finfo(module.param_dtype).max, str(module.param_dtype).removeprefix("torch.")
    if bad is None and math.isfinite(error):
        b, a = low_rank_factors(module)        # |ΔWᵢⱼ| ≤ ‖Bᵢ‖ ‖Aⱼ‖; multiplied out only above the dtype's range
        top = float(b.norm(dim=1).max() * a.norm(dim=0).max())
        if (top := float((b @ a).abs().max()) if top > big else top) <= big:
            return c
    where = (f"node {bad!r} holds NaN or infinite values in {dt}" if bad else "its error is not finite"
             if not math.isfinite(error) else f"its update reaches {top:.3g}, beyond {dt}'s largest value {big:.3g}")
    raise NonFiniteError(f"{what} is not finite (it overflows, or its inputs are not): {where}", node=bad)


def check_additive(module: GraphModule, what: str = "") -> None:
    """Raise :class:`NotMergeableError` unless ``module``'s graph is linear and additive."""
    g = module.graph
    label = what or f"graph {g.name or 'adapter'!r}"
    if not g.is_linear:
        bad = next(n.name for n in g.nodes.values() if isinstance(n, Nonlinear))
        raise NotMergeableError(f"{label} has nonlinear node {bad!r}: its update depends on the input, so it is not "
                                "a matrix that can be added, compressed or exported as LoRA")
    if g.mode != "add":
        raise NotMergeableError(f"{label} is input-mode (multiplicative, W' = W·D): it has no additive update of "
                                "its own; combine or export it through the layer's weight (merged)")


def module_values(module: GraphModule) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {n: module.tensor(n).detach().to(torch.float64) for n in module.graph.nodes}


def _contract(module: GraphModule, names: Sequence[str], output: Sequence[str],
              values: dict[str, torch.Tensor]) -> torch.Tensor:
    g = module.graph
    plan = plan_for([g.nodes[n].inds for n in names], tuple(output), g.size_dict, names=list(names),
                    key_extra=("factors",), optimize="greedy")
    return plan(*[values[n] for n in names])


def _cut(g: Graph) -> tuple[list[str], list[str], list[str]] | None:
    """``(out-side nodes, in-side nodes, cut indices)`` of the cheapest cut, or ``None``."""
    if g.shared_legs:
        return None
    holders: dict[str, list[str]] = {}
    for n in g.nodes.values():
        for i in n.inds:
            holders.setdefault(i, []).append(n.name)
    ins, outs = set(g.in_inds), set(g.out_inds)
    fixed: dict[str, int] = {}     # 0: out side, 1: in side
    for n in g.nodes.values():
        has_in, has_out = bool(ins & set(n.inds)), bool(outs & set(n.inds))
        if has_in and has_out:
            return None
        if has_in or has_out:
            fixed[n.name] = 1 if has_in else 0
    free = [n for n in g.nodes if n not in fixed]
    if len(free) > MAX_CUT_SEARCH:
        return None
    best: tuple[int, dict[str, int]] | None = None
    for bits in itertools.product((0, 1), repeat=len(free)):
        side = {**fixed, **dict(zip(free, bits))}
        cost = 1
        for i, hs in holders.items():
            if i in ins or i in outs:
                continue
            if len({side[h] for h in hs}) == 2:
                cost *= g.size_dict[i]
        if best is None or cost < best[0]:
            best = (cost, side)
    assert best is not None
    side = best[1]
    cut = [i for i, hs in holders.items() if i not in ins and i not in outs and len({side[h] for h in hs}) == 2]
    return [n for n in g.nodes if side[n] == 0], [n for n in g.nodes if side[n] == 1], cut


def cut_rank(g: Graph) -> int | None:
    """The rank of a linear graph's update as :func:`low_rank_factors` factors it (the product of
    the cheapest cut's bonds, at most ``min(in, out)``), from the structure alone; for an
    input-mode graph the rank its additive equivalent ``W (D − I)`` may reach (``in_features``);
    ``None`` for a nonlinear graph."""
    if not g.is_linear:
        return None
    full = min(g.in_features, g.out_features)
    if g.mode == "input":
        return full
    cut = _cut(g)
    return full if cut is None else min(full, math.prod(g.size_dict[i] for i in cut[2]))


def low_rank_factors(module: GraphModule, scaled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` in float64 with ``B @ A`` equal to the module's update (``scale · ΔW`` when
    ``scaled``), ``B`` of shape ``(out_features, r)`` and ``A`` of ``(r, in_features)``, from the
    cheapest cut of the graph (see the module docstring). Raises :class:`NotMergeableError` for a
    nonlinear or input-mode graph."""
    module = as_module(module)
    check_additive(module)
    g = module.graph
    s = g.scale if scaled else 1.0
    cut = _cut(g)
    if cut is None or (rank := math.prod(g.size_dict[i] for i in cut[2])) >= min(g.in_features, g.out_features):
        with torch.no_grad():
            w = module.dense(scaled=False).detach().to(torch.float64) * s

        def eye(n: int) -> torch.Tensor:
            return torch.eye(n, dtype=w.dtype, device=w.device)
        return (eye(g.out_features), w) if g.out_features <= g.in_features else (w, eye(g.in_features))
    out_side, in_side, bonds = cut
    values = module_values(module)
    with torch.no_grad():
        b = _contract(module, out_side, tuple(g.out_inds) + tuple(bonds), values).reshape(g.out_features, rank)
        a = _contract(module, in_side, tuple(bonds) + tuple(g.in_inds), values).reshape(rank, g.in_features)
    return b * s, a


def truncate_factors(b: torch.Tensor, a: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The best rank-``rank`` approximation of ``b @ a`` (Eckart–Young) as ``(B′, A′, error)``,
    computed from a QR of each factor and an SVD of the small core; ``error`` is the relative
    Frobenius error (0 for a zero product). The singular values are split evenly
    (``B′ = U √S``, ``A′ = √S Vᵀ``)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise GraphError(f"a compression rank must be a positive integer, got {rank!r}")
    b = b.to(torch.float64)
    a = a.to(torch.float64)
    qb, rb = torch.linalg.qr(b)
    qa, ra = torch.linalg.qr(a.T)
    core = rb @ ra.T
    if not (torch.isfinite(b).all() and torch.isfinite(a).all() and torch.isfinite(core).all()):
        raise NonFiniteError("the update holds NaN or infinite values (or overflows float64); it cannot be compressed")
    u, sv, vh = torch.linalg.svd(core)
    k = min(rank, sv.numel())
    top = float(sv.max()) if sv.numel() else 0.0      # relative to the largest: no overflow in the squares
    total = float((sv / top).square().sum()) if top > 0 else 0.0
    err = math.sqrt(max(float((sv[k:] / top).square().sum()), 0.0) / total) if total > 0 else 0.0
    root = sv[:k].sqrt()
    return (qb @ u[:, :k]) * root, root[:, None] * (vh[:k] @ qa.T), err


def module_like(graph: Graph, like: GraphModule, values: dict[str, torch.Tensor]) -> GraphModule:
    dtype = like.param_dtype
    p = next(iter(like.parameters()), None)
    module = GraphModule(graph, dtype=dtype, device=p.device if p is not None else None)
    with torch.no_grad():
        for name, v in values.items():
            module._modules[name].weight.copy_(v.to(dtype))
    return module


def lora_graph_module(b: torch.Tensor, a: torch.Tensor, like: GraphModule, name: str = "lora",
                      meta: dict[str, Any] | None = None) -> GraphModule:
    """A LoRA-shaped module (dense ``A[r, in]``, ``B[out, r]``, scale 1) holding ``B``, ``A`` —
    tagged as method ``lora`` with ``r = alpha``, so it saves, loads and exports as LoRA — in the
    dtype and on the device of ``like``."""
    r = a.shape[0]
    g = Graph([Dense("A", ("r", "in"), (r, a.shape[1]), init="zeros"),
               Dense("B", ("out", "r"), (b.shape[0], r), init="zeros")],
              scale=1.0, name=name, meta={"method": "lora", "hparams": {"r": r, "alpha": float(r)}, **(meta or {})})
    return module_like(g, like, {"A": a, "B": b})


def cut_rank_at(g: Graph, sizes: dict[str, int]) -> int | None:
    cut = _cut(g)
    return None if cut is None else min(math.prod(sizes.get(i, g.size_dict[i]) for i in cut[2]), g.in_features,
                                        g.out_features)
