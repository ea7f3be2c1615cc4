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
noiseless simulator the error is shot noise; on a noisy device (``"fake_torino"``,
``AerSimulator.from_backend(b)``, …) device noise adds to it, and mitigation
(:mod:`tnpeft.quantum.mitigation`) takes part of it back. A frame with a circuit of its own
(``pauli``, ``givens``) runs as one parameterized interference circuit with a binding per column
(:func:`tnpeft.circuits.device_hooks.device_frames`); a synthesized frame as one bound circuit per
column. When ``Λ = 0`` the update is zero and has no relative error: the report gives the frames'
errors instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tnpeft.circuits.circuit import unitary_matrix
from tnpeft.circuits.device_hooks import device_frames
from tnpeft.contract import plan_for
from tnpeft.errors import ConfigError, GraphError
from tnpeft.graph import ContractStep, Graph, Unitary
from tnpeft.params.unitary import FrameModule
from tnpeft.quantum.compile import frame_matrices, to_qiskit
from tnpeft.quantum.device import Device
from tnpeft.quantum.shots import circuit_frame, unitary_node
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
    """A frame estimated with its signs, beside its exact values and the shot-noise bound.

    ``estimate``/``exact`` are what the circuit measures: its first ``K`` columns on the rows the
    frame reads (``N``, or the padded ``R = 2^⌈log₂ N⌉`` of a ``pow2`` frame), where the bound
    holds. ``frame``/``frame_exact`` are the node's ``N×K`` frame (the same arrays, or their
    projection for a ``pow2`` frame); ``relative_error`` is the frame's."""

    estimate: np.ndarray
    exact: np.ndarray
    shots: int | None
    n_qubits: int
    delta: float = 1e-3
    node: str | None = None
    frame: np.ndarray | None = None
    frame_exact: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.frame is None:
            self.frame, self.frame_exact = self.estimate, self.exact

    @property
    def error(self) -> np.ndarray:
        return self.estimate - self.exact

    @property
    def bound(self) -> np.ndarray:
        if not self.shots:
            return np.zeros_like(self.exact)
        return signed_shot_bound(self.exact, self.shots, self.n_qubits, delta=self.delta)

    @property
    def max_error(self) -> float:
        return float(np.abs(self.error).max())

    @property
    def within_bound(self) -> bool:
        """Whether every entry is within its bound (expected on a noiseless backend)."""
        return bool(np.all(np.abs(self.error) <= self.bound + 1e-9))

    @property
    def relative_error(self) -> float:
        """``‖Û − U‖_F / ‖U‖_F`` of the node's frame."""
        frame, exact = self.frames()
        return float(np.linalg.norm(frame - exact) / np.linalg.norm(exact))

    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """``(frame, frame_exact)``: the node's ``N×K`` frame estimated and exact."""
        frame = self.frame if self.frame is not None else self.estimate
        return frame, self.frame_exact if self.frame_exact is not None else self.exact

    def to_dict(self) -> dict[str, Any]:
        rows, cols = self.frames()[1].shape
        return {"node": self.node, "rows": int(rows), "cols": int(cols),
                "circuit_rows": int(self.exact.shape[0]), "shots": self.shots, "max_error": self.max_error,
                "max_bound": float(self.bound.max()), "relative_error": self.relative_error,
                "within_bound": self.within_bound, "delta": self.delta}

    def __str__(self) -> str:
        d = self.to_dict()
        shots = "exact probabilities" if not self.shots else f"{self.shots} shots per column"
        return (f"{self.node or 'frame'} {d['rows']}×{d['cols']} with signs from {shots}: "
                f"max |Û−U| = {d['max_error']:.4f} (bound {d['max_bound']:.4f} at δ={self.delta:g}: "
                f"{'within' if self.within_bound else 'OUTSIDE'}), relative error {d['relative_error']:.2%}")


def _device(device: Device | None, backend: Any, shots: int | None, seed: int | None, sampler: Any,
            optimization_level: int, mitigation: Any) -> Device:
    if device is not None:
        return device
    return Device("ideal" if backend is None else backend, shots=shots, mitigation=mitigation, seed=seed,
                  sampler=sampler, optimization_level=optimization_level)


