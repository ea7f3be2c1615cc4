r"""Estimate unitary nodes from shots, with the shot noise that bounds the estimate.

**Shot noise.** A probability ``p`` estimated from ``S`` shots has standard error
``σ = √(p(1−p)/S)``. :func:`shot_noise_bound` gives, for ``m`` estimated cells, the Bernstein
bound ``t = (L/3 + √(L²/9 + 2·S·L·p(1−p)))/S`` with ``L = ln(2m/δ)``: with probability at least
``1 − δ`` every ``|p̂ − p| ≤ t`` at once (a union bound over the cells; no normal approximation, so
it holds for ``p`` near 0 or 1 too). :class:`ShotReport` compares the estimate with the exact
values against both.

**Unitary nodes.** Column ``j`` of a node is the circuit applied to ``|j⟩``: preparing ``|j⟩``
(``X`` on the set bits of ``j``), running the node's circuit and measuring gives the column's
probabilities ``|U_ij|²`` (:func:`estimate_unitary`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from tnpeft.errors import ConfigError, GraphError
from tnpeft.graph import Graph, Unitary
from tnpeft.quantum.backends import sample_probabilities
from tnpeft.quantum.compile import frame_matrices, to_qiskit
from tnpeft.quantum.synthesis import apply_circuit_columns
from tnpeft.runtime import GraphModule
from tnpeft.storage import resolve_graph_module

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit
    from qiskit.providers import BackendV2


def unitary_node(graph: Graph, node: str | None) -> str:
    """``node`` checked to be a unitary node of ``graph``; without one, the graph's only unitary node
    that is not generated (a :class:`GraphError` names the candidates otherwise)."""
    if node is None:
        unitary = [n for n, nd in graph.nodes.items() if isinstance(nd, Unitary) and n not in graph.generated]
        if len(unitary) != 1:
            raise GraphError(f"the graph has unitary nodes {unitary}; name the one to estimate with node=")
        return unitary[0]
    if not isinstance(graph.nodes.get(node), Unitary):
        raise GraphError(f"node {node!r} is not a unitary node of the graph (unitary nodes: "
                         f"{[n for n, nd in graph.nodes.items() if isinstance(nd, Unitary)]})", node=node)
    return node


def shot_noise_bound(p: Any, shots: int, *, delta: float = 1e-3, cells: int | None = None) -> np.ndarray:
    """The Bernstein bound ``t`` per cell such that, with probability ≥ ``1 − delta``, all ``cells``
    (default: ``p.size``) estimates from ``shots`` shots satisfy ``|p̂ − p| ≤ t`` at once:
    ``t = (L/3 + √(L²/9 + 2·S·L·p(1−p)))/S``, ``L = ln(2·cells/δ)``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}", field="delta")
    m = cells if cells is not None else max(1, p.size)
    big_l = math.log(2 * m / delta)
    s = float(shots)
    return (big_l / 3 + np.sqrt(big_l ** 2 / 9 + 2 * s * big_l * p * (1 - p))) / s


@dataclass
class ShotReport:
    """Probabilities estimated from shots beside their exact values.

    Attributes:
        estimate, exact: arrays of one shape.
        shots: shots per circuit.
        delta: the bound's failure probability.
    """

    estimate: np.ndarray
    exact: np.ndarray
    shots: int
    delta: float = 1e-3

    @property
    def error(self) -> np.ndarray:
        return self.estimate - self.exact

    @property
    def std_error(self) -> np.ndarray:
        """Predicted shot-noise standard error per cell, ``√(p(1−p)/S)``."""
        p = np.clip(self.exact, 0, 1)
        return np.sqrt(p * (1 - p) / self.shots)

    @property
    def bound(self) -> np.ndarray:
        """The simultaneous Bernstein bound per cell (:func:`shot_noise_bound`)."""
        return shot_noise_bound(self.exact, self.shots, delta=self.delta)

    @property
    def max_error(self) -> float:
        return float(np.abs(self.error).max())

    @property
    def rms_error(self) -> float:
        return float(np.sqrt(np.mean(self.error ** 2)))

    @property
    def predicted_rms(self) -> float:
        """The RMS error shot noise alone predicts, ``√(mean p(1−p)/S)``."""
        return float(np.sqrt(np.mean(self.std_error ** 2)))

    @property
    def max_z(self) -> float:
        """The largest ``|p̂ − p| / σ`` over cells with ``σ > 0``."""
        s = self.std_error
        mask = s > 0
        return float((np.abs(self.error)[mask] / s[mask]).max()) if mask.any() else 0.0

    @property
    def within_bound(self) -> bool:
        """Whether every cell is within its shot-noise bound (expected for a noiseless backend)."""
        return bool(np.all(np.abs(self.error) <= self.bound))

    def to_dict(self) -> dict[str, Any]:
        return {"shots": self.shots, "cells": int(self.exact.size), "max_error": self.max_error,
                "rms_error": self.rms_error, "predicted_rms": self.predicted_rms, "max_z": self.max_z,
                "max_bound": float(self.bound.max()), "delta": self.delta, "within_bound": self.within_bound}

    def __str__(self) -> str:
        d = self.to_dict()
        return (f"{d['cells']} probabilities from {self.shots} shots: max |p̂−p| = {d['max_error']:.4f} "
                f"(bound {d['max_bound']:.4f} at δ={self.delta:g}: {'within' if self.within_bound else 'OUTSIDE'}), "
                f"RMS {d['rms_error']:.4f} vs {d['predicted_rms']:.4f} predicted by shot noise")


