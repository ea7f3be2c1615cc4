"""pow2 Pauli frames — a different parametrization for widths that are not a power of two: the circuit
of the next power of two R, its first N rows orthonormalized. Orthonormal; its count is the R-row
circuit's; its value is the Q factor of Qiskit's own operator restricted to N rows; its circuit is
the R-row one (8 CZ for N = 384); and the resource report shows both parametrizations."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnpeft.adapters import quantum_peft
from tnpeft.circuits.circuit import circuit_angle_count
from tnpeft.errors import ConfigError, GraphError
from tnpeft.params.unitary import UNITARY_PARAMS
from tnpeft.quantum import to_qiskit
from tnpeft.quantum.resources import pauli_two_qubit_bound, resource_report
from tnpeft.runtime import GraphModule


@settings(max_examples=10, deadline=None)
@given(n=st.integers(3, 70), k=st.integers(1, 6), layers=st.integers(1, 2), seed=st.integers(0, 999))
def test_pow2_frame_is_the_orthonormalized_top_of_its_circuit(n, k, layers, seed):
    from qiskit.quantum_info import Operator

    k = min(k, n)
    m = UNITARY_PARAMS["pauli"].build(n, k, (), dtype=torch.float64, rng=torch.Generator().manual_seed(seed),
                                      layers=layers, pow2=True)
    rows = 1 << (n - 1).bit_length()
    assert m.theta.numel() == circuit_angle_count(rows.bit_length() - 1, layers)
    assert UNITARY_PARAMS["pauli"].num_parameters(n, k, layers=layers, pow2=True) == m.theta.numel()
    u = m().detach().numpy()
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=1e-10)
    qc = to_qiskit(m)
    assert qc.num_qubits == max(1, math.ceil(math.log2(n))) and qc.metadata["rows"] == rows
    assert qc.metadata["pow2"] and qc.metadata["frame_rows"] == n
    top = Operator(qc).data.real[:n, :k]                     # Qiskit's matrix, first n rows of the first k columns
    q, r = np.linalg.qr(top)
    q = q * np.sign(np.diag(r))
    np.testing.assert_allclose(u, q, atol=1e-8)


def test_pow2_gradients_match_finite_differences():
    m = UNITARY_PARAMS["pauli"].build(6, 3, (), dtype=torch.float64, rng=torch.Generator().manual_seed(1), pow2=True)
    w = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (m() * w).sum().backward()
    g = m.theta.grad.clone()
    x0 = m.theta.detach().clone()
    h = 1e-6
    for i in range(x0.numel()):
        vals = []
        for s in (1, -1):
            with torch.no_grad():
                m.theta.copy_(x0)
                m.theta[i] += s * h
            vals.append(float((m() * w).sum()))
        assert (vals[0] - vals[1]) / (2 * h) == pytest.approx(float(g[i]), abs=1e-6)


def test_quantum_peft_pow2_option():
    g = quantum_peft(384, 1000, rank=8, pow2=True)
    assert g.nodes["V"].options == {"layers": 1, "pow2": True}
    assert g.num_parameters() == circuit_angle_count(9, 1) + circuit_angle_count(10, 1) + 8 == 25 + 28 + 8
    with pytest.raises(ConfigError, match="pow2"):
        quantum_peft(12, 8, rank=2, param="cayley", pow2=True)
    with pytest.raises((ConfigError, GraphError), match="pow2"):
        quantum_peft(12, 8, rank=2, pow2="yes")


def test_resources_show_both_parametrizations():
    plain = resource_report(GraphModule(quantum_peft(384, 1000, rank=8)), None)
    padded = resource_report(GraphModule(quantum_peft(384, 1000, rank=8, pow2=True)), None)
    v, vp = plain.circuits[0], padded.circuits[0]
    assert v.parameters == 64 and vp.parameters == 25
    assert v.alternative == {"parametrization": "pauli pow2=true (next power of two, projected)", "rows": 512,
                             "parameters": 25, "two_qubit_bound": pauli_two_qubit_bound(512, 1, 8)}
    assert vp.alternative["rows"] == 384 and vp.alternative["parameters"] == 64
    assert vp.alternative["two_qubit_bound"] == pauli_two_qubit_bound(384, 1, 8) == v.bound
    assert vp.cx == vp.bound == 8 and padded.circuits[1].cx == 9           # CZ ladders of 9 and 10 qubits
    assert plain.circuits[1].cx > 4000                                      # N = 1000 exactly: thousands
    assert "as pauli pow2=true" in str(plain) and "exact width" in str(padded)
