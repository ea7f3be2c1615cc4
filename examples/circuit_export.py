"""Adapters as quantum circuits: export OpenQASM 3, transpile to a device, sample on a simulator.

Builds a Quantum-PEFT adapter (a 64-row Pauli circuit and a 24-row one built by the cosine–sine
split), the same adapter with Householder frames (synthesized), and a QPA adapter; writes their
circuits as OpenQASM 3 with an index, prints their resources, transpiles them to a 6-qubit generic
device, measures a unitary node's column probabilities and QPA's probabilities on Aer — noiseless
and with the device's noise model —, recovers a frame with its signs from interference circuits,
and generates QPA's LoRA weights from the measured probabilities.

    python examples/circuit_export.py [OUTDIR]
"""

import sys

import numpy as np
import torch
from qiskit.providers.fake_provider import GenericBackendV2
from qiskit.quantum_info import Operator
from qiskit.transpiler import CouplingMap

from tnpeft.adapters import qpa, quantum_peft
from tnpeft.quantum import (
    aer_simulator,
    circuit_stats,
    estimate_qpa,
    estimate_unitary,
    export_circuits,
    load_circuits,
    measured_probabilities,
    to_qiskit,
    transpile_for,
)
from tnpeft.quantum.resources import resource_report
from tnpeft.quantum.signed import estimate_adapter
from tnpeft.runtime import GraphModule

out = sys.argv[1] if len(sys.argv) > 1 else "runs/circuits"
torch.manual_seed(0)
# modules: the graphs (structure) with their values
qp = GraphModule(quantum_peft(64, 24, rank=4, layers=2))      # V: a 6-qubit Pauli circuit; U: 24 rows, cosine–sine on 5 qubits
hh = GraphModule(quantum_peft(64, 24, rank=4, param="householder"))   # frames without a circuit of their own: synthesized
qa = GraphModule(qpa(64, 64, r=4, chunk_size=8, qnn_layers=4))   # 512 LoRA values in 64 chunks: a 6-qubit circuit

# 1. OpenQASM 3 export, and the reloaded operators against the originals
index = export_circuits({"quantum_peft": qp, "householder": hh, "qpa": qa}, out)
print(f"exported {len(index['circuits'])} circuits to {out}/ (index.json):")
for e in index["circuits"]:
    print(f"  {e['name']:<16} {e['method']:<9} {e['qubits']} qubits, {sum(e['gates'].values())} gates -> {e['file']}")
try:
    loaded = load_circuits(out)
    err = max(np.abs(Operator(loaded[f"quantum_peft:{n}"]).data - Operator(to_qiskit(qp, n)).data).max()
              for n in ("V", "U"))
    print(f"reloaded with qiskit.qasm3.loads: max |operator difference| = {err:.1e}")
except Exception as e:  # qiskit_qasm3_import missing
    print(f"(reload skipped: {e})")

# 2. the node equals its circuit: Operator restricted to the node's columns vs the frame
for n in ("V", "U"):
    u = qp.tensor(n).detach().double().numpy()
    op = Operator(to_qiskit(qp, n)).data[: u.shape[0], : u.shape[1]]
    print(f"{n}: max |Operator[:N, :K] - U| = {np.abs(op - u).max():.1e} (U in float32)")

# 3. resources (decomposed into CX, and on a heavy-hex device), then transpile to a 6-qubit line
print(resource_report({"quantum_peft": qp, "householder": hh, "qpa": qa}))
device = GenericBackendV2(6, coupling_map=CouplingMap.from_line(6).get_edges(), seed=1)
for name, qc in transpile_for({"V": to_qiskit(qp, "V"), "U": to_qiskit(qp, "U"), "U householder": to_qiskit(hh, "U"),
                               "G": to_qiskit(qa, "G")}, device, seed=1).items():
    s = circuit_stats(qc)
    print(f"transpiled {name}: depth {s['depth']}, {s['two_qubit']} two-qubit gates, ops {s['ops']}")

# 4. shots: a unitary node's |U_ij|^2 and QPA's p_i, noiseless and with the device's noise
ideal, noisy = aer_simulator(), aer_simulator(device)
print("noiseless:", estimate_unitary(qp, "V", ideal, shots=4096, seed=1))
for label, g, n in (("pauli V", qp, "V"), ("pauli U", qp, "U"), ("householder U", hh, "U")):
    r = estimate_unitary(g, n, noisy, shots=4096, seed=1)   # short native circuits against a deep synthesized one
    print(f"noisy {label}: {r}; leakage outside the node's rows {r.leakage.max():.1%}")
for label, backend in (("noiseless", ideal), ("noisy", noisy)):
    r = estimate_qpa(qa, backend=backend, shots=4096, seed=1)
    print(f"QPA on {label} Aer: {r}")

# 5. signed frames from interference circuits, and the adapter rebuilt from them
small = GraphModule(quantum_peft(16, 8, rank=2, layers=1))
with torch.no_grad():
    small.L.weight.copy_(torch.tensor([0.7, -1.3]))
for label, backend in (("noiseless", ideal), ("noisy", aer_simulator(GenericBackendV2(5, seed=2), seed=1))):
    print(f"signed, {label}:", estimate_adapter(small, backend, shots=8192, seed=1))

# 6. the adapter itself with weights generated from measured probabilities
r = estimate_qpa(qa, backend=noisy, shots=4096, seed=1)
with torch.no_grad():
    exact = qa.dense(scaled=True).clone()
    with measured_probabilities(qa, r.estimate):
        measured = qa.dense(scaled=True).clone()
print(f"ΔW from noisy measurements: relative error {float((measured - exact).norm() / exact.norm()):.2%}")
