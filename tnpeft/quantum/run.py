r"""Transpile circuits to a backend, run them, and estimate adapters from shots.

Any Qiskit ``BackendV2`` works: ``qiskit_aer.AerSimulator()`` (noiseless, the default),
``AerSimulator.from_backend(b)`` (``b``'s noise model), ``GenericBackendV2``, a provider's fake
or real device. Circuits are transpiled to the backend's target (basis gates, coupling map) and
run through ``qiskit.primitives.BackendSamplerV2``, or through a sampler you pass (e.g. a
provider's ``SamplerV2``). Access to real hardware — an account, a token, a provider package — is
the user's to bring; tnpeft only needs the backend (or sampler) object.

**Shot noise.** A probability ``p`` estimated from ``S`` shots has standard error
``σ = √(p(1−p)/S)``. :func:`shot_noise_bound` gives, for ``m`` estimated cells, the Bernstein
bound ``t = (L/3 + √(L²/9 + 2·S·L·p(1−p)))/S`` with ``L = ln(2m/δ)``: with probability at least
``1 − δ`` every ``|p̂ − p| ≤ t`` at once (a union bound over the cells; no normal approximation, so
it holds for ``p`` near 0 or 1 too). :class:`ShotReport` compares the estimate with the exact
values against both.

**Unitary nodes.** Column ``j`` of a node is the circuit applied to ``|j⟩``: preparing ``|j⟩``
(``X`` on the set bits of ``j``), running the node's circuit and measuring gives the column's
probabilities ``|U_ij|²`` (:func:`estimate_unitary`).

**QPA.** :func:`estimate_qpa` measures the generator's circuit, feeds the sampled ``p̂_i`` of the
first ``n_ch`` basis states to the mapping network, and reports the effect on the generated LoRA
weights; :func:`measured_probabilities` makes the adapter itself (forward, ``dense()``, merging)
use measured probabilities — the quantum-in-the-loop path, in which gradients still reach the
mapping network.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tnpeft.errors import ConfigError, GraphError
from tnpeft.quantum.compile import _resolve, frame_matrices, to_qiskit

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit
    from qiskit.providers import BackendV2

    from tnpeft.graph import Graph, GraphModule


# ------------------------------------------------------------------------------ backends
def aer_simulator(noise_from: BackendV2 | None = None, *, seed: int | None = None) -> BackendV2:
    """``qiskit_aer.AerSimulator()`` — noiseless — or, given a backend, ``AerSimulator.from_backend``
    (its target and noise model). Raises :class:`ConfigError` if ``qiskit-aer`` is missing."""
    try:
        from qiskit_aer import AerSimulator
    except ImportError:
        raise ConfigError("running circuits locally needs qiskit-aer (pip install qiskit-aer, or tnpeft's "
                          "'quantum' extra); or pass a backend or sampler of your own", field="backend") from None
    opts = {} if seed is None else {"seed_simulator": seed}
    return AerSimulator(**opts) if noise_from is None else AerSimulator.from_backend(noise_from, **opts)


def transpile_for(circuits: Any, backend: BackendV2, *, optimization_level: int = 1, seed: int | None = None) -> Any:
    """Transpile a circuit, a list of circuits or a ``{name: circuit}`` dict to ``backend``'s
    basis gates and coupling map (``qiskit.transpile``); returns the same shape."""
    from qiskit import QuantumCircuit, transpile

    if isinstance(circuits, QuantumCircuit):
        return transpile(circuits, backend=backend, optimization_level=optimization_level, seed_transpiler=seed)
    if isinstance(circuits, Mapping):
        keys = list(circuits)
        out = transpile([circuits[k] for k in keys], backend=backend, optimization_level=optimization_level,
                        seed_transpiler=seed)
        return dict(zip(keys, out))
    return list(transpile(list(circuits), backend=backend, optimization_level=optimization_level,
                          seed_transpiler=seed))


def circuit_stats(circuit: QuantumCircuit) -> dict[str, Any]:
    """Qubits, depth, gate count, two-qubit gate count and gate histogram of a circuit."""
    ops = {str(k): int(v) for k, v in circuit.count_ops().items()}
    two = sum(1 for inst in circuit.data if inst.operation.num_qubits == 2)
    return {"qubits": circuit.num_qubits, "depth": circuit.depth(), "size": circuit.size(), "two_qubit": two,
            "ops": ops}


def sample_probabilities(circuits: Sequence[QuantumCircuit], backend: BackendV2 | None = None, *, shots: int = 4096,
                         seed: int | None = None, sampler: Any = None, optimization_level: int = 1) -> np.ndarray:
    """Measure every qubit of each circuit ``shots`` times; return the estimated probabilities,
    shape ``(len(circuits), 2ⁿ)``, index = basis state (qubit ``q`` = bit ``q``).

    ``backend`` (default: a noiseless :func:`aer_simulator`) is what the circuits are transpiled
    to; ``sampler`` (default ``BackendSamplerV2(backend=backend)``) runs them — pass a provider's
    sampler to run on its hardware. ``seed`` seeds the transpiler and, for simulators, the shots.
    All circuits must have the same number of qubits and no unbound parameters.
    """
    from qiskit.primitives import BackendSamplerV2

    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ConfigError(f"shots must be a positive integer, got {shots!r}", field="shots")
    circuits = list(circuits)
    if not circuits:
        return np.zeros((0, 0))
    n = circuits[0].num_qubits
    for qc in circuits:
        if qc.parameters:
            raise ConfigError(f"circuit {qc.name!r} has unbound parameters {[p.name for p in qc.parameters][:4]}; "
                              "bind them (assign_parameters) before sampling", field="parameters")
        if qc.num_qubits != n:
            raise ConfigError(f"circuits to sample together must have one width; got {n} and {qc.num_qubits} qubits",
                              field="circuits")
    measured = []
    for qc in circuits:
        m = qc.copy()
        m.measure_all()
        measured.append(m)
    if backend is None and sampler is None:
        backend = aer_simulator()
    if backend is not None:
        measured = transpile_for(measured, backend, optimization_level=optimization_level, seed=seed)
    if sampler is None:
        opts: dict[str, Any] = {"default_shots": shots}
        if seed is not None:
            opts["seed_simulator"] = seed
        sampler = BackendSamplerV2(backend=backend, options=opts)
    result = sampler.run(measured, shots=shots).result()
    probs = np.zeros((len(circuits), 1 << n))
    for i, pub in enumerate(result):
        counts = pub.data.meas.get_int_counts()
        total = sum(counts.values())
        for state, c in counts.items():
            probs[i, state] = c / total
    return probs


# ------------------------------------------------------------------------------ shot noise
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


def estimate_unitary(source: Any, node: str | None = None, backend: BackendV2 | None = None, *, shots: int = 4096,
                     index: int | tuple[int, ...] | None = None, seed: int | None = None, delta: float = 1e-3,
                     sampler: Any = None, optimization_level: int = 1,
                     max_synthesis_qubits: int | None = None) -> UnitaryEstimate:
    """Estimate a unitary node's ``|U_ij|²`` from ``shots`` shots per column on ``backend``.

    ``source``/``node``/``index`` select one frame as in :func:`tnpeft.quantum.to_qiskit` (a batched
    node needs ``index``). Exact values come from the node's parameters in float64.
    """
    from qiskit import QuantumCircuit

    from tnpeft.graph import Graph, GraphModule
    from tnpeft.graph.nodes import Unitary

    kw = {} if max_synthesis_qubits is None else {"max_synthesis_qubits": max_synthesis_qubits}
    if isinstance(source, (Graph, GraphModule)):
        graph, module = _resolve(source)
        if node is None:
            unitary = [n for n, nd in graph.nodes.items() if isinstance(nd, Unitary) and n not in graph.generated]
            if len(unitary) != 1:
                raise GraphError(f"the graph has unitary nodes {unitary}; name the one to estimate with node=")
            node = unitary[0]
        if not isinstance(graph.nodes.get(node), Unitary):
            raise GraphError(f"node {node!r} is not a unitary node of the graph (unitary nodes: "
                             f"{[n for n, nd in graph.nodes.items() if isinstance(nd, Unitary)]})", node=node)
        frames = module.get_submodule(node)
    else:
        frames = source
    qc = to_qiskit(source, node, index=index, **kw) if node is not None else to_qiskit(source, index=index, **kw)
    if isinstance(qc, list):
        raise GraphError(f"node {node!r} is batched ({len(qc)} frames): choose one with index=", node=node)
    batch = tuple(getattr(frames, "batch", ()))
    flat = 0 if not batch else int(np.ravel_multi_index(tuple(qc.metadata["batch_index"]), batch))
    u = frame_matrices(frames)[flat]
    n_rows, k = u.shape
    circuits = []
    for j in range(k):
        c = QuantumCircuit(qc.num_qubits, name=f"{node or 'frame'}_col{j}")
        for q in range(qc.num_qubits):
            if (j >> q) & 1:
                c.x(q)
        c.compose(qc, inplace=True)
        circuits.append(c)
    probs = sample_probabilities(circuits, backend, shots=shots, seed=seed, sampler=sampler,
                                 optimization_level=optimization_level)
    est = probs[:, :n_rows].T
    return UnitaryEstimate(est, u ** 2, shots, delta, node=node, leakage=1.0 - est.sum(axis=0))


# ------------------------------------------------------------------------------ QPA
def _generator(graph: Graph, generator: str | None) -> str:
    qpa = [n for n, g in graph.generators.items() if g.kind == "qpa"]
    if generator is None:
        if len(qpa) != 1:
            raise GraphError(f"the graph has qpa generators {qpa}; name one with generator=")
        return qpa[0]
    if generator not in qpa:
        raise GraphError(f"no qpa generator named {generator!r}; the graph has {qpa}", node=generator)
    return generator


def _exact_qpa_probs(gen: torch.nn.Module) -> np.ndarray:
    from tnpeft.params.circuit import probabilities, simulate

    with torch.no_grad():
        state = simulate(gen.circuit, gen.theta.detach().to(torch.float64))
    return probabilities(state).cpu().numpy()


@contextmanager
def measured_probabilities(source: Any, probs: Any, generator: str | None = None) -> Iterator[GraphModule]:
    """Inside the block, QPA generator ``generator`` uses ``probs`` (the measured probabilities of
    its first ``n_ch`` basis states) instead of simulating its circuit: the adapter's forward pass,
    ``dense()`` and merging all see weights generated from the measurements, and gradients still
    reach the mapping network. Yields the graph module.

    A training loop that re-measures the circuit every step (with the current angles) and trains
    inside this block is quantum-in-the-loop; the circuit angles themselves get no gradient from
    sampled probabilities.
    """
    graph, module = _resolve(source)
    name = _generator(graph, generator)
    gen = module.get_submodule(name)
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64)).to(gen.theta.device, gen.theta.dtype)
    if p.shape != (gen.shape.n_chunks,):
        raise ConfigError(f"generator {name!r} reads the probabilities of its first {gen.shape.n_chunks} basis "
                          f"states, got shape {tuple(p.shape)}", field="probs")
    previous = gen.__dict__.get("_override")
    gen.set_probabilities(p)
    module.clear_generated(name)
    try:
        yield module
    finally:
        gen.set_probabilities(previous)
        module.clear_generated(name)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(torch.linalg.norm(b))
    return float(torch.linalg.norm(a - b)) / den if den > 0 else float(torch.linalg.norm(a - b))


@dataclass
class QPAEstimate(ShotReport):
    """QPA's ``p_i`` (first ``n_ch`` basis states) from shots, and the LoRA weights generated from them.

    Attributes:
        generator: the generator's name.
        weights: ``{node: tensor}`` generated from the measured probabilities.
        exact_weights: the same from the exact probabilities.
        node_errors: ``{node: ‖W_measured − W_exact‖_F / ‖W_exact‖_F}``.
        value_error: the same over all generated values together.
        shot_value_error: mean and standard deviation of ``value_error`` over ``trials`` ideal
            multinomial samples of ``shots`` shots (drawn classically from the exact distribution):
            the error shot noise alone explains.
        delta_error: relative error of the materialized update ``ΔW`` (``None`` for an adapter
            that cannot be materialized).
    """

    generator: str = ""
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    exact_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    node_errors: dict[str, float] = field(default_factory=dict)
    value_error: float = 0.0
    shot_value_error: tuple[float, float] = (0.0, 0.0)
    delta_error: float | None = None

    @property
    def noise_factor(self) -> float:
        """``value_error`` over the shot-noise expectation: ≈ 1 on a noiseless backend; larger
        when device noise (gate and read-out errors) adds to shot noise."""
        return self.value_error / self.shot_value_error[0] if self.shot_value_error[0] > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"generator": self.generator, **super().to_dict(), "node_errors": self.node_errors,
                "value_error": self.value_error, "shot_value_error_mean": self.shot_value_error[0],
                "shot_value_error_std": self.shot_value_error[1], "noise_factor": self.noise_factor,
                "delta_error": self.delta_error}

    def __str__(self) -> str:
        d = self.to_dict()
        delta = "" if self.delta_error is None else f", ΔW {self.delta_error:.2%}"
        return (f"{self.generator}: {super().__str__()}\n  generated weights from measured p: relative error "
                f"{self.value_error:.2%} (shot noise alone: {d['shot_value_error_mean']:.2%} ± "
                f"{d['shot_value_error_std']:.2%}; ×{self.noise_factor:.2f}){delta}; per node "
                + ", ".join(f"{k} {v:.2%}" for k, v in self.node_errors.items()))


def estimate_qpa(source: Any, generator: str | None = None, backend: BackendV2 | None = None, *, shots: int = 4096,
                 seed: int | None = None, delta: float = 1e-3, sampler: Any = None, optimization_level: int = 1,
                 trials: int = 32) -> QPAEstimate:
    """Measure a QPA generator's circuit on ``backend`` (default: noiseless Aer), generate the LoRA
    weights from the sampled probabilities and report the error against the exact ones, beside the
    error shot noise alone predicts (``trials`` classical multinomial draws, seeded by ``seed``)."""
    graph, module = _resolve(source)
    name = _generator(graph, generator)
    gen = module.get_submodule(name)
    n_ch = gen.shape.n_chunks
    qc = to_qiskit(module, name)
    est = sample_probabilities([qc], backend, shots=shots, seed=seed, sampler=sampler,
                               optimization_level=optimization_level)[0]
    full = _exact_qpa_probs(gen)
    exact = full[:n_ch]

    def values(p: np.ndarray) -> dict[str, torch.Tensor]:
        t = torch.as_tensor(p).to(gen.theta.device, gen.theta.dtype)
        return {k: v.detach().clone() for k, v in module.generated_values(name, probs=t).items()}

    def flat(w: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([v.reshape(-1).to(torch.float64) for v in w.values()])

    with torch.no_grad():
        measured, ideal = values(est[:n_ch]), values(exact)
        errors = {k: _rel(measured[k].double(), ideal[k].double()) for k in ideal}
        value_error = _rel(flat(measured), flat(ideal))
        rng = np.random.default_rng(seed)
        pk = full / full.sum()
        draws = [_rel(flat(values(rng.multinomial(shots, pk)[:n_ch] / shots)), flat(ideal)) for _ in range(trials)]
        delta_error = None
        if graph.is_linear:
            with measured_probabilities(module, exact, name):
                w_exact = module.dense(scaled=True).double()
            with measured_probabilities(module, est[:n_ch], name):
                w_meas = module.dense(scaled=True).double()
            delta_error = _rel(w_meas, w_exact)
    return QPAEstimate(est[:n_ch], exact, shots, delta, generator=name, weights=measured, exact_weights=ideal,
                       node_errors=errors, value_error=value_error,
                       shot_value_error=(float(np.mean(draws)), float(np.std(draws))) if draws else (0.0, 0.0),
                       delta_error=delta_error)
