"""Sums of adapters: ``Σ wᵢ sᵢ ΔWᵢ`` as one graph with values (``"cat"`` exact by the direct sum of
the bonds, ``"linear"`` node-wise, ``"svd"`` truncated), and :func:`compress`. See
:mod:`tnpeft.algebra`."""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import torch

from tnpeft.algebra.factors import (
    Combination,
    as_module,
    check_additive,
    cut_rank_at,
    finite_result,
    lora_graph_module,
    low_rank_factors,
    module_like,
    module_values,
    truncate_factors,
)
from tnpeft.errors import GraphError
from tnpeft.graph.graph import Graph
from tnpeft.graph.nodes import Dense, Diagonal, Node
from tnpeft.runtime.module import GraphModule

COMBINATION_TYPES = ("cat", "svd", "linear")


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
    if isinstance(n, Diagonal):
        return Diagonal(n.name, n.inds, sizes, init="zeros")
    return Dense(n.name, n.inds, sizes, init="zeros")


def _direct_sum(modules: Sequence[GraphModule], coeffs: Sequence[float]) -> tuple[GraphModule, int | None]:
    g0 = modules[0].graph
    legs = set(g0.in_inds) | set(g0.out_inds)
    bonds = sorted({i for n in g0.nodes.values() for i in n.inds if i not in legs})
    sizes = {i: sum(m.graph.size_dict[i] for m in modules) for i in bonds}
    offsets = [{i: sum(m.graph.size_dict[i] for m in modules[:t]) for i in bonds} for t in range(len(modules))]
    weighted = next(iter(g0.nodes))        # each part's weight and scale go on its first node
    nodes, values = [], {}
    parts = [module_values(m) for m in modules]
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
    rank_bonds = cut_rank_at(g0, sizes)
    graph = Graph(nodes, in_index=g0.in_index, out_index=g0.out_index, scale=1.0, name=f"sum:{g0.name or 'graph'}",
                  meta={"combination": "cat"})
    return module_like(graph, modules[0], values), rank_bonds


def _target(modules: Sequence[GraphModule], coeffs: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact sum as concatenated factors ``(B, A)``."""
    bs, as_ = [], []
    for m, c in zip(modules, coeffs):
        b, a = low_rank_factors(m)
        bs.append(b * c)
        as_.append(a)
    return torch.cat(bs, 1), torch.cat(as_, 0)


def finite_weight(w: Any) -> bool:
    """A finite real number (Python's or numpy's; not a bool)."""
    return not isinstance(w, bool) and isinstance(w, numbers.Real) and math.isfinite(float(w))


def _check_terms(modules: Sequence[GraphModule], weights: Sequence[float]) -> tuple[list[GraphModule], list[float]]:
    if isinstance(modules, (str, Graph, GraphModule)) or not hasattr(modules, "__len__") or not len(modules):
        raise GraphError(f"a weighted sum needs a non-empty list of adapters, got {type(modules).__name__}")
    if isinstance(weights, (str, bytes, dict)) or not hasattr(weights, "__len__") or len(weights) != len(modules):
        raise GraphError(f"{len(modules)} adapters need {len(modules)} weights, got {weights!r}")
    if not all(finite_weight(w) for w in weights):
        raise GraphError(f"weights must be finite numbers, got {list(weights)!r}")
    modules, out = [as_module(m, f"part {i}") for i, m in enumerate(modules)], [float(w) for w in weights]
    shape = (modules[0].graph.in_features, modules[0].graph.out_features)
    for m in modules:
        check_additive(m)
        if (m.graph.in_features, m.graph.out_features) != shape:
            raise GraphError(f"graph {m.graph.name or 'adapter'!r} maps {m.graph.in_features} → "
                             f"{m.graph.out_features}, another {shape[0]} → {shape[1]}; only updates of one shape add")
    return modules, out


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
    modules, coeffs = _check_terms(modules, weights)
    return finite_result(_weighted_sum(modules, coeffs, combination_type, rank), f"the weighted sum with weights {coeffs}")


def _weighted_sum(modules: list[GraphModule], coeffs: list[float], combination_type: str,
                  rank: int | None) -> Combination:
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
    parts = [module_values(m) for m in modules]
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
    module = module_like(graph, modules[0], values)
    b, a = _target(modules, coeffs)
    with torch.no_grad():
        got = module.dense().to(torch.float64).cpu()
    want = (b @ a).cpu()
    norm = float(want.norm())
    err = float((got - want).norm()) / norm if norm > 0 else float(got.norm())
    return Combination(module, cut_rank_at(graph, {}), err < 1e-9, err, "linear")


def compress(module: GraphModule, rank: int) -> Combination:
    """``module``'s update truncated to ``rank`` by an SVD, as a LoRA-shaped module with the
    relative Frobenius error of the truncation (exact when the update's rank is at most ``rank``)."""
    module = as_module(module, "the adapter to compress")
    b, a = low_rank_factors(module)
    b2, a2, err = truncate_factors(b, a, rank)
    out = lora_graph_module(b2, a2, module, name=module.graph.name or "lora", meta={"compressed_from": module.graph.name})
    return finite_result(Combination(out, a2.shape[0], err < 1e-10, err, "svd"),
                          f"the compression of {module.graph.name or 'the adapter'!r} to rank {rank}")
