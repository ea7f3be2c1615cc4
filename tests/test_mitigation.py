"""Mitigation: read-out inversion (tensored, against the dense Kronecker product), the projection onto
the simplex (its optimality conditions), folding (the same operator, λ× the two-qubit gates), the
extrapolation (exact on polynomials), and on a calibrated fake device: each step brings the
distribution closer to the exact one, at the documented cost in circuits."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tnpeft.errors import ConfigError
from tnpeft.quantum.mitigation import (
    apply_readout,
    calibration_from,
    confusion,
    extrapolate,
    fold_two_qubit,
    parse_mitigation,
    project_simplex,
    readout_inverse,
)

floats = st.floats(-2, 2, allow_nan=False, width=64)


@settings(max_examples=40, deadline=None)
@given(v=arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 16)), elements=floats))
def test_projection_satisfies_its_optimality_conditions(v):
    r = project_simplex(v)
    assert np.all(r >= 0) and np.allclose(r.sum(1), 1.0)
    for row, out in zip(v, r):
        pos = out > 1e-12
        tau = (row - out)[pos]
        assert np.allclose(tau, tau[0], atol=1e-9)            # v − r is one constant τ on the support
        assert np.all(row[~pos] <= tau[0] + 1e-9)             # and every dropped entry is below it
    assert np.allclose(project_simplex(r), r)                 # idempotent


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 4), data=st.data())
def test_readout_matches_the_kronecker_product_and_inverts(m, data):
    e0 = np.array(data.draw(st.lists(st.floats(0, 0.3), min_size=m, max_size=m)))
    e1 = np.array(data.draw(st.lists(st.floats(0, 0.3), min_size=m, max_size=m)))
    p = np.random.default_rng(data.draw(st.integers(0, 99))).dirichlet(np.ones(1 << m), size=3)
    dense = np.array([[1.0]])
    for a in reversed(confusion(e0, e1)):                      # bit q = qubit q: qubit 0 is the last factor
        dense = np.kron(dense, a)
    measured = apply_readout(p, e0, e1)
    np.testing.assert_allclose(measured, p @ dense.T, atol=1e-12)
    np.testing.assert_allclose(readout_inverse(measured, e0, e1, project=False), p, atol=1e-9)
    np.testing.assert_allclose(readout_inverse(measured, e0, e1), p, atol=1e-9)   # already a distribution
    z, o = np.zeros(1 << m), np.zeros(1 << m)
    z[0], o[-1] = 1, 1
    c0, c1 = calibration_from(apply_readout(z, e0, e1), apply_readout(o, e0, e1))
    np.testing.assert_allclose(c0, e0, atol=1e-12)
    np.testing.assert_allclose(c1, e1, atol=1e-12)


def test_readout_refuses_qubits_read_at_random():
    with pytest.raises(ConfigError, match="read out at random"):
        readout_inverse(np.ones(4) / 4, [0.5, 0.1], [0.5, 0.1])


def test_extrapolation_is_exact_on_polynomials():
    lam = (1, 3, 5)
    line = np.array([[0.3 - 0.02 * x] for x in lam])
    quad = np.array([[0.3 - 0.02 * x + 0.004 * x * x] for x in lam])
    assert extrapolate(line, lam, "linear")[0] == pytest.approx(0.3)
    assert extrapolate(quad, lam, "richardson")[0] == pytest.approx(0.3)
    w = extrapolate(np.eye(3), lam, "richardson")
    np.testing.assert_allclose(w, [15 / 8, -5 / 4, 3 / 8])     # Richardson's weights at λ = 1, 3, 5
    with pytest.raises(ConfigError):
        extrapolate(line, lam, "cubic")


def test_folding_keeps_the_operator_and_multiplies_two_qubit_gates():
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Operator

    qc = QuantumCircuit(3)
    qc.ry(0.3, 0)
    qc.cx(0, 1)
    qc.rz(0.7, 1)
    qc.cz(1, 2)
    for s in (1, 3, 5):
        f = fold_two_qubit(qc, s)
        assert sum(1 for i in f.data if i.operation.num_qubits == 2) == 2 * s
        assert Operator(f).equiv(Operator(qc))
    with pytest.raises(ConfigError):
        fold_two_qubit(qc, 2)


def test_parse_mitigation():
    assert parse_mitigation(None).label == "none"
    m = parse_mitigation("readout+zne")
    assert m.readout == "tensored" and m.zne == (1, 3, 5) and m.zne_fit == "linear" and m.label == "readout+zne"
    assert parse_mitigation("zne-richardson,readout-reported").calibration == "reported"
    assert m.extra_circuits(2) == {"circuits_per_circuit": 3, "calibration_circuits": 4, "zne_scales": [1, 3, 5]}
    with pytest.raises(ConfigError, match="unknown mitigation"):
        parse_mitigation("twirl")


@pytest.fixture(scope="module")
def noisy_runs():
    pytest.importorskip("qiskit_aer")
    pytest.importorskip("qiskit_ibm_runtime")
    from tnpeft.circuits.circuit import probabilities, qpa_circuit, simulate
    from tnpeft.circuits.parameter_shift import group_values, grouped_circuit
    from tnpeft.quantum import Device

    c = qpa_circuit(3, 3)
    th = torch.rand(4, c.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 6 - 3
    exact = probabilities(simulate(c, th)).numpy()
    vals = group_values(c, th).numpy()
    out = {}
    for mit in (None, "readout", "readout+zne"):
        dev = Device("fake_torino", shots=None, mitigation=mit, seed=1)
        out[mit] = (dev.probabilities(grouped_circuit(c), vals), dev.stats.to_dict())
    return exact, out


def test_each_mitigation_step_moves_toward_the_exact_distribution(noisy_runs):
    exact, out = noisy_runs
    tv = {k: 0.5 * np.abs(p - exact).sum(1).mean() for k, (p, _) in out.items()}
    assert tv[None] > 0.03                                   # the device is noisy
    assert tv["readout"] < 0.6 * tv[None]
    assert tv["readout+zne"] < tv["readout"]


def test_mitigation_costs_what_it_says(noisy_runs):
    _, out = noisy_runs
    assert out[None][1]["circuits_by_purpose"] == {"forward": 4}
    assert out["readout"][1]["circuits_by_purpose"] == {"forward": 4, "calibration": 2}
    assert out["readout+zne"][1]["circuits_by_purpose"] == {"forward": 12, "calibration": 2}
    assert out["readout+zne"][1]["pubs"] == 3 + 2


def test_mthree_agrees_with_the_tensored_inverse():
    pytest.importorskip("mthree")
    from tnpeft.quantum.mitigation import mthree_inverse

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8), size=2)
    e0, e1 = [0.05, 0.1, 0.02], [0.08, 0.03, 0.06]
    counts = np.rint(apply_readout(p, e0, e1) * 200_000)
    ours = readout_inverse(counts / counts.sum(1, keepdims=True), e0, e1)
    theirs = mthree_inverse(counts, e0, e1)
    np.testing.assert_allclose(theirs, ours, atol=5e-3)
    np.testing.assert_allclose(theirs, p, atol=1e-2)
