"""The torch statevector simulator against Qiskit's Statevector and Operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit import QuantumCircuit
from qiskit.quantum_info import Operator, Statevector

from tnpeft.circuits.circuit import (
    Circuit,
    Gate,
    expect_z,
    probabilities,
    qnn_circuit,
    qpa_circuit,
    simulate,
    unitary_matrix,
)
from tnpeft.errors import ConfigError


def to_qiskit_reference(c: Circuit, params, inputs=None) -> QuantumCircuit:
    """An independent translation, gate by gate, with bound angles."""
    qc = QuantumCircuit(c.n_qubits)
    for g in c.gates:
        if g.name == "ry":
            src, k = g.angle
            qc.ry(float((params if src == "param" else inputs)[k]), g.qubits[0])
        elif g.name == "cz":
            qc.cz(*g.qubits)
        else:
            qc.cx(*g.qubits)
    return qc


@st.composite
def circuits(draw):
    n = draw(st.integers(1, 5))
    n_inputs = draw(st.integers(0, 4))
    n_params = draw(st.integers(1, 6))
    gates = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["ry", "ry", "cz", "cx"] if n > 1 else ["ry"]))
        if kind == "ry":
            src = draw(st.sampled_from(["param", "input"] if n_inputs else ["param"]))
            k = draw(st.integers(0, (n_params if src == "param" else n_inputs) - 1))
            gates.append(Gate("ry", (draw(st.integers(0, n - 1)),), (src, k)))
        else:
            a, b = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
            gates.append(Gate(kind, (a, b)))
    return Circuit(n, tuple(gates), n_params, n_inputs)


@settings(max_examples=80, deadline=None)
@given(c=circuits(), seed=st.integers(0, 2**16))
def test_random_circuits_equal_qiskit_statevector(c, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(c.n_params, generator=g, dtype=torch.float64) * 3
    x = torch.randn(c.n_inputs, generator=g, dtype=torch.float64) * 3 if c.n_inputs else None
    ours = simulate(c, p, x).numpy()
    ref = Statevector(to_qiskit_reference(c, p, x)).data
    assert np.abs(ref.imag).max() < 1e-12
    assert np.abs(ours - ref.real).max() < 1e-6
    probs = probabilities(simulate(c, p, x)).numpy()
    assert np.abs(probs - Statevector(to_qiskit_reference(c, p, x)).probabilities()).max() < 1e-6
    if c.n_inputs == 0:
        op = Operator(to_qiskit_reference(c, p)).data
        assert np.abs(unitary_matrix(c, p).numpy() - op.real).max() < 1e-6


@settings(max_examples=25, deadline=None)
@given(c=circuits(), seed=st.integers(0, 2**16))
def test_gradients_equal_finite_differences(c, seed):
    g = torch.Generator().manual_seed(seed)
    p = (torch.randn(c.n_params, generator=g, dtype=torch.float64) * 2).requires_grad_()
    x = (torch.randn(c.n_inputs, generator=g, dtype=torch.float64) * 2).requires_grad_() if c.n_inputs else None
    w = torch.randn(c.dim, generator=g, dtype=torch.float64)

    def f(p, x):
        return (probabilities(simulate(c, p, x)) * w).sum() + expect_z(simulate(c, p, x)).sum()

    leaves = [p] + ([x] if x is not None else [])
    out = f(p, x)
    grads = (torch.autograd.grad(out, leaves, allow_unused=True) if out.requires_grad else [None] * len(leaves))
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads)]  # unused angle: zero
    eps = 1e-6
    for t, grad in zip(leaves, grads):
        for i in range(t.numel()):
            d = torch.zeros_like(t)
            d[i] = eps
            with torch.no_grad():
                if t is p:
                    fd = (f(p + d, x) - f(p - d, x)) / (2 * eps)
                else:
                    fd = (f(p, x + d) - f(p, x - d)) / (2 * eps)
            assert abs(float(fd) - float(grad[i])) < 1e-6


def test_batched_over_samples_and_layers_equals_one_by_one():
    c = qnn_circuit(3, 2, 5, "cx")
    g = torch.Generator().manual_seed(0)
    params = torch.randn(4, 1, c.n_params, generator=g, dtype=torch.float64)    # 4 layers
    inputs = torch.randn(4, 6, c.n_inputs, generator=g, dtype=torch.float64)    # 6 samples each
    batched = simulate(c, params, inputs)
    assert batched.shape == (4, 6, 8)
    for li in range(4):
        for s in range(6):
            one = simulate(c, params[li, 0], inputs[li, s])
            assert torch.allclose(batched[li, s], one, atol=1e-12)


def test_z_expectation_equals_qiskit():
    from qiskit.quantum_info import SparsePauliOp

    c = qpa_circuit(3, 2)
    p = torch.randn(c.n_params, dtype=torch.float64)
    sv = Statevector(to_qiskit_reference(c, p))
    z = expect_z(simulate(c, p)).numpy()
    for q in range(3):
        label = ["I"] * 3
        label[2 - q] = "Z"   # Qiskit labels are written big-endian
        assert abs(sv.expectation_value(SparsePauliOp("".join(label))).real - z[q]) < 1e-12


def test_qpa_circuit_shape():
    c = qpa_circuit(4, 3)
    assert c.n_params == 12 and c.count("ry") == 12 and c.count("cx") == 9 and c.count("cz") == 0


def test_bad_circuits_are_refused_with_clear_errors():
    with pytest.raises(ConfigError, match="does not fit 2 qubits"):
        Circuit(2, (Gate("cz", (0, 2)),), 0)
    with pytest.raises(ConfigError, match="reads angle"):
        Circuit(2, (Gate("ry", (0,), ("param", 3)),), 1)
    c = qpa_circuit(2, 1)
    with pytest.raises(ConfigError, match="2 parameters"):
        simulate(c, torch.zeros(3))
