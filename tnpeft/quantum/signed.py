r"""Signed frames from shots: the entries ``U_ij`` themselves, not only ``|U_ij|²``.

Measuring ``U|j⟩`` gives ``|U_ij|²`` and loses the signs. An interference circuit recovers them,
one circuit per column ``j``, with one ancilla ``a`` (the top qubit): ``H`` on ``a``; on the
``a = 0`` branch prepare ``|j⟩`` and apply ``U``; on the ``a = 1`` branch prepare the uniform
reference ``|s⟩ = D^{-1/2} Σ_i |i⟩`` (``D = 2ⁿ``); ``H`` on ``a`` again. Then

    P(a = 0, i) − P(a = 1, i) = s_i · U_ij = U_ij / √D,

so ``Û_ij = √D (p̂₀(i) − p̂₁(i))``. Per shot ``X_i = 1[a=0, i] − 1[a=1, i]`` is bounded by 1 with
variance ``σ² = p₀ + p₁ − (p₀ − p₁)²``; Bernstein's inequality with a union bound over the ``m``
cells gives, with probability at least ``1 − δ``, every

    |Û_ij − U_ij| ≤ √D · ( √(2σ²L/S) + 2L/(3S) ),   L = ln(2m/δ),

for ``S`` shots per column (:func:`signed_shot_bound`). The price of the signs is the ``√D``:
``S`` must grow with the register for a fixed accuracy.

:func:`estimate_adapter` puts estimated frames in place of a linear adapter's unitary nodes and
reports how far its update ``ΔW`` (and its output on a batch) moves from the exact one — on a
noiseless simulator the error is shot noise; on ``AerSimulator.from_backend(b)`` device noise adds
to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tnpeft.contract import plan_for
from tnpeft.errors import ConfigError, GraphError
from tnpeft.graph import ContractStep, Graph, Unitary
from tnpeft.quantum.backends import sample_probabilities
from tnpeft.quantum.compile import frame_matrices, to_qiskit
from tnpeft.quantum.shots import circuit_frame
from tnpeft.runtime import GraphModule
from tnpeft.storage import resolve_graph_module

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit
    from qiskit.providers import BackendV2


def interference_circuits(qc: QuantumCircuit, k: int) -> list[QuantumCircuit]:
    """The ``k`` interference circuits (one per column) on ``qc.num_qubits + 1`` qubits; the
    ancilla is the top qubit."""
    from qiskit import QuantumCircuit

    n = qc.num_qubits
    controlled = qc.to_gate(label=qc.name or "U").control(1, ctrl_state=0)
    out = []
    for j in range(k):
        c = QuantumCircuit(n + 1, name=f"{qc.name}_signed{j}")
        c.h(n)
        for q in range(n):
            if (j >> q) & 1:
                c.cx(n, q, ctrl_state=0)          # |j⟩ on the a = 0 branch
            c.ch(n, q)                            # |s⟩ on the a = 1 branch
        c.append(controlled, [n] + list(range(n)))
        c.h(n)
        out.append(c)
    return out


def signed_shot_bound(u: np.ndarray, shots: int, n_qubits: int, *, delta: float = 1e-3) -> np.ndarray:
    """The simultaneous bound on ``|Û_ij − U_ij|`` for every cell (see the module docstring)."""
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}", field="delta")
    d = float(1 << n_qubits)
    s = 1.0 / math.sqrt(d)
    p0 = (u + s) ** 2 / 4
    p1 = (u - s) ** 2 / 4
    var = p0 + p1 - (p0 - p1) ** 2
    big_l = math.log(2 * max(1, u.size) / delta)
    return math.sqrt(d) * (np.sqrt(2 * var * big_l / shots) + 2 * big_l / (3 * shots))


@dataclass
class SignedFrameEstimate:
    """A frame ``U`` (``N×K``) estimated with its signs, beside its exact values and the bound."""

    estimate: np.ndarray
    exact: np.ndarray
    shots: int
    n_qubits: int
    delta: float = 1e-3
    node: str | None = None

    @property
    def error(self) -> np.ndarray:
        return self.estimate - self.exact

    @property
    def bound(self) -> np.ndarray:
        return signed_shot_bound(self.exact, self.shots, self.n_qubits, delta=self.delta)

    @property
    def max_error(self) -> float:
        return float(np.abs(self.error).max())

    @property
    def within_bound(self) -> bool:
        """Whether every entry is within its bound (expected on a noiseless backend)."""
        return bool(np.all(np.abs(self.error) <= self.bound))

    @property
    def relative_error(self) -> float:
        """``‖Û − U‖_F / ‖U‖_F``."""
        return float(np.linalg.norm(self.error) / np.linalg.norm(self.exact))

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "rows": int(self.exact.shape[0]), "cols": int(self.exact.shape[1]),
                "shots": self.shots, "max_error": self.max_error, "max_bound": float(self.bound.max()),
                "relative_error": self.relative_error, "within_bound": self.within_bound, "delta": self.delta}

    def __str__(self) -> str:
        d = self.to_dict()
        return (f"{self.node or 'frame'} {d['rows']}×{d['cols']} with signs from {self.shots} shots per column: "
                f"max |Û−U| = {d['max_error']:.4f} (bound {d['max_bound']:.4f} at δ={self.delta:g}: "
                f"{'within' if self.within_bound else 'OUTSIDE'}), relative error {d['relative_error']:.2%}")


def estimate_signed_frame(source: Any, node: str | None = None, backend: BackendV2 | None = None, *,
                          shots: int = 8192, index: int | tuple[int, ...] | None = None, seed: int | None = None,
                          delta: float = 1e-3, sampler: Any = None, optimization_level: int = 1) -> SignedFrameEstimate:
    """Estimate a unitary node's frame, signs included, from interference circuits run on
    ``backend`` (default: a noiseless Aer simulator). ``source``/``node``/``index`` select the frame
    as for :func:`tnpeft.quantum.estimate_unitary`; a ``QuantumCircuit`` from
    :func:`~tnpeft.quantum.to_qiskit` works too."""
    from qiskit import QuantumCircuit

    if isinstance(source, QuantumCircuit):
        qc, u = source, circuit_frame(source)
        label = node or (source.metadata or {}).get("node") or source.name
    else:
        graph, module = resolve_graph_module(source)
        if node is None:
            unitary = [n for n, nd in graph.nodes.items() if isinstance(nd, Unitary) and n not in graph.generated]
            if len(unitary) != 1:
                raise GraphError(f"the graph has unitary nodes {unitary}; name the one to estimate with node=")
            node = unitary[0]
        if not isinstance(graph.nodes.get(node), Unitary):
            raise GraphError(f"node {node!r} is not a unitary node of the graph", node=node)
        qc = to_qiskit(module, node, index=index)
        if isinstance(qc, list):
            raise GraphError(f"node {node!r} is batched ({len(qc)} frames): choose one with index=", node=node)
        frames = module.get_submodule(node)
        batch = tuple(getattr(frames, "batch", ()))
        flat = 0 if not batch else int(np.ravel_multi_index(tuple(qc.metadata["batch_index"]), batch))
        u = frame_matrices(frames)[flat]
        label = node
    n_rows, k = u.shape
    n = qc.num_qubits
    probs = sample_probabilities(interference_circuits(qc, k), backend, shots=shots, seed=seed, sampler=sampler,
                                 optimization_level=optimization_level)
    d = 1 << n
    est = math.sqrt(d) * (probs[:, :n_rows] - probs[:, d:d + n_rows]).T     # (rows, k)
    return SignedFrameEstimate(est, u, shots, n, delta, node=label)


@dataclass
class AdapterEstimate:
    """A linear adapter with its unitary nodes replaced by frames estimated from shots."""

    frames: dict[str, SignedFrameEstimate] = field(default_factory=dict)
    delta_error: float = 0.0           # ‖ΔŴ − ΔW‖_F / ‖ΔW‖_F
    output_error: float = 0.0          # the same for the adapter's output on the probe batch
    backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "delta_error": self.delta_error, "output_error": self.output_error,
                "frames": {k: v.to_dict() for k, v in self.frames.items()}}

    def __str__(self) -> str:
        lines = [str(f) for f in self.frames.values()]
        lines.append(f"adapter from estimated frames{' on ' + self.backend if self.backend else ''}: ΔW relative error "
                     f"{self.delta_error:.2%}, output relative error {self.output_error:.2%}")
        return "\n".join(lines)


def _dense(graph: Graph, module: GraphModule, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    first = graph.schedule[0]
    assert isinstance(first, ContractStep)   # a linear graph is one contraction
    names = first.nodes
    ops = [tensors[n] if n in tensors else module.tensor(n).detach().to(torch.float64) for n in names]
    plan = plan_for([graph.nodes[n].inds for n in names], graph.out_inds + graph.in_inds, graph.size_dict,
                    names=names, key_extra=("estimate",))
    return plan(*ops).reshape(graph.out_features, graph.in_features) * graph.scale


def estimate_adapter(source: Any, backend: BackendV2 | None = None, *, shots: int = 8192, seed: int | None = None,
                     probe: torch.Tensor | None = None, sampler: Any = None,
                     optimization_level: int = 1) -> AdapterEstimate:
    """Estimate every unitary node of a linear, additive adapter (e.g. Quantum-PEFT's ``U`` and
    ``V``) with its signs on ``backend``, and compare the update ``ΔW`` — and the output on
    ``probe`` (default: 16 random rows) — built from the estimates with the exact ones."""
    graph, module = resolve_graph_module(source)
    if not graph.is_linear or graph.mode != "add" or graph.shared_legs:
        raise ConfigError("estimate_adapter needs a linear, additive graph without pass-through legs "
                          f"(graph {graph.name or ''!s} is not)", field="source")
    unitary = [n for n, nd in graph.nodes.items() if isinstance(nd, Unitary)]
    if not unitary or any(nd.batch_shape for nd in graph.nodes.values() if isinstance(nd, Unitary)):
        raise ConfigError("estimate_adapter needs unbatched unitary nodes", field="source")
    report = AdapterEstimate(backend=None if backend is None else getattr(backend, "name", type(backend).__name__))
    tensors = {}
    for name in unitary:
        est = estimate_signed_frame(module, name, backend, shots=shots, seed=seed, sampler=sampler,
                                    optimization_level=optimization_level)
        report.frames[name] = est
        tensors[name] = torch.as_tensor(est.estimate, dtype=torch.float64)
    exact = _dense(graph, module, {n: torch.as_tensor(report.frames[n].exact) for n in unitary})
    approx = _dense(graph, module, tensors)
    report.delta_error = float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact).clamp_min(1e-300))
    x = probe if probe is not None else torch.randn(16, graph.in_features, dtype=torch.float64,
                                                    generator=torch.Generator().manual_seed(0))
    x = x.to(torch.float64)
    y, y_hat = x @ exact.T, x @ approx.T
    report.output_error = float(torch.linalg.norm(y_hat - y) / torch.linalg.norm(y).clamp_min(1e-300))
    return report
