"""Graph algebra on adapters with values: two matrices from a graph, weighted sums, compression.

A linear additive graph's update ``s·ΔW`` is a fixed ``out × in`` matrix. Three operations work on
any such graph, built-in or a user's, without forming ``ΔW`` unless they must:

* :func:`low_rank_factors` — ``s·ΔW = B A`` exactly, with ``B`` of shape ``out × r`` and ``A`` of
  ``r × in``. The graph is cut in two along the cheapest set of bond indices that separates the
  nodes holding the input leg(s) from those holding the output leg(s); each half is contracted on
  its own, so ``r`` is the product of the cut bonds' sizes (Quantum-PEFT: ``B = U Λ s``,
  ``A = Vᵀ``; AdaLoRA: ``B = P Λ s``, ``A = Q``; an MPO: its rank bonds). A graph that cannot be
  cut below ``min(out, in)`` (a single dense node, pass-through legs) gives ``ΔW`` itself and an
  identity at rank ``min(out, in)``.
* :func:`weighted_sum` — ``Σ wᵢ sᵢ ΔWᵢ`` as *one* graph with values. ``"cat"`` is exact: graphs of
  one topology whose nodes are all joined by bond indices are summed by the direct sum of their
  bonds (each bond's size is the sum of the parts' sizes, each node block-diagonal in its bonds —
  the topology is kept, e.g. two MPOs give an MPO); any other mix is summed as the concatenation of
  the parts' :func:`low_rank_factors` (a LoRA-shaped graph of rank ``Σ rᵢ``). ``"linear"`` (graphs
  of one topology and equal sizes) is peft's "linear" combination: each part's factor ``wᵢ sᵢ`` is
  spread evenly over its ``k`` nodes (``|wᵢ sᵢ|^{1/k}`` on each, the sign on the first) and the
  nodes are summed — the size of one part, exact for one part only (the cross terms between parts
  remain); its error against the exact sum is reported.
  ``"svd"`` is the exact sum compressed by :func:`compress`.
* :func:`compress` — a truncated SVD of the update at a given rank, from the factors (a QR of each,
  an SVD of an ``r × r`` core), with the relative Frobenius error ``‖s·ΔW − B′A′‖ / ‖s·ΔW‖``.

The results are :class:`Combination` records holding a new :class:`GraphModule` (its graph has
dense and diagonal nodes only, scale 1: weights and scales are folded into the values).
Nonlinear graphs (QWTHN) and input-mode graphs (OFT, ``W' = W R``) have no update to add and are
refused with a :class:`~tnpeft.errors.NotMergeableError` naming the node (or the graph's mode).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from tnpeft.contract import plan_for
from tnpeft.errors import GraphError, NotMergeableError
from tnpeft.graph.graph import Graph
from tnpeft.graph.nodes import Dense, Diagonal, Node, Nonlinear
from tnpeft.runtime.module import GraphModule

#: graphs with more free nodes (holding neither open leg) than this are not searched for a cut
MAX_CUT_SEARCH = 12
COMBINATION_TYPES = ("cat", "svd", "linear")


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


def _values(module: GraphModule) -> dict[str, torch.Tensor]:
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
    check_additive(module)
    g = module.graph
    s = g.scale if scaled else 1.0
    cut = _cut(g)
    rank = math.prod(g.size_dict[i] for i in cut[2]) if cut is not None else None
    if cut is None or rank >= min(g.in_features, g.out_features):
        with torch.no_grad():
            w = module.dense(scaled=False).detach().to(torch.float64) * s
        eye = lambda n: torch.eye(n, dtype=w.dtype, device=w.device)  # noqa: E731
        return (eye(g.out_features), w) if g.out_features <= g.in_features else (w, eye(g.in_features))
    out_side, in_side, bonds = cut
    values = _values(module)
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
    u, sv, vh = torch.linalg.svd(rb @ ra.T)
    k = min(rank, sv.numel())
    total = float(sv.square().sum())
    err = math.sqrt(max(float(sv[k:].square().sum()), 0.0) / total) if total > 0 else 0.0
    root = sv[:k].sqrt()
    return (qb @ u[:, :k]) * root, root[:, None] * (vh[:k] @ qa.T), err


def _module_like(graph: Graph, like: GraphModule, values: dict[str, torch.Tensor]) -> GraphModule:
    dtype = like.param_dtype
    p = next(iter(like.parameters()), None)
    module = GraphModule(graph, dtype=dtype, device=p.device if p is not None else None)
    with torch.no_grad():
        for name, v in values.items():
            module._modules[name].weight.copy_(v.to(dtype))
    return module


def lora_graph_module(b: torch.Tensor, a: torch.Tensor, like: GraphModule, name: str = "lora",
                      meta: dict | None = None) -> GraphModule:
    """A LoRA-shaped module (dense ``A[r, in]``, ``B[out, r]``, scale 1) holding ``B``, ``A`` —
    tagged as method ``lora`` with ``r = alpha``, so it saves, loads and exports as LoRA — in the
    dtype and on the device of ``like``."""
    r = a.shape[0]
    g = Graph([Dense("A", ("r", "in"), (r, a.shape[1]), init="zeros"),
               Dense("B", ("out", "r"), (b.shape[0], r), init="zeros")],
              scale=1.0, name=name, meta={"method": "lora", "hparams": {"r": r, "alpha": float(r)}, **(meta or {})})
    return _module_like(g, like, {"A": a, "B": b})


def _same_topology(graphs: Sequence[Graph], equal_sizes: bool) -> bool:
    g0 = graphs[0]
    for g in graphs[1:]:
        if list(g.nodes) != list(g0.nodes) or (g.in_inds, g.out_inds) != (g0.in_inds, g0.out_inds):
            return False
        for k, n in g.nodes.items():
            m = g0.nodes[k]
            if n.inds != m.inds or isinstance(n, Diagonal) != isinstance(m, Diagonal):
                return False
            if equal_sizes and n.sizes != m.sizes:
                return False
    return True


def _bond_connected(g: Graph) -> bool:
    """Every node holds a bond index and the bonds join all nodes: the direct sum is then exact."""
    legs = set(g.in_inds) | set(g.out_inds)
    if g.shared_legs:
        return False
    bonds = {n.name: [i for i in n.inds if i not in legs] for n in g.nodes.values()}
    if not all(bonds.values()):
        return False
    names = list(g.nodes)
    seen, todo = {names[0]}, [names[0]]
    while todo:
        cur = todo.pop()
        for other in names:
            if other not in seen and set(bonds[cur]) & set(bonds[other]):
                seen.add(other)
                todo.append(other)
    return len(seen) == len(names)


def _result_node(n: Node, sizes: tuple[int, ...]) -> Node:
    # the values are the parts' (shared tensors and fixed nodes materialized per layer); frozen stays frozen
    if isinstance(n, Diagonal):
        return Diagonal(n.name, n.inds, sizes, init="zeros", trainable=n.trainable)
    return Dense(n.name, n.inds, sizes, init="zeros", trainable=n.trainable)


def _direct_sum(modules: Sequence[GraphModule], coeffs: Sequence[float]) -> GraphModule:
    g0 = modules[0].graph
    legs = set(g0.in_inds) | set(g0.out_inds)
    bonds = sorted({i for n in g0.nodes.values() for i in n.inds if i not in legs})
    sizes = {i: sum(m.graph.size_dict[i] for m in modules) for i in bonds}
    offsets = [{i: sum(m.graph.size_dict[i] for m in modules[:t]) for i in bonds} for t in range(len(modules))]
    weighted = next(iter(g0.nodes))        # each part's weight and scale go on its first node
    nodes, values = [], {}
    parts = [_values(m) for m in modules]
    for name, n in g0.nodes.items():
        full = tuple(sizes.get(i, s) for i, s in zip(n.inds, n.sizes))
        nodes.append(_result_node(n, full))
        t_full = torch.zeros(full, dtype=torch.float64)
        for t, m in enumerate(modules):
            v = parts[t][name] * (coeffs[t] * m.graph.scale if name == weighted else 1.0)
            idx = tuple(slice(offsets[t][i], offsets[t][i] + m.graph.size_dict[i]) if i in sizes else slice(None)
                        for i in n.inds)
            t_full[idx] = v.cpu()
        values[name] = t_full
    rank_bonds = _cut_rank(g0, sizes)
    graph = Graph(nodes, in_index=g0.in_index, out_index=g0.out_index, scale=1.0, name=f"sum:{g0.name or 'graph'}",
                  meta={"combination": "cat"})
    return _module_like(graph, modules[0], values), rank_bonds


def _cut_rank(g: Graph, sizes: dict[str, int]) -> int | None:
    cut = _cut(g)
    if cut is None:
        return None
    return min(math.prod(sizes.get(i, g.size_dict[i]) for i in cut[2]), g.in_features, g.out_features)


def _target(modules: Sequence[GraphModule], coeffs: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact sum as concatenated factors ``(B, A)``."""
    bs, as_ = [], []
    for m, c in zip(modules, coeffs):
        b, a = low_rank_factors(m)
        bs.append(b * c)
        as_.append(a)
    return torch.cat(bs, 1), torch.cat(as_, 0)


