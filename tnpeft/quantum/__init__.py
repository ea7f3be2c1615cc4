"""Adapters as quantum circuits: compile unitary nodes, QNN nodes and QPA generators to Qiskit,
export them as OpenQASM 3, transpile them to a backend and estimate them from shots.

Qiskit is a core dependency; running circuits needs ``qiskit-aer`` (extra ``quantum``) or any
``BackendV2``/sampler, and reloading OpenQASM 3 needs ``qiskit_qasm3_import``. Real hardware
(an account, a token, a provider package) is the user's to bring: pass its backend or sampler.
"""

from tnpeft.quantum.compile import (
    MAX_SYNTHESIS_QUBITS,
    circuit_names,
    circuit_to_qiskit,
    frame_matrices,
    orthogonal_completion,
    pauli_circuit,
    synthesize_frame,
    to_qiskit,
)
from tnpeft.quantum.export import adapter_modules, export_circuits, load_circuits, qasm3_text, read_index
from tnpeft.quantum.run import (
    QPAEstimate,
    ShotReport,
    UnitaryEstimate,
    aer_simulator,
    circuit_stats,
    estimate_qpa,
    estimate_unitary,
    measured_probabilities,
    sample_probabilities,
    shot_noise_bound,
    transpile_for,
)

__all__ = [
    "MAX_SYNTHESIS_QUBITS", "circuit_names", "circuit_to_qiskit", "frame_matrices", "orthogonal_completion",
    "pauli_circuit", "synthesize_frame", "to_qiskit",
    "adapter_modules", "export_circuits", "load_circuits", "qasm3_text", "read_index",
    "QPAEstimate", "ShotReport", "UnitaryEstimate", "aer_simulator", "circuit_stats", "estimate_qpa",
    "estimate_unitary", "measured_probabilities", "sample_probabilities", "shot_noise_bound", "transpile_for",
]
