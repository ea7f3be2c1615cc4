"""Checks that every adapter graph must pass, whoever wrote it.

==========================  ================================================================
check                       what it asserts
==========================  ================================================================
``orthogonality:<node>``    a unitary node's frame has orthonormal columns: max|UᵀU − I| ≤ tol,
                            with its current values and with random ones
``parameter_count``         ``graph.num_parameters()`` (the nodes' closed forms) equals the
                            number of trainable scalars the module actually allocates
``forward_vs_dense``        the contracted forward equals ``x @ (scale·dense())ᵀ`` (linear graphs)
``merge_roundtrip``         merged into a random linear layer the output is unchanged, and
                            unmerging restores the weight (linear graphs)
``gradient_flow:<node>``    with all trainable values randomised, every trainable node receives a
                            non-zero gradient from a random loss (no dead node)
==========================  ================================================================
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from tnpeft.graph import Graph, GraphModule, Unitary, merged_weight, unmerged_weight

_DEAD = 1e-10  # gradient mass below which a node counts as dead (random values are O(1), float64)


@dataclass
class Check:
    """One check's outcome: ``value`` measured against ``threshold`` (``passed`` says how it went)."""

    name: str
    passed: bool
    value: float | int | None = None
    threshold: float | int | None = None
    message: str = ""


@dataclass
class VerifyReport:
    """All checks of one graph. ``report.ok`` is True when every check passed."""

    graph: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"graph": self.graph, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        w = max(len(c.name) for c in self.checks) if self.checks else 10
        lines = [f"verify {self.graph}: {'OK' if self.ok else 'FAILED'}"]
        for c in self.checks:
            v = "" if c.value is None else (f"{c.value:.3g}" if isinstance(c.value, float) else f"{c.value}")
            t = "" if c.threshold is None else (f" (≤ {c.threshold:g})" if isinstance(c.threshold, float)
                                                 else f" (= {c.threshold})")
            lines.append(f"  {'✓' if c.passed else '✗'} {c.name:<{w}}  {v}{t}  {c.message}".rstrip())
        return "\n".join(lines)


def _randomize(module: GraphModule, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.5)


def verify(graph: Graph, *, tol: float = 1e-5, rows: int = 7, seed: int = 0,
           module: GraphModule | None = None) -> VerifyReport:
    """Run every check on ``graph`` (with its own values, or ``module``'s) and return a report.

    Checks run in float64 on copies; all but the first orthogonality check use random values for
    the trainable tensors. The graph and its module are not changed.
    """
    src = module if module is not None else graph.module
    m: GraphModule = copy.deepcopy(src).double()
    report = VerifyReport(graph=graph.name or "graph")
    gen = torch.Generator().manual_seed(seed)

    for name, node in graph.nodes.items():
        if isinstance(node, Unitary):
            u = m.tensor(name).detach()
            k = u.shape[-1]
            err = (u.transpose(-1, -2) @ u - torch.eye(k, dtype=u.dtype)).abs().max().item()
            report.checks.append(Check(f"orthogonality:{name}", err <= tol, err, tol,
                                       "" if err <= tol else "columns are not orthonormal"))

    allocated = sum(p.numel() for p in m.parameters() if p.requires_grad)
    claimed = graph.num_parameters()
    report.checks.append(Check("parameter_count", allocated == claimed, claimed, allocated,
                               "" if allocated == claimed else
                               f"the nodes' closed forms give {claimed:,} but {allocated:,} scalars are trainable"))

    x = torch.randn(rows, graph.in_features, generator=gen, dtype=torch.float64)
    # the remaining checks use randomised values: a zero-initialised node (LoRA's B, Λ) would make
    # them pass trivially
    m = copy.deepcopy(src).double()
    _randomize(m, seed + 1)
    for name, node in graph.nodes.items():
        if isinstance(node, Unitary):
            u = m.tensor(name).detach()
            err = (u.transpose(-1, -2) @ u - torch.eye(u.shape[-1], dtype=u.dtype)).abs().max().item()
            if err > tol:
                report.checks.append(Check(f"orthogonality_random:{name}", False, err, tol,
                                           "not orthonormal for random parameter values"))
    if graph.is_linear:
        m.eval()
        with torch.no_grad():
            y = m(x)
            ref = x @ m.dense(scaled=True).T
        err = (y - ref).abs().max().item() / max(1.0, ref.abs().max().item())
        report.checks.append(Check("forward_vs_dense", err <= tol, err, tol,
                                   "" if err <= tol else "the planned contraction disagrees with x·ΔWᵀ"))
        report.checks.append(_merge_check(graph, m, x, tol, gen))

    mg = copy.deepcopy(src).double()
    _randomize(mg, seed)
    mg.train(False)
    if not any(p.requires_grad for p in mg.parameters()):
        report.checks.append(Check("gradient_flow", False, 0, None, "the graph has no trainable parameter"))
        return report
    out = mg(x)
    target = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (out * target).sum().backward()
    owners = [n for n, node in graph.nodes.items() if n not in graph.generated and node.num_parameters()]
    for name in owners + list(graph.hypernetworks):
        params = [p for p in mg.get_submodule(name).parameters() if p.requires_grad]
        norm = sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in params)
        alive = norm > _DEAD  # round-off leaves ~1e-15 on a node that cannot move the output
        report.checks.append(Check(f"gradient_flow:{name}", alive, norm, None,
                                   "" if alive else "no gradient reaches this trainable node: it is dead"))
    return report


def _merge_check(graph: Graph, m: GraphModule, x: torch.Tensor, tol: float, gen: torch.Generator) -> Check:
    n_out = graph.out_features if graph.mode == "add" else 5
    base = nn.Linear(graph.in_features, n_out, dtype=torch.float64)
    with torch.no_grad():
        base.weight.copy_(torch.randn(base.weight.shape, generator=gen, dtype=torch.float64))
    w0 = base.weight.detach().clone()
    with torch.no_grad():
        # the adapted layer, unmerged: base(x) + Δ(x), or base(D x) for an input-mode graph
        y = base(m(x)) if graph.mode == "input" else base(x) + m(x)
        w1 = merged_weight(m, w0)
        err = (torch.nn.functional.linear(x, w1, base.bias) - y).abs().max().item() / max(1.0, y.abs().max().item())
        back = (unmerged_weight(m, w1) - w0).abs().max().item()
    worst = max(err, back)
    return Check("merge_roundtrip", worst <= tol, worst, tol,
                 "" if worst <= tol else f"merged output off by {err:.2e}, unmerged weight off by {back:.2e}")