def _check_terms(modules: Sequence[GraphModule], weights: Sequence[float]) -> list[float]:
    if not modules:
        raise GraphError("a weighted sum needs at least one adapter")
    if len(weights) != len(modules):
        raise GraphError(f"{len(modules)} adapters but {len(weights)} weights; give one weight per adapter")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise GraphError(f"weights must be finite numbers, got {w!r}")
        out.append(float(w))
    shape = (modules[0].graph.in_features, modules[0].graph.out_features)
    for m in modules:
        check_additive(m)
        if (m.graph.in_features, m.graph.out_features) != shape:
            raise GraphError(f"graph {m.graph.name or 'adapter'!r} maps {m.graph.in_features} → "
                             f"{m.graph.out_features}, another {shape[0]} → {shape[1]}; only updates of one shape add")
    return out


def weighted_sum(modules: Sequence[GraphModule], weights: Sequence[float], combination_type: str = "cat",
                 rank: int | None = None) -> Combination:
    """``Σ wᵢ · sᵢ ΔWᵢ`` of linear additive adapters as one new module (see the module docstring).

    Args:
        modules: the parts (each a :class:`GraphModule`; ``GraphModule(graph)`` for a lone graph).
        weights: one finite number per part; negative weights subtract (task arithmetic).
        combination_type: ``"cat"`` (exact), ``"svd"`` (the exact sum truncated to ``rank``) or
            ``"linear"`` (node-wise sums, peft's "linear"; parts of one topology and equal sizes).
        rank: for ``"svd"``, the rank to keep (default: the largest rank among the parts).
    """
    if combination_type not in COMBINATION_TYPES:
        raise GraphError(f"combination_type must be one of {list(COMBINATION_TYPES)}, got {combination_type!r}")
    coeffs = _check_terms(modules, weights)
    graphs = [m.graph for m in modules]
    if combination_type == "cat":
        if _same_topology(graphs, equal_sizes=False) and _bond_connected(graphs[0]):
            module, r = _direct_sum(modules, coeffs)
            return Combination(module, r, True, 0.0, "direct-sum")
        b, a = _target(modules, coeffs)
        return Combination(lora_graph_module(b, a, modules[0], name="sum", meta={"combination": "cat"}),
                           a.shape[0], True, 0.0, "factors")
    if combination_type == "svd":
        b, a = _target(modules, coeffs)
        if rank is None:
            rank = max(low_rank_factors(m)[1].shape[0] for m in modules)
        b2, a2, err = truncate_factors(b, a, rank)
        mod = lora_graph_module(b2, a2, modules[0], name="sum", meta={"combination": "svd"})
        return Combination(mod, a2.shape[0], err < 1e-10, err, "svd")
    if not _same_topology(graphs, equal_sizes=True):
        raise GraphError("combination_type 'linear' needs parts of one topology with equal sizes (the same nodes, "
                         "indices and sizes); use 'cat' (exact) or 'svd' for others")
    return _linear(modules, coeffs)


