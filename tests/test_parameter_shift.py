"""Parameter-shift gradients of circuits run on a device: equal to autograd's through the exact torch
simulator (within 1e-6) when the device returns exact probabilities (Qiskit Aer's statevector, through
the transpiler), and within their shot-noise bound when it samples; the grouping rules per gate."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnpeft.adapters import qpa, quantum_peft, qwthn
from tnpeft.circuits.circuit import Circuit, Gate, probabilities, qnn_circuit, qpa_circuit, simulate
from tnpeft.circuits.device_hooks import column_inputs, interference_circuit, use_device
from tnpeft.circuits.frames import pauli_frame_circuit
from tnpeft.circuits.parameter_shift import (
    SHIFT_RULES,
    device_probabilities,
    group_values,
    grouped_circuit,
    shift_cost,
    shift_groups,
)
from tnpeft.params.qnn import QNNMap
from tnpeft.runtime import GraphModule

pytest.importorskip("qiskit_aer")
from tnpeft.quantum import Device  # noqa: E402


@pytest.fixture(scope="module")
def exact():
    return Device("ideal", shots=None)


class TorchDevice:
    """A device that returns the torch simulator's probabilities: isolates the shift rules from Qiskit."""

    def probabilities(self, circuit, values, purpose="forward"):
        return probabilities(simulate(circuit, torch.as_tensor(values, dtype=torch.float64))).numpy()


def test_rules_per_gate():
    # plain RY: two terms; controlled RY (open or closed controls): four; CZ/CX: nothing to shift
    c = Circuit(3, (Gate("ry", (0,), ("param", 0)), Gate("cz", (0, 1)),
                    Gate("ry", (1,), ("param", 1), ((0, 1),)), Gate("ry", (2,), ("param", 2), ((0, 0), (1, 1))),
                    Gate("ry", (2,), ("input", 0), (), 2.0)), 3, 1)
    g = shift_groups(c)
    assert [(x.source, x.index, x.rule, x.factor) for x in g] == [
        ("param", 0, "two", 1.0), ("param", 1, "four", 1.0), ("param", 2, "four", 1.0), ("input", 0, "two", 2.0)]
    assert shift_cost(c) == 2 + 4 + 4 and shift_cost(c, inputs=True) == 12
    c_plus, c_minus = SHIFT_RULES["four"][0][1], -SHIFT_RULES["four"][2][1]
    assert c_plus == pytest.approx((math.sqrt(2) + 1) / (4 * math.sqrt(2)))
    assert c_minus == pytest.approx((math.sqrt(2) - 1) / (4 * math.sqrt(2)))


@pytest.mark.parametrize("n", [7, 13])
def test_a_shared_cosine_sine_angle_is_one_group(n):
    # CS(φ) is one RY(2φ) per cube of {j < N₂} on the top qubit: N = 7 = 4 + 3 and 13 = 8 + 5 have two
    # cubes each, disjoint: one four-term group reading one angle twice
    c = pauli_frame_circuit(n, 1)
    groups = [g for g in shift_groups(c) if len(g.gates) > 1]
    assert len(groups) >= 1 and all(g.rule == "four" and g.factor == 2.0 for g in groups)
    angle = groups[0].index
    assert sum(1 for gt in c.gates if gt.angle == ("param", angle)) == len(groups[0].gates)


@settings(max_examples=12, deadline=None)
@given(n=st.sampled_from([3, 5, 6, 7, 12, 13, 16]), k=st.integers(1, 3), layers=st.integers(1, 2), seed=st.integers(0, 99))
def test_shift_rules_are_exact_for_any_frame(n, k, layers, seed):
    """With exact probabilities the parameter-shift gradient of a frame's interference estimate is
    autograd's (torch simulator on both sides: the rules alone)."""
    k = min(k, n)
    c = pauli_frame_circuit(n, layers, k)
    g = torch.Generator().manual_seed(seed)
    th = (torch.rand(c.n_params, generator=g, dtype=torch.float64) * 6 - 3).requires_grad_()
    ic = interference_circuit(c)
    inputs = column_inputs(c.n_qubits, k, th)
    w = torch.randn(k, 2 << c.n_qubits, generator=g, dtype=torch.float64)
    (device_probabilities(TorchDevice(), ic, th, inputs) * w).sum().backward()
    shifted = th.grad.clone()
    th.grad = None
    (probabilities(simulate(ic, th, inputs)) * w).sum().backward()
    torch.testing.assert_close(shifted, th.grad, atol=1e-10, rtol=0)


