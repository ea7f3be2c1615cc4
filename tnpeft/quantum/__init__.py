"""Adapters as quantum circuits: compile unitary nodes, QNN nodes and QPA hyper-networks to Qiskit,
export them as OpenQASM 3, transpile them to a backend and estimate them from shots.

Modules: :mod:`.compile` (graph → ``QuantumCircuit``), :mod:`.synthesis` (exact circuits for
frames without one of their own), :mod:`.export` (QASM 3 files and their index),
:mod:`.backends` (transpile, sample), :mod:`.shots` (unitary nodes from shots, shot-noise bounds),
:mod:`.signed` (frames with their signs, adapters from estimated frames), :mod:`.qpa_shots` (QPA
from measured probabilities), :mod:`.devices` (devices by name: ideal, generic, calibrated fake IBM
devices), :mod:`.local_sim` (noisy simulation of the qubits in use), :mod:`.mitigation` (read-out
and zero-noise extrapolation), :mod:`.device` (the :class:`Device` that runs tnpeft's circuits),
:mod:`.in_the_loop` (:func:`on_device`: quantum nodes evaluated on a device while training or
evaluating; :func:`device_budget`), :mod:`.hardware` (an adapter's quantum parts estimated on a
device, per module).

Qiskit is a core dependency; running circuits needs ``qiskit-aer`` (extra ``quantum``), the fake IBM
devices ``qiskit-ibm-runtime`` (extra ``quantum`` too), and reloading OpenQASM 3 needs
``qiskit_qasm3_import``. Real hardware (an account, a token, a provider package) is the user's to
bring: pass its backend and sampler.
"""

from tnpeft.circuits.circuit import pauli_circuit  # noqa: I001  (the description the Pauli circuits follow)
from tnpeft.quantum.backends import aer_simulator, circuit_stats, sample_probabilities, transpile_for
from tnpeft.quantum.compile import circuit_names, circuit_to_qiskit, frame_matrices, to_qiskit
from tnpeft.quantum.device import Device, DeviceStats
from tnpeft.quantum.devices import DeviceInfo, device_info, list_devices, resolve_backend
from tnpeft.quantum.in_the_loop import Budget, device_budget, on_device, quantum_parts
from tnpeft.quantum.mitigation import Mitigation, parse_mitigation
from tnpeft.quantum.export import export_circuits, load_circuits, qasm3_text, read_index
from tnpeft.quantum.qpa_shots import QPAEstimate, estimate_qpa, measured_probabilities
from tnpeft.quantum.shots import ShotReport, UnitaryEstimate, estimate_unitary, shot_noise_bound
from tnpeft.quantum.signed import AdapterEstimate, SignedFrameEstimate, estimate_adapter, estimate_signed_frame
from tnpeft.quantum.synthesis import MAX_SYNTHESIS_QUBITS, orthogonal_completion, synthesize_frame

__all__ = [
    "MAX_SYNTHESIS_QUBITS", "circuit_names", "circuit_to_qiskit", "frame_matrices", "orthogonal_completion",
    "pauli_circuit", "synthesize_frame", "to_qiskit",
    "export_circuits", "load_circuits", "qasm3_text", "read_index",
    "QPAEstimate", "ShotReport", "UnitaryEstimate", "aer_simulator", "circuit_stats", "estimate_qpa",
    "estimate_unitary", "measured_probabilities", "sample_probabilities", "shot_noise_bound", "transpile_for",
    "AdapterEstimate", "SignedFrameEstimate", "estimate_adapter", "estimate_signed_frame",
    "Device", "DeviceStats", "DeviceInfo", "device_info", "list_devices", "resolve_backend",
    "Budget", "device_budget", "on_device", "quantum_parts", "Mitigation", "parse_mitigation",
]