@dataclass
class UnitaryEstimate(ShotReport):
    """``|U_ij|²`` of a unitary node (``N×K``) estimated column by column.

    ``leakage[j]`` is the measured probability of column ``j`` outside the first ``N`` basis states
    (exactly 0 for the ideal circuit; noise makes it positive).
    """

    node: str | None = None
    leakage: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "rows": int(self.exact.shape[0]), "cols": int(self.exact.shape[1]),
                **super().to_dict(), "max_leakage": float(self.leakage.max()) if self.leakage.size else 0.0}

    def __str__(self) -> str:
        return f"{self.node or 'frame'} {self.exact.shape[0]}×{self.exact.shape[1]}: {super().__str__()}"


def _column_circuits(qc: QuantumCircuit, k: int, label: str) -> list[QuantumCircuit]:
    from qiskit import QuantumCircuit

    out = []
    for j in range(k):
        c = QuantumCircuit(qc.num_qubits, name=f"{label}_col{j}")
        for q in range(qc.num_qubits):
            if (j >> q) & 1:
                c.x(q)
        c.compose(qc, inplace=True)
        out.append(c)
    return out


def circuit_frame(qc: QuantumCircuit) -> np.ndarray:
    """The frame a circuit implements, ``(rows, cols)`` real: its first ``cols`` basis states
    mapped through it, restricted to the first ``rows`` amplitudes (``rows``/``cols`` from the
    metadata :func:`tnpeft.quantum.to_qiskit` writes, else the whole register)."""
    md = qc.metadata or {}
    dim = 1 << qc.num_qubits
    rows, cols = int(md.get("rows", dim)), int(md.get("cols", dim))
    states = np.zeros((dim, cols))
    states[np.arange(cols), np.arange(cols)] = 1.0
    return apply_circuit_columns(qc, states)[:rows].real


def estimate_unitary(source: Any, node: str | None = None, backend: BackendV2 | None = None, *, shots: int = 4096,
                     index: int | tuple[int, ...] | None = None, seed: int | None = None, delta: float = 1e-3,
                     sampler: Any = None, optimization_level: int = 1,
                     max_synthesis_qubits: int | None = None) -> UnitaryEstimate | dict[str, UnitaryEstimate]:
    """Estimate a unitary node's ``|U_ij|²`` from ``shots`` shots per column on ``backend``.

    ``source`` is a graph or graph module with ``node``/``index`` selecting one frame as in
    :func:`tnpeft.quantum.to_qiskit` (a batched node needs ``index``; exact values come from the
    node's parameters in float64), a frame module, a ``QuantumCircuit`` that
    :func:`~tnpeft.quantum.to_qiskit` returned (or any circuit: exact values from simulating it),
    or the ``{name: circuit}`` dict it returns (→ ``{name: UnitaryEstimate}`` for its unitary
    circuits).
    """
    from qiskit import QuantumCircuit

    if isinstance(source, Mapping):
        return {name: cast(UnitaryEstimate, estimate_unitary(qc, None, backend, shots=shots, seed=seed, delta=delta, sampler=sampler,
                                       optimization_level=optimization_level))
                for name, qc in source.items() if (qc.metadata or {}).get("kind", "unitary") == "unitary"}
    if isinstance(source, QuantumCircuit):
        u = circuit_frame(source)
        label = node or (source.metadata or {}).get("node") or source.name
        qc = source
    else:
        kw: dict[str, Any] = {} if max_synthesis_qubits is None else {"max_synthesis_qubits": max_synthesis_qubits}
        if isinstance(source, (Graph, GraphModule)):
            graph, module = resolve_graph_module(source)
            node = unitary_node(graph, node)
            frames = module.get_submodule(node)
        else:
            frames = source
        qc = to_qiskit(source, node, index=index, **kw) if node is not None else to_qiskit(source, index=index, **kw)
        if isinstance(qc, list):
            raise GraphError(f"node {node!r} is batched ({len(qc)} frames): choose one with index=", node=node)
        assert not isinstance(qc, dict)   # one node (or one module): one circuit
        batch = tuple(getattr(frames, "batch", ()))
        flat = 0 if not batch else int(np.ravel_multi_index(tuple(qc.metadata["batch_index"]), batch))
        # a pow2 frame is projected from its circuit's padded rows: the circuit measures those
        u = circuit_frame(qc) if getattr(frames, "pow2", False) else frame_matrices(frames)[flat]
        label = node or "frame"
    n_rows, k = u.shape
    probs = sample_probabilities(_column_circuits(qc, k, label), backend, shots=shots, seed=seed, sampler=sampler,
                                 optimization_level=optimization_level)
    est = probs[:, :n_rows].T
    return UnitaryEstimate(est, u ** 2, shots, delta, node=label, leakage=1.0 - est.sum(axis=0))
