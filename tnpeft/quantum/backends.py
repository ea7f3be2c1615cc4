r"""Run circuits: transpile them to a backend and sample them.

Any Qiskit ``BackendV2`` works: ``qiskit_aer.AerSimulator()`` (noiseless, the default),
``AerSimulator.from_backend(b)`` (``b``'s noise model), ``GenericBackendV2``, a provider's fake
or real device. Circuits are transpiled to the backend's target (basis gates, coupling map) and
run through ``qiskit.primitives.BackendSamplerV2``, or through a sampler you pass (e.g. a
provider's ``SamplerV2``). Access to real hardware — an account, a token, a provider package — is
the user's to bring; tnpeft only needs the backend (or sampler) object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tnpeft.errors import ConfigError
from tnpeft.quantum.device import Device

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit
    from qiskit.providers import BackendV2


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


def sample_probabilities(circuits: Any, backend: BackendV2 | str | None = None, *, shots: int = 4096,
                         seed: int | None = None, sampler: Any = None, optimization_level: int = 1) -> Any:
    """Measure every qubit of each circuit ``shots`` times and return the estimated probabilities
    (index = basis state, qubit ``q`` = bit ``q``).

    ``circuits`` is one ``QuantumCircuit`` (→ an array ``(2ⁿ,)``), a sequence of circuits of one
    width (→ ``(len, 2ⁿ)``), or a ``{name: circuit}`` dict such as :func:`tnpeft.quantum.to_qiskit`
    returns (→ ``{name: array}``; widths may differ). ``backend`` (default: a noiseless
    :func:`aer_simulator`) is what the circuits are transpiled to; ``sampler`` — any Qiskit V2
    sampler (``BaseSamplerV2``: ``StatevectorSampler``, qiskit-aer's ``SamplerV2``, a provider's
    ``SamplerV2(mode=backend)``) — runs them; by default ``BackendSamplerV2(backend=backend)``.
    Pass a hardware sampler together with its backend, so that the circuits are transpiled to its
    target. ``seed`` seeds the transpiler and, for simulators, the shots. Circuits must have no
    unbound parameters. A device *name* (``"ideal"``, ``"generic"``, ``"fake_torino"``, …) runs
    on a :class:`~tnpeft.quantum.device.Device` (its noise simulated on the qubits in use).
    """
    from qiskit import QuantumCircuit
    from qiskit.primitives import BackendSamplerV2

    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ConfigError(f"shots must be a positive integer, got {shots!r}", field="shots")
    if isinstance(circuits, QuantumCircuit):
        return sample_probabilities([circuits], backend, shots=shots, seed=seed, sampler=sampler,
                                    optimization_level=optimization_level)[0]
    names = list(circuits) if isinstance(circuits, Mapping) else None
    items = [circuits[k] for k in names] if names is not None else list(circuits)
    if not items:
        return {} if names is not None else np.zeros((0, 0))
    for qc in items:
        if not isinstance(qc, QuantumCircuit):
            raise ConfigError(f"expected Qiskit QuantumCircuits, got a {type(qc).__name__}", field="circuits")
        if qc.parameters:
            raise ConfigError(f"circuit {qc.name!r} has unbound parameters {[p.name for p in qc.parameters][:4]}; "
                              "bind them (assign_parameters) before sampling", field="parameters")
    if names is None and len({qc.num_qubits for qc in items}) > 1:
        raise ConfigError(f"circuits sampled as a list must have one width; got {sorted({qc.num_qubits for qc in items})} "
                          "qubits (pass a {name: circuit} dict to sample circuits of several widths)", field="circuits")
    if isinstance(backend, str):
        dev = Device(backend, shots=shots, seed=seed, sampler=sampler, optimization_level=optimization_level)
        probs = [dev.run(dev.compile(qc, []), None)[0] for qc in items]
        return dict(zip(names, probs)) if names is not None else np.stack(probs)
    measured = []
    for qc in items:
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
    probs = []
    for qc, pub in zip(items, result):
        counts = pub.data.meas.get_int_counts()
        total = sum(counts.values())
        p = np.zeros(1 << qc.num_qubits)
        for state, c in counts.items():
            p[state] = c / total
        probs.append(p)
    if names is not None:
        return dict(zip(names, probs))
    return np.stack(probs)