def _grads(module, loss):
    for p in module.parameters():
        p.grad = None
    loss().backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("make", [
    lambda: quantum_peft(7, 6, rank=2, layers=1),             # cosine–sine frame with a shared angle
    lambda: quantum_peft(12, 6, rank=3, pow2=True),           # padded frame, projected
    lambda: quantum_peft(8, 8, rank=2, param="givens"),       # fully controlled rotations
    lambda: qpa(16, 16, r=2),                                  # QPA's generator circuit
    lambda: qwthn(16, 16, r=4, fusion="linear"),              # per-token QNN, inputs trained upstream
], ids=["pauli-7", "pauli-pow2", "givens", "qpa", "qwthn"])
def test_node_gradients_on_an_exact_sampler_equal_autograd(make, exact):
    gm = GraphModule(make(), dtype=torch.float64, rng=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for name, p in gm.named_parameters():
            if name.startswith("L.") or name.endswith(".b"):
                p.normal_(generator=torch.Generator().manual_seed(4))
    x = torch.randn(5, gm.graph.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(5, gm.graph.out_features, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    auto = _grads(gm, lambda: (gm(x) * w).sum())
    with use_device(exact):
        y = gm(x)
        shifted = _grads(gm, lambda: (gm(x) * w).sum())
    torch.testing.assert_close(y, gm(x), atol=1e-9, rtol=0)
    assert set(shifted) == set(auto)
    for name in auto:
        torch.testing.assert_close(shifted[name], auto[name], atol=1e-6, rtol=0, msg=name)


def _shot_std(circuit, params, inputs, needed, w, shots):
    """σ of each parameter-shift gradient component of Σ w·p̂ from independent multinomial estimates."""
    groups = shift_groups(circuit)
    vals = group_values(circuit, params.detach(), inputs).reshape(-1, len(groups)).numpy()
    wf = w.reshape(vals.shape[0], -1).numpy()
    var = np.zeros(circuit.n_params)
    for k, gr in enumerate(groups):
        if gr.source != "param":
            continue
        for shift, c in SHIFT_RULES[gr.rule]:
            v = vals.copy()
            v[:, k] += shift
            p = probabilities(simulate(grouped_circuit(circuit), torch.as_tensor(v))).numpy()
            row_var = ((wf ** 2 * p).sum(1) - (wf * p).sum(1) ** 2) / shots
            var[gr.index] += (c * gr.factor) ** 2 * row_var.sum()
    return np.sqrt(var)


@pytest.mark.parametrize("which", ["qnn", "frame"])
def test_sampled_gradients_are_within_their_shot_noise(which):
    if which == "qnn":
        circuit = qnn_circuit(3, 2, 4)
        inputs = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    else:
        base = pauli_frame_circuit(6, 1, 2)
        circuit = interference_circuit(base)
        inputs = column_inputs(base.n_qubits, 2, torch.zeros(1, dtype=torch.float64))
    th = (torch.rand(circuit.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 6 - 3)
    th.requires_grad_()
    w = torch.randn(inputs.shape[0], 1 << circuit.n_qubits, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (probabilities(simulate(circuit, th, inputs)) * w).sum().backward()
    exact_grad = th.grad.clone().numpy()
    th.grad = None
    shots = 20000
    dev = Device("ideal", shots=shots, seed=7)
    (device_probabilities(dev, circuit, th, inputs) * w).sum().backward()
    sigma = _shot_std(circuit, th, inputs, None, w, shots)
    err = np.abs(th.grad.numpy() - exact_grad)
    assert np.all(err <= 5 * sigma + 1e-9), (err / sigma).max()
    assert (err / sigma).max() > 0          # really sampled
    # the cost: one forward request, one request for all shifted circuits
    assert dev.stats.calls == 2
    assert dev.stats.by_purpose == {"forward": inputs.shape[0], "shift": inputs.shape[0] * shift_cost(circuit)}


def test_qnn_input_gradients_only_when_inputs_need_them(exact):
    m = QNNMap((4,), (8,), qubits=3, layers=2, fusion="none", rng=torch.Generator().manual_seed(0)).double()
    h = torch.randn(3, 4, dtype=torch.float64)
    dev = Device("ideal", shots=None)
    with use_device(dev):
        m(h).sum().backward()
    c = qnn_circuit(3, 2, 4)
    assert dev.stats.by_purpose["shift"] == 3 * shift_cost(c, inputs=False)
    h.requires_grad_()
    dev2 = Device("ideal", shots=None)
    with use_device(dev2):
        m(h).sum().backward()
    assert dev2.stats.by_purpose["shift"] == 3 * shift_cost(c, inputs=True) == 3 * 2 * (c.n_params + 4)
    ref = h.detach().clone().requires_grad_()
    m(ref).sum().backward()
    torch.testing.assert_close(h.grad, ref.grad, atol=1e-8, rtol=0)


def test_qpa_circuit_cost_closed_form():
    c = qpa_circuit(4, 3)
    assert shift_cost(c) == 2 * 4 * 3      # N_q·L plain rotations, two terms each
