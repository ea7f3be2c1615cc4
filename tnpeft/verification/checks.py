"""Checks that every adapter must pass, whoever wrote it: ``tnpeft.verify(source)``.

Two kinds of values are checked. **The values the adapter holds** — of a graph's module, a
:class:`GraphModule`, a model's injected adapter or a saved adapter folder — are what will be
trained further, merged or deployed: a NaN in one tensor, or a "unitary" node whose frame is not
orthonormal any more (an ``exp`` frame whose generator has grown huge, a parametrization of your
own whose stored matrix was overwritten), fails here. **Random values** for every trainable tensor
test the topology: properties that must hold whatever the values (a zero-initialised node would
make them pass trivially).

==========================  ======  ======  ===============================================
check                       held    random  what it asserts
==========================  ======  ======  ===============================================
``finite:<node>``           ✓               no NaN or ±inf in the node's stored tensors or
                                            in its materialized tensor
``orthogonality:<node>``    ✓       ✓       a unitary node's frames: max|UᵀU − I| ≤ tol
``parameter_count``         ✓       ✓       the trainable scalars held / allocated equal
                                            ``graph.num_parameters()`` (the closed forms)
``forward_vs_dense``        ✓       ✓       the planned contraction equals ``x·(scale·ΔW)ᵀ``
                                            (linear graphs)
``merge_roundtrip``         ✓       ✓       merged into a random layer the output is unchanged
                                            and unmerging restores the weight (linear graphs)
``gradient_flow:<node>``            ✓       every trainable node gets a gradient from a random
                                            loss: Σ|∂L/∂θ| > 1e-10 (no dead node)
==========================  ======  ======  ===============================================

Relative errors are ``max|a − b| / max(1, max|b|)``, all in float64 on copies (the source is not
changed). A check that does not apply (no unitary node; a nonlinear graph has no single ΔW) is
listed as skipped, with the reason.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Hashable, Mapping

import torch
from torch import nn

from tnpeft.contract import plan_for
from tnpeft.graph import ContractStep, Graph, Nonlinear, Unitary
from tnpeft.params import limits
from tnpeft.runtime import GraphModule, merged_weight, unmerged_weight
from tnpeft.storage import graph_modules
from tnpeft.verification.report import Check, VerifyReport

DEAD = 1e-10  # gradient mass below which a trainable node counts as dead (random values are O(1), float64)


def verify(source: Any, *, tol: float = 1e-5, rows: int = 7, seed: int = 0, module: GraphModule | None = None,
           adapter_name: str = "default") -> VerifyReport:
    """Check ``source`` — a :class:`Graph` (its ``module``'s values), a :class:`GraphModule`, a
    ``{path: graph}`` mapping, a model with injected adapters (adapter ``adapter_name``), a saved
    adapter folder, a graph folder or a graph ``.json`` file — with the values it holds and with
    random values; ``module`` gives the values for a graph explicitly. Returns the report
    (``report.ok``, ``report.failures``, ``str(report)``, ``report.to_json()``)."""
    if module is not None:
        mods = {"": module}
    else:
        mods = graph_modules(source, adapter_name, finite=False)   # NaN is reported, not refused
    report = VerifyReport(_name(source, mods), modules=list(mods))
    for path, m in mods.items():
        report.checks += held_checks(m, path, tol=tol, rows=rows, seed=seed)
    first: dict[tuple[Hashable, ...], list[str]] = {}
    for path, m in mods.items():   # the topology checks once per distinct structure
        first.setdefault(m.graph.signature(), []).append(path)
    for paths in first.values():
        report.structures[paths[0]] = paths
        report.checks += random_checks(mods[paths[0]].graph, paths[0], tol=tol, rows=rows, seed=seed)
    return report


def _name(source: Any, mods: dict[str, GraphModule]) -> str:
    if isinstance(source, (str, Path)):
        return repr(str(source))
    if len(mods) == 1:
        g = next(iter(mods.values())).graph
        return g.name or "graph"
    return f"{len(mods)} adapted modules"


# ------------------------------------------------------------------ the values it holds
def held_checks(module: GraphModule, path: str = "", *, tol: float = 1e-5, rows: int = 7, seed: int = 0) -> list[Check]:
    """The checks of the values ``module`` holds: finiteness, orthogonality, count, and for a
    linear graph forward against ΔW and the merge round trip."""
    g = module.graph
    m: GraphModule = copy.deepcopy(module).double().eval()
    out = [_finite(m, name, path) for name in _owners(g)]
    out += [_orthogonality(m, name, tol, "held", path) for name, node in g.nodes.items() if isinstance(node, Unitary)]
    held = sum(p.numel() for name in _trainable_owners(g) for p in m.get_submodule(name).parameters())
    out.append(_count(g, held, "held", path, "held"))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, g.in_features, generator=gen, dtype=torch.float64)
    out += _linear_checks(g, m, x, tol, gen, "held", path)
    return out


def _owners(g: Graph) -> list[str]:
    """Nodes (and hyper-networks) that hold or produce values."""
    names = [n for n, node in g.nodes.items() if not (isinstance(node, Nonlinear) and node.is_elementwise)]
    return names + list(g.hypernetworks)


def _trainable_owners(g: Graph) -> list[str]:
    names = [n for n, node in g.nodes.items() if n not in g.generated and node.num_parameters()]
    return names + list(g.hypernetworks)


def _finite(m: GraphModule, name: str, path: str) -> Check:
    g = m.graph
    bad: list[str] = []
    count = 0
    children = dict(m.named_children())
    if name in children:
        for key, t in children[name].state_dict().items():
            n_bad = int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0
            if n_bad:
                count += n_bad
                bad.append(f"{name}.{key}: {_nan_inf(t)} of {t.numel():,} values")
    if name in g.nodes and not isinstance(g.nodes[name], Nonlinear) and not bad:
        try:
            with torch.no_grad():
                t = m.tensor(name)
        except (RuntimeError, ValueError) as e:   # a materialization that breaks on these values
            return Check(f"finite:{name}", False, None, 0, f"its tensor cannot be computed: {e}", "=",
                         "non-finite values", module=path)
        n_bad = int((~torch.isfinite(t)).sum())
        if n_bad:
            count += n_bad
            bad.append(f"its materialized tensor: {_nan_inf(t)} of {t.numel():,} values, from finite parameters")
    return Check(f"finite:{name}", not bad, count, 0, "; ".join(bad), "=", "non-finite values", module=path)


def _nan_inf(t: torch.Tensor) -> str:
    nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    return " and ".join(x for x in (f"{nan:,} NaN" if nan else "", f"{inf:,} ±inf" if inf else "") if x)


def _orthogonality(m: GraphModule, name: str, tol: float, values: str, path: str) -> Check:
    quantity = f"max|{name}ᵀ{name} − I|"
    try:
        with torch.no_grad():
            u = m.tensor(name).detach()
    except (RuntimeError, ValueError) as e:
        return Check(f"orthogonality:{name}", False, None, tol, f"the frame cannot be computed: {e}", "≤", quantity,
                     "tol", values=values, module=path)
    eye = torch.eye(u.shape[-1], dtype=u.dtype)
    err = (u.transpose(-1, -2) @ u - eye).abs().max().item()
    ok = err <= tol
    why = "" if ok else ("the frame holds NaN or ±inf" if err != err else "the columns are not orthonormal" if
                         values == "held" else "not orthonormal for random parameter values: the parametrization does "
                         "not keep the frame on the Stiefel manifold by construction")
    return Check(f"orthogonality:{name}", ok, err, tol, why, "≤", quantity, "tol", values=values, module=path)


def _count(g: Graph, allocated: int, what: str, path: str, values: str) -> Check:
    claimed = g.num_parameters()
    ok = allocated == claimed
    why = "" if ok else (f"{allocated:,} trainable scalars are {what}, but the nodes' closed forms "
                         f"(graph.num_parameters()) give {claimed:,}")
    return Check("parameter_count", ok, allocated, claimed, why, "=", what, "closed form", values=values, module=path)


def _linear_checks(g: Graph, m: GraphModule, x: torch.Tensor, tol: float, gen: torch.Generator, values: str,
                   path: str) -> list[Check]:
    if not g.is_linear:
        names = [n for n, node in g.nodes.items() if isinstance(node, Nonlinear)]
        why = (f"nonlinear node(s) {names}: the update depends on the input, so there is no single ΔW to compare "
               "the forward with or to merge")
        return [Check(c, None, message=why, values=values, module=path) for c in ("forward_vs_dense", "merge_roundtrip")]
    if g.out_features * g.in_features > limits.MAX_DENSE_CHECK_ELEMENTS:
        why = (f"ΔW would have {g.out_features * g.in_features:,} elements, over the dense-check budget of "
               f"{limits.MAX_DENSE_CHECK_ELEMENTS:,} (tnpeft.params.limits.MAX_DENSE_CHECK_ELEMENTS)")
        return [_sampled_forward(g, m, tol, gen, values, path),
                Check("merge_roundtrip", None, message=f"{why}: the merge is not checked", values=values, module=path)]
    with torch.no_grad():
        y = m(x)
        ref = x @ m.dense(scaled=True).T
    err = _rel(y, ref)
    ok = err <= tol
    why = "" if ok else ("the result is not finite" if err != err else "the planned contraction disagrees with x·ΔWᵀ")
    fwd = Check("forward_vs_dense", ok, err, tol, why, "≤", "relative error", "tol", values=values, module=path)
    return [fwd, _merge(g, m, x, tol, gen, values, path)]


def _picks(g: Graph, gen: torch.Generator, target: int = 64) -> dict[str, torch.Tensor]:
    """Sorted, distinct positions of every open leg's index (one pick per index, shared by the
    input and output side of a pass-through index): about ``target`` rows and columns in all."""
    picks = {}
    for legs in (g.out_inds, g.in_inds):
        k = max(1, int(target ** (1 / len(legs))))
        for ind in legs:
            if ind not in picks:
                size = g.size_dict[ind]
                drawn = torch.randint(0, size, (k,), generator=gen)
                picks[ind] = torch.unique(torch.cat((torch.tensor([0, size - 1]), drawn)))[:k]
    return picks


def _flat(legs: tuple[str, ...], sizes: Mapping[str, int], picks: dict[str, torch.Tensor]) -> torch.Tensor:
    """Row-major flat positions of the picked multi-indices over ``legs``."""
    flat = torch.zeros(1, dtype=torch.long)
    for ind in legs:
        flat = (flat[:, None] * sizes[ind] + picks[ind][None, :]).reshape(-1)
    return flat


def _dense_block(g: Graph, m: GraphModule, picks: dict[str, torch.Tensor]) -> torch.Tensor:
    """``scale · ΔW`` on the picked rows × columns, contracted from the node tensors cut to the
    picked positions of the open legs (as :meth:`GraphModule.dense` does for the whole of ΔW)."""
    first = g.schedule[0]
    assert isinstance(first, ContractStep)   # a linear graph is one contraction
    names = first.nodes
    tensors = []
    for n in names:
        t = m.tensor(n)
        for axis, ind in enumerate(g.nodes[n].inds):
            if ind in picks:
                t = t.index_select(axis, picks[ind])
        tensors.append(t)
    sizes = {**g.size_dict, **{i: len(p) for i, p in picks.items()}}
    shared = g.shared_legs
    in_only = tuple(i for i in g.in_inds if i not in shared)
    plan = plan_for([g.nodes[n].inds for n in names], g.out_inds + in_only, sizes, names=names,
                    key_extra=("dense-block",), optimize="greedy")
    w = plan(*tensors)
    for ind in shared:
        pos = g.out_inds.index(ind)
        w = torch.diag_embed(w.movedim(pos, -1)).movedim(-2, pos)
        in_only = in_only + (ind,)
    order = [g.out_inds.index(i) for i in g.out_inds] + [len(g.out_inds) + in_only.index(i) for i in g.in_inds]
    rows = math.prod(sizes[i] for i in g.out_inds)
    return w.permute(order).reshape(rows, -1) * g.scale


def _sampled_forward(g: Graph, m: GraphModule, tol: float, gen: torch.Generator, values: str, path: str) -> Check:
    """The forward on unit vectors of sampled input positions against a sampled block of ΔW."""
    picks = _picks(g, gen)
    cols, rows = _flat(g.in_inds, g.size_dict, picks), _flat(g.out_inds, g.size_dict, picks)
    with torch.no_grad():
        block = _dense_block(g, m, picks)
        x = torch.zeros(len(cols), g.in_features, dtype=torch.float64)
        x[torch.arange(len(cols)), cols] = 1.0
        got = m(x)[:, rows]
    err = _rel(got, block.T)
    ok = err <= tol
    why = "" if ok else ("the result is not finite" if err != err else "the planned contraction disagrees with ΔW")
    return Check("forward_vs_dense", ok, err, tol, why, "≤",
                 f"relative error on a sampled {len(rows)}×{len(cols)} block of ΔW (over the dense-check budget)",
                 "tol", values=values, module=path)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def _merge(g: Graph, m: GraphModule, x: torch.Tensor, tol: float, gen: torch.Generator, values: str, path: str) -> Check:
    n_out = g.out_features if g.mode == "add" else 5
    base = nn.Linear(g.in_features, n_out, dtype=torch.float64)
    with torch.no_grad():
        base.weight.copy_(torch.randn(base.weight.shape, generator=gen, dtype=torch.float64))
        w0 = base.weight.detach().clone()
        # the adapted layer, unmerged: base(x) + Δ(x), or base(D x) for an input-mode graph
        y = base(m(x)) if g.mode == "input" else base(x) + m(x)
        w1 = merged_weight(m, w0)
        err = _rel(torch.nn.functional.linear(x, w1, base.bias), y)
        back = (unmerged_weight(m, w1) - w0).abs().max().item()
    worst = max(err, back) if err == err and back == back else float("nan")
    ok = worst <= tol
    why = "" if ok else ("the result is not finite" if worst != worst else
                         f"merged output off by {err:.2e}, unmerged weight off by {back:.2e}")
    return Check("merge_roundtrip", ok, worst, tol, why, "≤", "relative error", "tol", values=values, module=path)


# ------------------------------------------------------------------ random values: the topology
def random_checks(graph: Graph, path: str = "", *, tol: float = 1e-5, rows: int = 7, seed: int = 0) -> list[Check]:
    """The topology checks: with random values for every trainable tensor, orthogonality, count,
    forward against ΔW, the merge round trip and the gradient of every trainable node."""
    m = GraphModule(graph, dtype=torch.float64, rng=torch.Generator().manual_seed(seed))
    _randomize(m, seed + 1)
    m.eval()
    unitary = [n for n, node in graph.nodes.items() if isinstance(node, Unitary)]
    out = [_orthogonality(m, n, tol, "random", path) for n in unitary]
    if not unitary:
        out.append(Check("orthogonality", None, message="the graph has no unitary node", values="random", module=path))
    allocated = sum(p.numel() for p in m.parameters() if p.requires_grad)
    out.append(_count(graph, allocated, "allocated", path, "random"))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, graph.in_features, generator=gen, dtype=torch.float64)
    out += _linear_checks(graph, m, x, tol, gen, "random", path)
    out += _gradient_flow(graph, m, x, gen, path)
    return out


def _randomize(module: GraphModule, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.5)


def _gradient_flow(graph: Graph, m: GraphModule, x: torch.Tensor, gen: torch.Generator, path: str) -> list[Check]:
    if not any(p.requires_grad for p in m.parameters()):
        return [Check("gradient_flow", False, 0, None, "the graph has no trainable parameter", values="random",
                      module=path)]
    out = m(x)
    target = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (out * target).sum().backward()
    checks = []
    for name in _trainable_owners(graph):
        params = [p for p in m.get_submodule(name).parameters() if p.requires_grad]
        norm = sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in params)
        alive = norm > DEAD  # round-off leaves ~1e-15 on a node that cannot move the output
        checks.append(Check(f"gradient_flow:{name}", alive, norm, DEAD,
                            "" if alive else "no gradient reaches this trainable node: it is dead", ">", "Σ|∂L/∂θ|",
                            "threshold", values="random", module=path))
    return checks
