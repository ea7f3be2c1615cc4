r"""Simulate a transpiled circuit on only the qubits it touches, with those qubits' noise.

A 133-qubit device's full noise model takes 10–20 s to build and its simulator pays for every
qubit; a circuit of an adapter touches a handful. :func:`reduce_circuit` copies the instructions
of a transpiled (ISA) circuit onto a register of just its *active* qubits (those any gate or
measurement touches), :func:`reduce_target` keeps the calibration of those qubits and of the
couplers among them, and :func:`gate_noise_model` builds Aer's noise model (depolarizing and
thermal relaxation per gate, from the device's errors, T1, T2 and durations — the same public
builders ``NoiseModel.from_backend`` uses) on that small target. The probabilities come from one
density-matrix run per parameter binding with ``save_probabilities`` — exact for the noise model,
bit for bit what the full-width simulator gives — and read-out errors are applied to them
classically (:func:`tnpeft.quantum.mitigation.apply_readout`: the measured distribution of
independent per-qubit flips), with ``P(1|0)``, ``P(0|1)`` read as Aer reads them. Shots are then
multinomial draws from that distribution: the same law as sampling the noisy simulator, and one
simulation serves any number of shots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tnpeft.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit
    from qiskit.transpiler import Target

_SKIP = ("barrier", "delay")
#: parameter bindings per simulator call (bounds the memory of one Aer job)
CHUNK = 2048


@dataclass
class Reduced:
    """A transpiled circuit on its active qubits: ``circuit`` (no measurements), ``active``
    (physical qubits, in register order), ``measured`` (the register position of the qubit measured
    into classical bit ``i``, for ``i`` in order) and ``physical`` (those qubits' device indices)."""

    circuit: Any
    active: tuple[int, ...]
    measured: tuple[int, ...]
    physical: tuple[int, ...]


def reduce_circuit(isa: QuantumCircuit) -> Reduced:
    """``isa`` (transpiled, with its measurements) restricted to its active qubits."""
    from qiskit import QuantumCircuit, QuantumRegister

    used: set[int] = set()
    meas: dict[int, int] = {}
    for inst in isa.data:
        name = inst.operation.name
        if name in _SKIP:
            continue
        qs = [isa.find_bit(q).index for q in inst.qubits]
        used.update(qs)
        if name == "measure":
            meas[isa.find_bit(inst.clbits[0]).index] = qs[0]
    if not meas:
        raise ConfigError(f"circuit {isa.name!r} measures nothing", field="circuit")
    active = tuple(sorted(used))
    pos = {q: i for i, q in enumerate(active)}
    out = QuantumCircuit(QuantumRegister(len(active), "q"), name=isa.name)
    out.global_phase = isa.global_phase
    for inst in isa.data:
        if inst.operation.name in _SKIP or inst.operation.name == "measure":
            continue
        out.append(inst.operation, [out.qubits[pos[isa.find_bit(q).index]] for q in inst.qubits])
    physical = tuple(meas[c] for c in sorted(meas))
    return Reduced(out, active, tuple(pos[q] for q in physical), physical)


def reduce_target(target: Target, active: tuple[int, ...]) -> Target:
    """A ``Target`` on ``len(active)`` qubits with the calibration of those qubits and the couplers among them."""
    from qiskit.transpiler import Target

    pos = {q: i for i, q in enumerate(active)}
    qp = target.qubit_properties
    red = Target(num_qubits=len(active), dt=target.dt,
                 qubit_properties=[qp[q] for q in active] if qp else None)
    for name in target.operation_names:
        props = target[name]
        if props is None or None in props:      # global operations (control flow)
            continue
        sub = {tuple(pos[q] for q in qargs): p for qargs, p in props.items() if all(q in pos for q in qargs)}
        if sub:
            red.add_instruction(target.operation_from_name(name), sub, name=name)
    return red


def gate_noise_model(target: Target) -> Any:
    """Aer's noise model of ``target``'s gates (no read-out errors: :func:`readout_errors` gives those)."""
    from qiskit_aer.noise import NoiseModel
    from qiskit_aer.noise.device import basic_device_gate_errors

    nm = NoiseModel(basis_gates=list(target.operation_names))
    for name, qubits, err in basic_device_gate_errors(target=target):
        nm.add_quantum_error(err, name, qubits)
    return nm


def readout_errors(target: Target, physical: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(P(1|0), P(0|1))`` of each physical qubit, read as Aer's device noise reads them
    (asymmetric values when the target has them, else the symmetric measurement error)."""
    e0, e1 = [], []
    props = target["measure"] if "measure" in target.operation_names else {}
    for q in physical:
        p = props.get((q,)) if props else None
        if p is None:
            e0.append(0.0)
            e1.append(0.0)
        elif hasattr(p, "prob_meas1_prep0") and hasattr(p, "prob_meas0_prep1"):
            e0.append(float(p.prob_meas1_prep0))
            e1.append(float(p.prob_meas0_prep1))
        else:
            e0.append(float(p.error or 0.0))
            e1.append(float(p.error or 0.0))
    return np.array(e0), np.array(e1)


def simulate_probabilities(reduced: Reduced, values: np.ndarray | None, parameters: list[Any], *,
                           noise_model: Any = None, seed: int | None = None) -> np.ndarray:
    """Exact outcome probabilities ``(B, 2^m)`` of the measured qubits (bit ``i`` = classical bit
    ``i``) for each row of ``values`` (``None``: the circuit has no parameters, ``B = 1``): a
    statevector run without noise, a density-matrix run with ``noise_model``; ``parameters`` are
    the circuit's ``Parameter`` objects in the order of ``values``' columns."""
    from qiskit_aer import AerSimulator

    method = "statevector" if noise_model is None else "density_matrix"
    opts: dict[str, Any] = {"method": method}
    if noise_model is not None:
        opts["noise_model"] = noise_model
    if seed is not None:
        opts["seed_simulator"] = seed
    sim = AerSimulator(**opts)
    qc = reduced.circuit.copy()
    qc.save_probabilities(list(reduced.measured))
    present = set(qc.parameters)
    if values is None or not parameters:
        res = sim.run(qc).result()
        p = np.asarray(res.data(0)["probabilities"], dtype=np.float64)[None]
        return p if values is None else np.repeat(p, len(values), 0)
    cols = [i for i, p in enumerate(parameters) if p in present]
    out = []
    for start in range(0, len(values), CHUNK):
        chunk = values[start:start + CHUNK]
        binds = [{parameters[i]: chunk[:, i].tolist() for i in cols}]
        res = sim.run([qc], parameter_binds=binds).result()
        out.append(np.stack([np.asarray(res.data(j)["probabilities"], dtype=np.float64) for j in range(len(chunk))]))
    return np.concatenate(out)
