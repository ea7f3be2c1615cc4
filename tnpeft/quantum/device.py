r"""A quantum device that runs tnpeft's circuits: shots, mitigation, cost — and parameter shift.

:class:`Device` is what :func:`tnpeft.quantum.on_device` attaches to an adapter's quantum nodes
(the :class:`~tnpeft.circuits.parameter_shift.CircuitDevice` protocol): given a circuit and an
array of parameter values ``(B, P)`` it returns estimated outcome probabilities ``(B, 2ⁿ)``.

One request is one circuit *shape*: the circuit is compiled to Qiskit with its angles as
``Parameter``\ s, transpiled once for the backend (cached), and every row of values is a binding
of that one circuit — one primitive unit of work (a PUB ``(circuit, values, shots)``), however many
tokens, columns, layers or parameter shifts the rows stand for.

Two ways to run it:

- **locally** — the ideal device, ``generic``, a fake IBM device or an ``AerSimulator``: the
  circuit is simulated on its active qubits only (:mod:`tnpeft.quantum.local_sim`) — exact
  probabilities (statevector, or a density matrix with the device's gate noise, then its
  read-out errors); ``shots`` are multinomial draws from them, ``shots=None`` keeps the exact
  distribution (infinitely many shots);
- **on a sampler** — any other backend (real hardware) or an explicit ``sampler=``: one PUB per
  shape and scale through ``BackendSamplerV2(backend)`` or the sampler you pass (for IBM
  hardware, the runtime's sampler in a session with your account).

Mitigation (:mod:`tnpeft.quantum.mitigation`) is applied to the estimates: read-out inversion
(two calibration circuits per set of measured qubits, once per device) and zero-noise
extrapolation (each circuit at folding scales 1, 3, 5).

**Cost.** :attr:`Device.stats` counts circuits (bindings, including ZNE's scales and calibration),
shots, PUBs and calls, and the estimated QPU time ``Σ shots × (duration + repetition delay)`` with
the circuit's duration from the device's gate and measurement durations
(``QuantumCircuit.estimate_duration``) and its default repetition delay (250 µs on IBM devices).
Queueing, compilation on the provider's side and per-job overheads are not in the calibration data
and are not included.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tnpeft.circuits.circuit import Circuit
from tnpeft.errors import ConfigError
from tnpeft.quantum.compile import circuit_to_qiskit
from tnpeft.quantum.devices import backend_label, is_ideal, rep_delay, resolve_backend
from tnpeft.quantum.local_sim import (
    Reduced,
    gate_noise_model,
    readout_errors,
    reduce_circuit,
    reduce_target,
    simulate_probabilities,
)
from tnpeft.quantum.mitigation import (
    Mitigation,
    apply_readout,
    calibration_from,
    extrapolate,
    fold_two_qubit,
    mthree_inverse,
    parse_mitigation,
    project_simplex,
    readout_inverse,
)

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit


_UIDS = itertools.count()
#: the ideal device's basis: the logical circuit with CX and one-qubit rotations
IDEAL_BASIS = ["cx", "ry", "rz", "sx", "x", "h"]


@dataclass
class DeviceStats:
    """What a device has run: ``circuits`` (parameter bindings, ZNE scales and calibration
    included), ``shots``, ``pubs`` (circuit shapes × scales submitted), ``calls`` (requests),
    ``qpu_seconds`` (estimated), ``wall_seconds`` (spent here, simulating or waiting), and the
    circuits per purpose (``forward``, ``shift``, ``calibration``, …)."""

    circuits: int = 0
    shots: int = 0
    pubs: int = 0
    calls: int = 0
    qpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    by_purpose: dict[str, int] = field(default_factory=dict)

    def add(self, purpose: str, circuits: int, shots: int, pubs: int, qpu: float) -> None:
        self.circuits += circuits
        self.shots += shots
        self.pubs += pubs
        self.qpu_seconds += qpu
        self.by_purpose[purpose] = self.by_purpose.get(purpose, 0) + circuits

    def to_dict(self) -> dict[str, Any]:
        return {"circuits": self.circuits, "shots": self.shots, "pubs": self.pubs, "calls": self.calls,
                "qpu_seconds": round(self.qpu_seconds, 3), "wall_seconds": round(self.wall_seconds, 2),
                "circuits_by_purpose": dict(self.by_purpose)}


@dataclass
class Compiled:
    """One circuit shape on one backend: its parameters (in column order), and per ZNE scale the
    transpiled circuit, its reduction to the active qubits (local runs), its two-qubit gate count
    and its estimated duration (seconds, ``None`` when the backend states no durations)."""

    parameters: list[Any]
    isa: list[Any]
    reduced: list[Any]
    two_qubit: list[int]
    duration: list[float | None]
    physical: tuple[int, ...]
    uid: int = field(default_factory=lambda: next(_UIDS))


def _local(backend: Any) -> bool:
    try:
        from qiskit_aer import AerSimulator
    except ImportError:
        return False
    from qiskit.providers.fake_provider import GenericBackendV2

    return (isinstance(backend, (AerSimulator, GenericBackendV2))
            or type(backend).__module__.startswith("qiskit_ibm_runtime.fake_provider"))


def _bitarray_probabilities(bits: Any) -> np.ndarray:
    """``(B, 2^m)`` frequencies from a ``BitArray`` of shape ``(B,)``."""
    arr = np.asarray(bits.array, dtype=np.uint64)                       # (B, shots, bytes), big-endian bytes
    weights = np.uint64(256) ** np.arange(arr.shape[-1] - 1, -1, -1, dtype=np.uint64)
    ints = (arr * weights).sum(-1).reshape(-1, arr.shape[-2])           # (B, shots)
    b, s = ints.shape
    d = 1 << bits.num_bits
    flat = (ints + np.uint64(d) * np.arange(b, dtype=np.uint64)[:, None]).ravel().astype(np.int64)
    return np.bincount(flat, minlength=b * d).reshape(b, d) / s


class Device:
    """A quantum device for tnpeft's circuits (module docstring).

    Args:
        backend: ``"ideal"`` (default), ``"generic"``, a fake IBM device name (``"fake_torino"``),
            or any Qiskit ``BackendV2``.
        shots: shots per circuit (``None``: the exact distribution — local devices only).
        mitigation: ``None``/``"none"``, ``"readout"``, ``"zne"``, ``"readout+zne"``, ``"mthree"``, …
            (:func:`~tnpeft.quantum.mitigation.parse_mitigation`).
        seed: seeds the transpiler and the shots.
        sampler: a Qiskit V2 sampler to run the PUBs (real hardware); the circuits are transpiled
            for ``backend``, so pass the sampler's own backend.
        optimization_level: the transpiler's.
        remember: keep every estimate (and exact distribution) by circuit and values, so that the
            same circuit with the same values returns the same estimate (fixed weights for an
            evaluation) and changing :attr:`shots` redraws from distributions already simulated.
    """

    def __init__(self, backend: Any = "ideal", *, shots: int | None = 4096, mitigation: Any = None,
                 seed: int | None = None, sampler: Any = None, optimization_level: int = 1,
                 remember: bool = False):
        self.backend = resolve_backend(backend)
        self.name = backend_label(self.backend)
        self.ideal = is_ideal(self.backend)
        self.sampler = sampler
        self.local = sampler is None and _local(self.backend)
        self.mitigation: Mitigation = parse_mitigation(mitigation)
        self.fold_scales: tuple[int, ...] = self.mitigation.zne or (1,)   # what compile() folds
        self.shots = shots
        self.seed = seed
        self.optimization_level = optimization_level
        self.remember = remember
        self.rng = np.random.default_rng(seed)
        self.stats = DeviceStats()
        self.rep_delay = rep_delay(self.backend)
        self._compiled: dict[Any, Compiled] = {}
        self._noise: dict[tuple[int, ...], Any] = {}
        self._calibration: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        self._distributions: dict[Any, np.ndarray] = {}
        self._estimates: dict[Any, np.ndarray] = {}
        self._check()

    def _check(self) -> None:
        s = self.shots
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise ConfigError(f"shots must be a positive integer or None (exact), got {s!r}", field="shots")
        if s is None and not self.local:
            raise ConfigError(f"backend {self.name!r} runs on a sampler, which needs a number of shots", field="shots")
        if self.mitigation.readout == "mthree" and s is None:
            raise ConfigError("mthree mitigates counts: give a number of shots", field="mitigation")

    def __repr__(self) -> str:
        return (f"Device({self.name!r}, shots={self.shots}, mitigation={self.mitigation.label!r}, "
                f"{'local' if self.local else 'sampler'})")

    def forget_estimates(self) -> None:
        """Drop the remembered estimates (keep the simulated distributions): the next requests draw new shots."""
        self._estimates.clear()

    def configure(self, *, shots: Any = "keep", mitigation: Any = "keep") -> Device:
        """Change the shots and/or the mitigation (keeping compiled circuits and simulated
        distributions; ZNE needs the device to have been built with ZNE, whose folded circuits it
        compiles) and forget remembered estimates."""
        if shots != "keep":
            self.shots = shots
        if mitigation != "keep":
            m = parse_mitigation(mitigation)
            if m.zne and m.zne != self.fold_scales:
                raise ConfigError("this device compiled its circuits without ZNE's folds; build it with "
                                  "mitigation including 'zne' to switch ZNE on", field="mitigation")
            self.mitigation = m
        self._check()
        self.forget_estimates()
        return self

    # ------------------------------------------------------------------ compiling
    def compile(self, qc: QuantumCircuit, parameters: list[Any] | None = None, key: Any = None) -> Compiled:
        """Transpile ``qc`` (parameterized, without measurements) for the backend; kept under ``key``
        when one is given (then compiled once)."""
        from qiskit import transpile

        hit = self._compiled.get(key) if key is not None else None
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        measured = qc.copy()
        measured.measure_all()
        # the ideal device runs the logical circuit in a basis whose parameterized gates Aer binds
        # (its binding of parameterized controlled rotations is wrong), without a coupling map
        target = {"basis_gates": IDEAL_BASIS} if self.ideal else {"backend": self.backend}
        isa = transpile(measured, optimization_level=self.optimization_level, seed_transpiler=self.seed, **target)
        isas = [fold_two_qubit(isa, s) for s in self.fold_scales]   # scale 1 first: runs without ZNE use it
        reduced = [reduce_circuit(c) for c in isas]
        durations = []
        for c in isas:
            try:
                durations.append(float(c.estimate_duration(self.backend.target, unit="s")) if not self.ideal else None)
            except Exception:   # a backend without durations (simulators)
                durations.append(None)
        two = [sum(1 for i in c.data if i.operation.num_qubits == 2) for c in isas]
        params = parameters if parameters is not None else list(qc.parameters)
        out = Compiled(params, isas, reduced, two, durations, reduced[0].physical)
        if key is not None:
            self._compiled[key] = out
        self.stats.wall_seconds += time.perf_counter() - t0
        return out

    def compile_circuit(self, circuit: Circuit) -> Compiled:
        """A tnpeft :class:`~tnpeft.circuits.circuit.Circuit` (input-free: every angle a parameter)
        compiled with ``ParameterVector("theta")`` for its angles."""
        if circuit in self._compiled:
            return self._compiled[circuit]
        if circuit.n_inputs:
            raise ConfigError("a device runs input-free circuits; bind inputs as parameters first", field="circuit")
        qc = circuit_to_qiskit(circuit, np.zeros(circuit.n_params), parameters=True, name="tnpeft")
        params = sorted(qc.parameters, key=lambda p: p.index) if circuit.n_params else []
        return self.compile(qc, params, key=circuit)

    # ------------------------------------------------------------------ running
    def probabilities(self, circuit: Circuit, values: np.ndarray, *, purpose: str = "forward") -> np.ndarray:
        """Estimated probabilities ``(B, 2ⁿ)`` of ``circuit`` for each row of ``values`` ``(B, n_params)``."""
        return self.run(self.compile_circuit(circuit), np.asarray(values, dtype=np.float64).reshape(
            -1, circuit.n_params), purpose=purpose)

    def run(self, compiled: Compiled, values: np.ndarray | None, *, purpose: str = "forward") -> np.ndarray:
        """Estimated probabilities of a compiled circuit for each row of ``values`` (``None``: no parameters)."""
        t0 = time.perf_counter()
        rows = 1 if values is None else len(values)
        key = None
        if self.remember:
            key = (compiled.uid, None if values is None else values.tobytes(), self.shots, self.mitigation)
            if key in self._estimates:
                return self._estimates[key]
        scales = self.mitigation.zne or (1,)
        estimates = [self._measure(compiled, s, values) for s in range(len(scales))]
        qpu = sum(rows * self.shots * ((d or 0.0) + self.rep_delay)
                  for d in compiled.duration[:len(scales)]) if self.shots else 0.0
        self.stats.add(purpose, rows * len(scales), rows * len(scales) * (self.shots or 0), len(scales), qpu)
        self.stats.calls += 1
        est = np.stack(estimates)                                     # (L, B, D)
        if self.mitigation.readout:
            e0, e1 = self.calibration(compiled.physical)
            if self.mitigation.readout == "mthree":
                est = np.stack([mthree_inverse(np.rint(e * self.shots), e0, e1) for e in est])
            else:
                est = readout_inverse(est, e0, e1, project=not self.mitigation.zne)
        if self.mitigation.zne:
            est = project_simplex(extrapolate(est, scales, self.mitigation.zne_fit))
        else:
            est = est[0]
        self.stats.wall_seconds += time.perf_counter() - t0
        if key is not None:
            self._estimates[key] = est
        return est

    def distribution(self, compiled: Compiled, scale_index: int, values: np.ndarray | None) -> np.ndarray:
        """The exact distribution the device reports (gate noise, then read-out errors), ``(B, 2^m)``:
        local devices only."""
        if not self.local:
            raise ConfigError(f"backend {self.name!r} is not simulated here: its distributions are only sampled",
                              field="backend")
        key = (compiled.uid, scale_index, None if values is None else values.tobytes())
        if self.remember and key in self._distributions:
            return self._distributions[key]
        red: Reduced = compiled.reduced[scale_index]
        noise = None if self.ideal else self._noise_model(red.active)
        p = simulate_probabilities(red, values, compiled.parameters, noise_model=noise, seed=self.seed)
        if not self.ideal:
            e0, e1 = readout_errors(self.backend.target, red.physical)
            p = apply_readout(p, e0, e1)
        p = np.clip(p, 0.0, None)
        p = p / p.sum(-1, keepdims=True)
        if self.remember:
            self._distributions[key] = p
        return p

    def _noise_model(self, active: tuple[int, ...]) -> Any:
        if active not in self._noise:
            self._noise[active] = gate_noise_model(reduce_target(self.backend.target, active))
        return self._noise[active]

    def _measure(self, compiled: Compiled, s: int, values: np.ndarray | None) -> np.ndarray:
        if self.local:
            p = self.distribution(compiled, s, values)
            if self.shots is None:
                return p
            return self.rng.multinomial(self.shots, p) / self.shots
        return self._sample(compiled.isa[s], values)

    def _sample(self, isa: QuantumCircuit, values: np.ndarray | None) -> np.ndarray:
        from qiskit.primitives import BackendSamplerV2

        sampler = self.sampler
        if sampler is None:
            opts: dict[str, Any] = {"default_shots": self.shots}
            if self.seed is not None:
                opts["seed_simulator"] = self.seed
            sampler = BackendSamplerV2(backend=self.backend, options=opts)
        pub = (isa,) if values is None else (isa, values)
        result = sampler.run([pub], shots=self.shots).result()
        data = result[0].data
        bits = getattr(data, "meas", None) or next(iter(data.values()))
        return _bitarray_probabilities(bits).reshape(-1, 1 << bits.num_bits)

    # ------------------------------------------------------------------ calibration
    def calibration(self, physical: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(P(1|0), P(0|1))`` of the measured qubits ``physical``: from two calibration circuits run
        on the device (once per set of qubits), or from the device's reported calibration."""
        key = (physical, self.shots, self.mitigation.calibration)
        if key in self._calibration:
            return self._calibration[key]
        if self.ideal:
            out = (np.zeros(len(physical)), np.zeros(len(physical)))
        elif self.mitigation.calibration == "reported":
            out = readout_errors(self.backend.target, physical)
        else:
            out = calibration_from(*self._calibration_runs(physical))
        self._calibration[key] = out
        return out

    def _calibration_runs(self, physical: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        from qiskit import QuantumCircuit

        dists = []
        for bit in (0, 1):
            qc = QuantumCircuit(self.backend.num_qubits, len(physical), name=f"calibration_{bit}")
            for i, q in enumerate(physical):
                if bit:
                    qc.x(q)
                qc.measure(q, i)
            if self.local:
                red = reduce_circuit(qc)
                noise = self._noise_model(red.active)
                p = simulate_probabilities(red, None, [], noise_model=noise, seed=self.seed)
                p = apply_readout(p, *readout_errors(self.backend.target, red.physical))
                p = np.clip(p, 0, None) / p.sum(-1, keepdims=True)
                dists.append(p[0] if self.shots is None else self.rng.multinomial(self.shots, p[0]) / self.shots)
            else:
                dists.append(self._sample(qc, None)[0])
        dur = 0.0
        self.stats.add("calibration", 2, 2 * (self.shots or 0), 2, 2 * (self.shots or 0) * (dur + self.rep_delay))
        return dists[0], dists[1]