def _linear(modules: Sequence[GraphModule], coeffs: Sequence[float]) -> Combination:
    g0 = modules[0].graph
    k = len(g0.nodes)
    first = next(iter(g0.nodes))
    values: dict[str, torch.Tensor] = {}
    parts = [_values(m) for m in modules]
    for name in g0.nodes:
        acc = torch.zeros(g0.nodes[name].sizes, dtype=torch.float64)
        for t, m in enumerate(modules):
            c = coeffs[t] * m.graph.scale
            f = abs(c) ** (1.0 / k) * (math.copysign(1.0, c) if name == first else 1.0)
            acc += f * parts[t][name].cpu()
        values[name] = acc
    nodes = [_result_node(n, n.sizes) for n in g0.nodes.values()]
    graph = Graph(nodes, in_index=g0.in_index, out_index=g0.out_index, scale=1.0, name=f"sum:{g0.name or 'graph'}",
                  meta={"combination": "linear"})
    module = _module_like(graph, modules[0], values)
    b, a = _target(modules, coeffs)
    with torch.no_grad():
        got = module.dense().to(torch.float64).cpu()
    want = (b @ a).cpu()
    norm = float(want.norm())
    err = float((got - want).norm()) / norm if norm > 0 else float(got.norm())
    return Combination(module, _cut_rank(graph, {}), err < 1e-9, err, "linear")


def compress(module: GraphModule, rank: int) -> Combination:
    """``module``'s update truncated to ``rank`` by an SVD, as a LoRA-shaped module with the
    relative Frobenius error of the truncation (exact when the update's rank is at most ``rank``)."""
    b, a = low_rank_factors(module)
    b2, a2, err = truncate_factors(b, a, rank)
    out = lora_graph_module(b2, a2, module, name=module.graph.name or "lora", meta={"compressed_from": module.graph.name})
    return Combination(out, a2.shape[0], err < 1e-10, err, "svd")