def _select_frame(source: Any, node: str | None, index: Any) -> tuple[Any, str, Any]:
    graph, module = resolve_graph_module(source)
    node = unitary_node(graph, node)
    frames = module.get_submodule(node)
    batch = tuple(getattr(frames, "batch", ()))
    if batch and index is None:
        raise GraphError(f"node {node!r} is batched ({int(np.prod(batch))} frames): choose one with index=", node=node)
    flat = 0 if not batch else (index if isinstance(index, int) else int(np.ravel_multi_index(tuple(index), batch)))
    return module, node, (frames, flat)


def estimate_signed_frame(source: Any, node: str | None = None, backend: BackendV2 | str | None = None, *,
                          shots: int | None = 8192, index: int | tuple[int, ...] | None = None, seed: int | None = None,
                          delta: float = 1e-3, sampler: Any = None, optimization_level: int = 1,
                          mitigation: Any = None, device: Device | None = None) -> SignedFrameEstimate:
    """Estimate a unitary node's frame, signs included, from interference circuits run on
    ``backend`` (a name such as ``"fake_torino"``, any ``BackendV2``; default: the ideal device) with
    ``shots`` per column (``None``: exact probabilities) and ``mitigation`` — or on ``device``.
    ``source``/``node``/``index`` select the frame as for :func:`tnpeft.quantum.estimate_unitary`;
    a ``QuantumCircuit`` from :func:`~tnpeft.quantum.to_qiskit` works too."""
    from qiskit import QuantumCircuit

    dev = _device(device, backend, shots, seed, sampler, optimization_level, mitigation)
    if isinstance(source, QuantumCircuit):
        u = circuit_frame(source)
        return _from_qiskit(dev, source, u, node or (source.metadata or {}).get("node") or source.name, delta)
    module, node, (frames, flat) = _select_frame(source, node, index)
    u = frame_matrices(frames)[flat]
    circ = frames.device_circuit() if isinstance(frames, FrameModule) else None
    if circ is None:                      # a synthesized frame: its bound circuit, one per column
        qc = to_qiskit(module, node, index=index)
        return _from_qiskit(dev, qc, u, node, delta)
    with torch.no_grad():
        theta = frames.circuit_angles(frames.flat_param().detach().to(torch.float64))[flat:flat + 1]
        cols = device_frames(dev, circ, theta, frames.k)                          # (1, 2^q, K)
        exact_cols = _exact_columns(circ, theta, frames.k)
        rows = frames.rows if getattr(frames, "pow2", False) else frames.n
        est_frame = frames.from_circuit_columns(cols)[0].numpy()
    return SignedFrameEstimate(cols[0, :rows].numpy(), exact_cols[:rows], dev.shots, circ.n_qubits, delta, node=node,
                               frame=est_frame, frame_exact=u)


def _exact_columns(circ: Any, theta: torch.Tensor, k: int) -> np.ndarray:
    return unitary_matrix(circ, theta[0]).numpy()[:, :k]


def _from_qiskit(dev: Device, qc: QuantumCircuit, u: np.ndarray, label: str, delta: float) -> SignedFrameEstimate:
    n_rows, k = u.shape
    n = qc.num_qubits
    d = 1 << n
    probs = np.stack([dev.run(dev.compile(c, []), None)[0]
                      for j, c in enumerate(interference_circuits(qc, k))])
    est = math.sqrt(d) * (probs[:, :n_rows] - probs[:, d:d + n_rows]).T     # (rows, k)
    return SignedFrameEstimate(est, u, dev.shots, n, delta, node=label)


