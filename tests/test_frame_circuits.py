"""Circuits at every width: a Pauli frame of any size N compiles, from its own description, to an
exact circuit on ⌈log₂ N⌉ qubits (checked with Qiskit's Statevector, little-endian), with no
amplitude beyond row N and a two-qubit count under the documented closed form; the torch frame
follows the same description (checked against a dense reference and a second interpreter);
Givens butterflies compile from theirs; QASM 3 round-trips."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit import qasm3, transpile
from qiskit.quantum_info import Operator, Statevector

from tnpeft.circuits.circuit import simulate
from tnpeft.circuits.frames import pauli_frame_circuit
from tnpeft.params.unitary import UNITARY_PARAMS, butterfly_pairs, circuit_angle_count
from tnpeft.quantum import to_qiskit
from tnpeft.quantum.export import qasm3_text
from tnpeft.quantum.resources import gate_list_cost, pauli_two_qubit_bound
from tnpeft.quantum.synthesis import apply_circuit_columns


def frame(param, n, k, seed, **opts):
    m = UNITARY_PARAMS[param].build(n, k, (), dtype=torch.float64, rng=torch.Generator().manual_seed(seed), **opts)
    with torch.no_grad():
        m.theta.mul_(1.7)                       # angles anywhere on the circle
    return m, m().detach().numpy()


def dense_two_design(q, theta, layers):
    """The two-design circuit as a dense 2^q×2^q matrix, gate by gate (Kronecker products)."""
    def ry(a):
        return np.array([[math.cos(a / 2), -math.sin(a / 2)], [math.sin(a / 2), math.cos(a / 2)]])

    def on(qubit, g):
        mats = [np.eye(2)] * q
        mats[qubit] = g
        out = np.eye(1)
        for m in reversed(mats):     # qubit q-1 is the most significant factor
            out = np.kron(out, m)
        return out

    def cz(a, b):
        i = np.arange(1 << q)
        return np.diag(1.0 - 2.0 * (((i >> a) & 1) & ((i >> b) & 1)))

    u = np.eye(1 << q)
    t = iter(theta)
    for qubit in range(q):
        u = on(qubit, ry(next(t))) @ u
    for _ in range(layers):
        for parity in (0, 1):
            pairs = list(range(parity, q - 1, 2))
            for p in pairs:
                u = cz(p, p + 1) @ u
            for p in pairs:
                for qubit in (p, p + 1):
                    u = on(qubit, ry(next(t))) @ u
    return u


def dense_pauli(n, theta, layers):
    """Q_N = (A₁ ⊕ Q_{N₂}) · CS(φ) · (B₁ ⊕ I), as dense N×N matrices from the formula."""
    if n == 1:
        return np.eye(1)
    if n & (n - 1) == 0:
        return dense_two_design(n.bit_length() - 1, theta, layers)
    n1 = 1 << (n.bit_length() - 1)
    n2 = n - n1
    c1 = circuit_angle_count(n1.bit_length() - 1, layers)
    b1, phi, a1, rest = theta[:c1], theta[c1], theta[c1 + 1:2 * c1 + 1], theta[2 * c1 + 1:]
    before = np.eye(n)
    before[:n1, :n1] = dense_two_design(n1.bit_length() - 1, b1, layers)
    cs = np.eye(n)
    for i in range(n2):
        cs[i, i] = cs[n1 + i, n1 + i] = math.cos(phi)
        cs[i, n1 + i], cs[n1 + i, i] = -math.sin(phi), math.sin(phi)
    after = np.zeros((n, n))
    after[:n1, :n1] = dense_two_design(n1.bit_length() - 1, a1, layers)
    after[n1:, n1:] = dense_pauli(n2, rest, layers)
    return after @ cs @ before


@pytest.mark.parametrize("n", list(range(2, 41)) + [63, 65, 96, 100, 127, 129, 200, 255, 257])
def test_torch_frame_equals_the_dense_formula_and_the_flattened_circuit(n):
    for layers in (1, 2):
        k = min(n, 5)
        m, u = frame("pauli", n, k, seed=n, layers=layers)
        theta = m.theta.detach().numpy()
        np.testing.assert_allclose(u, dense_pauli(n, theta, layers)[:, :k], atol=1e-12, rtol=0)
        c = pauli_frame_circuit(n, layers, k)
        assert c.n_qubits == max(1, math.ceil(math.log2(n)))
        states = simulate(c, m.theta.detach(), initial=torch.eye(c.dim, dtype=torch.float64)[:k])
        np.testing.assert_allclose(states[:, :n].T.numpy(), u, atol=1e-12, rtol=0)
        assert np.abs(states[:, n:].numpy()).max(initial=0.0) < 1e-13


@settings(max_examples=8, deadline=None)
@given(n=st.one_of(st.integers(2, 5000), st.integers(2, 70)), k=st.integers(1, 16), layers=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 2**16))
def test_pauli_frame_circuit_is_exact_at_every_width(n, k, layers, seed):
    k = min(k, n)
    m, u = frame("pauli", n, k, seed, layers=layers)
    qc = to_qiskit(m)
    nq = max(1, math.ceil(math.log2(n)))
    assert qc.num_qubits == nq and qc.metadata["method"] == "pauli"
    # Qiskit's Statevector on the decomposed circuit: one basis column exactly, all columns through a
    # random combination of them (linearity)
    flat = transpile(qc, basis_gates=["cx", "u"], optimization_level=0)
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=k)
    start = np.zeros(1 << nq, dtype=complex)
    start[:k] = coef
    got = Statevector(start).evolve(flat).data
    want = np.zeros(1 << nq)
    want[:n] = u @ coef
    assert np.abs(got - want).max() < 1e-6           # amplitudes past row n are zero here too
    col = Statevector.from_int(k - 1, 1 << nq).evolve(flat).data
    assert np.abs(col[:n] - u[:, k - 1]).max() < 1e-6 and np.abs(col[n:]).max(initial=0.0) < 1e-6
    # the two-qubit count stays under the closed form
    assert flat.count_ops().get("cx", 0) <= pauli_two_qubit_bound(n, layers, k)
    # QASM 3 round trip
    text, _, _ = qasm3_text(qc)
    back = qasm3.loads(text)
    probe = np.zeros((1 << nq, 1))
    probe[:k, 0] = coef
    np.testing.assert_allclose(apply_circuit_columns(back, probe)[:, 0], want, atol=1e-6)


@pytest.mark.parametrize("n", [384, 768, 1000, 2304, 3072, 4096, 11008])
def test_two_qubit_counts_of_model_widths_stay_under_the_closed_form(n):
    m, _ = frame("pauli", n, 8, seed=1, layers=1)
    qc = to_qiskit(m)
    described = pauli_frame_circuit(n, 1, 8)
    assert gate_list_cost(described) == pauli_two_qubit_bound(n, 1, 8)     # the formula is the description's
    cx = transpile(qc, basis_gates=["cx", "u"], optimization_level=1, seed_transpiler=0).count_ops().get("cx", 0)
    assert cx <= pauli_two_qubit_bound(n, 1, 8)
    assert qc.num_qubits == math.ceil(math.log2(n))
    # polylogarithmic: far below the 22/48·4ⁿ CX of a generic synthesis
    assert cx < 0.02 * 22 / 48 * 4 ** qc.num_qubits


def test_closed_form_of_a_power_of_two_is_its_cz_count():
    for q in range(1, 13):
        for layers in (1, 2, 3):
            assert pauli_two_qubit_bound(1 << q, layers) == layers * (q // 2 + (q - 1) // 2)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 12, 16, 24, 31])
def test_givens_frames_compile_from_their_butterfly(n):
    for layers in (None, 2):
        k = min(n, 4)
        opts = {} if layers is None else {"layers": layers}
        m, u = frame("givens", n, k, seed=n, **opts)
        qc = to_qiskit(m)
        assert qc.metadata["method"] == "givens"
        op = Operator(qc).data
        assert np.abs(op[:n, :k] - u).max() < 1e-9 and np.abs(op[n:, :k]).max(initial=0.0) < 1e-9
        nq = qc.num_qubits
        n_layers = m.n_layers
        cx = transpile(qc, basis_gates=["cx", "u"], optimization_level=1).count_ops().get("cx", 0)
        # one uniformly controlled rotation per layer: ≤ 2^{n-1} CX each, against ~N/2 angles per layer
        assert cx <= n_layers * (1 << (nq - 1))
        assert sum(len(a) for a, _ in butterfly_pairs(n, n_layers)) == m.theta.shape[-1]
