"""Signed frames from hardware: interference circuits recover U_ij with its sign; on a noiseless
simulator every entry falls inside the shot-noise bound; the adapter built from the estimated frames
reports its error against the exact one, and device noise makes it larger."""

import numpy as np
import pytest
import torch
from qiskit.providers.fake_provider import GenericBackendV2

import tnpeft
from tnpeft.adapters import oft, quantum_peft
from tnpeft.errors import ConfigError
from tnpeft.quantum import aer_simulator, to_qiskit
from tnpeft.quantum.signed import estimate_adapter, estimate_signed_frame, interference_circuits, signed_shot_bound
from tnpeft.quantum.synthesis import apply_circuit_columns


@pytest.fixture(scope="module")
def graph():
    pytest.importorskip("qiskit_aer")
    g = quantum_peft(12, 8, rank=2, layers=1)
    gm = tnpeft.GraphModule(g, dtype=torch.float64, rng=torch.Generator().manual_seed(5))
    with torch.no_grad():
        gm.L.weight.copy_(torch.tensor([0.7, -1.3]))
    return gm


def test_interference_probabilities_are_the_signed_entries(graph):
    module = graph
    qc = to_qiskit(module, "V")
    u = module.tensor("V").detach().numpy()
    d = 1 << qc.num_qubits
    for j, c in enumerate(interference_circuits(qc, 2)):
        start = np.zeros((2 * d, 1))
        start[0] = 1
        p = np.abs(apply_circuit_columns(c, start)[:, 0]) ** 2
        np.testing.assert_allclose(np.sqrt(d) * (p[:12] - p[d:d + 12]), u[:, j], atol=1e-12)


def test_noiseless_estimate_is_inside_its_bound_and_signs_are_right(graph):
    est = estimate_signed_frame(graph, "V", aer_simulator(seed=3), shots=8192, seed=3)
    assert est.within_bound and est.max_error <= est.bound.max()
    big = np.abs(est.exact) > 3 * est.bound          # entries the bound resolves: their sign is right
    assert big.any() and np.all(np.sign(est.estimate[big]) == np.sign(est.exact[big]))
    # the bound shrinks like 1/√shots
    b1, b4 = signed_shot_bound(est.exact, 1000, 4), signed_shot_bound(est.exact, 4000, 4)
    assert np.all(b4 < b1) and 1.7 < float(b1.max() / b4.max()) < 2.2


def test_adapter_from_estimated_frames_reports_noise(graph):
    clean = estimate_adapter(graph, aer_simulator(seed=1), shots=8192, seed=1)
    assert set(clean.frames) == {"V", "U"} and all(f.within_bound for f in clean.frames.values())
    assert 0 < clean.delta_error < 0.3 and 0 < clean.output_error < 0.3
    noisy = estimate_adapter(graph, aer_simulator(GenericBackendV2(5, seed=2), seed=1), shots=8192, seed=1)
    assert noisy.delta_error > clean.delta_error
    assert "ΔW relative error" in str(noisy) and noisy.to_dict()["backend"]
    with pytest.raises(ConfigError, match="linear, additive"):
        estimate_adapter(oft(8, 8, block_size=4))