@dataclass
class AdapterEstimate:
    """A linear adapter with its unitary nodes replaced by frames estimated from shots.

    ``delta_error`` is ``‖ΔŴ − ΔW‖_F / ‖ΔW‖_F`` — ``None`` when ``ΔW = 0`` (e.g. a fresh
    Quantum-PEFT adapter, ``Λ = 0``), where no relative error exists; the frames' own errors are
    always reported. ``output_error`` is the same for the adapter's output on the probe batch."""

    frames: dict[str, SignedFrameEstimate] = field(default_factory=dict)
    delta_error: float | None = None
    output_error: float | None = None
    backend: str | None = None
    delta_norm: float = 0.0
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_errors(self) -> dict[str, float]:
        """``{node: relative error of its frame}``."""
        return {k: v.relative_error for k, v in self.frames.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "delta_error": self.delta_error, "output_error": self.output_error,
                "delta_norm": self.delta_norm, "frame_errors": self.frame_errors,
                "frames": {k: v.to_dict() for k, v in self.frames.items()}, "cost": self.cost}

    def __str__(self) -> str:
        lines = [str(f) for f in self.frames.values()]
        on = f" on {self.backend}" if self.backend else ""
        frames = ", ".join(f"{k} {v:.2%}" for k, v in self.frame_errors.items())
        if self.delta_error is None:
            lines.append(f"adapter from estimated frames{on}: ΔW = 0 (Λ = 0), so ΔW has no relative error; "
                         f"frame errors {frames}")
        else:
            lines.append(f"adapter from estimated frames{on}: ΔW relative error {self.delta_error:.2%}, output "
                         f"relative error {self.output_error:.2%}; frame errors {frames}")
        return "\n".join(lines)


def adapter_update(graph: Graph, module: GraphModule, tensors: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The update ``ΔW`` (``out × in``, float64, scaled) of a linear graph with some node tensors
    replaced by ``tensors`` (e.g. frames estimated on a device)."""
    tensors = tensors or {}
    first = graph.schedule[0]
    assert isinstance(first, ContractStep)   # a linear graph is one contraction
    names = first.nodes
    ops = [tensors[n].to(torch.float64) if n in tensors else module.tensor(n).detach().to(torch.float64)
           for n in names]
    plan = plan_for([graph.nodes[n].inds for n in names], graph.out_inds + graph.in_inds, graph.size_dict,
                    names=names, key_extra=("estimate",))
    return plan(*ops).reshape(graph.out_features, graph.in_features) * graph.scale


def estimate_adapter(source: Any, backend: BackendV2 | str | None = None, *, shots: int | None = 8192,
                     seed: int | None = None, probe: torch.Tensor | None = None, sampler: Any = None,
                     optimization_level: int = 1, mitigation: Any = None,
                     device: Device | None = None) -> AdapterEstimate:
    """Estimate every unitary node of a linear, additive adapter (e.g. Quantum-PEFT's ``U`` and
    ``V``) with its signs on ``backend`` (or ``device``), and compare the update ``ΔW`` — and the
    output on ``probe`` (default: 16 random rows) — built from the estimates with the exact ones.
    The report's ``cost`` holds the device's circuits, shots and estimated QPU seconds."""
    graph, module = resolve_graph_module(source)
    if not graph.is_linear or graph.mode != "add" or graph.shared_legs:
        raise ConfigError("estimate_adapter needs a linear, additive graph without pass-through legs "
                          f"(graph {graph.name or ''!s} is not)", field="source")
    unitary = [n for n, nd in graph.nodes.items() if isinstance(nd, Unitary)]
    if not unitary or any(nd.batch_shape for nd in graph.nodes.values() if isinstance(nd, Unitary)):
        raise ConfigError("estimate_adapter needs unbatched unitary nodes", field="source")
    dev = _device(device, backend, shots, seed, sampler, optimization_level, mitigation)
    report = AdapterEstimate(backend=dev.name)
    tensors = {}
    for name in unitary:
        est = estimate_signed_frame(module, name, device=dev)
        report.frames[name] = est
        tensors[name] = torch.as_tensor(est.frame, dtype=torch.float64)
    exact = adapter_update(graph, module, {n: torch.as_tensor(report.frames[n].frame_exact) for n in unitary})
    approx = adapter_update(graph, module, tensors)
    report.delta_norm = float(torch.linalg.norm(exact))
    x = probe if probe is not None else torch.randn(16, graph.in_features, dtype=torch.float64,
                                                    generator=torch.Generator().manual_seed(0))
    x = x.to(torch.float64)
    y, y_hat = x @ exact.T, x @ approx.T
    if report.delta_norm > 0:
        report.delta_error = float(torch.linalg.norm(approx - exact)) / report.delta_norm
        report.output_error = float(torch.linalg.norm(y_hat - y) / torch.linalg.norm(y).clamp_min(1e-300))
    report.cost = dev.stats.to_dict()
    return report
