"""QNN circuits run per batch of tokens (encoding runs expanded over signed permutations, fixed
runs as matrices) against the gate-by-gate simulator, values and gradients."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnpeft.circuits.circuit import Circuit, Gate, qnn_circuit, simulate
from tnpeft.circuits.token_program import run_token_program, token_program


def _check(circuit, rows, seed):
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(circuit.n_params, dtype=torch.float64, generator=gen, requires_grad=True)
    x = torch.randn(rows, circuit.n_inputs, dtype=torch.float64, generator=gen, requires_grad=True)
    ref = simulate(circuit, theta, x if circuit.n_inputs else None).expand(rows, circuit.dim)
    w = torch.randn(rows, circuit.dim, dtype=torch.float64, generator=gen)
    wrt = (theta, x) if circuit.n_inputs else (theta,)
    out = run_token_program(token_program(circuit), circuit.n_qubits, theta, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    if not ref.requires_grad:   # no gate reads an angle or an input
        return
    g_ref = torch.autograd.grad((ref * w).sum(), wrt, allow_unused=True)
    g_out = torch.autograd.grad((out * w).sum(), wrt, allow_unused=True)
    for a, b in zip(g_out, g_ref):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@settings(max_examples=60, deadline=None)
@given(qubits=st.integers(1, 8), layers=st.integers(1, 3), inputs=st.integers(0, 20),
       entangler=st.sampled_from(["cz", "cx"]), rows=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_qnn_circuits_equal_the_simulator(qubits, layers, inputs, entangler, rows, seed):
    _check(qnn_circuit(qubits, layers, inputs, entangler), rows, seed)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_any_order_of_encodings_and_fixed_gates(data, n, seed):
    # encodings on repeated qubits, fixed runs with CX/CZ anywhere, inputs read twice
    gates, n_in, n_par = [], 5, 0
    for _ in range(data.draw(st.integers(1, 14))):
        kind = data.draw(st.sampled_from(["in", "par", "ent"] if n > 1 else ["in", "par"]))
        if kind == "ent":
            a, b = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
            gates.append(Gate(data.draw(st.sampled_from(["cz", "cx"])), (a, b)))
        elif kind == "in":
            gates.append(Gate("ry", (data.draw(st.integers(0, n - 1)),), ("input", data.draw(st.integers(0, n_in - 1)))))
        else:
            gates.append(Gate("ry", (data.draw(st.integers(0, n - 1)),), ("param", n_par)))
            n_par += 1
    _check(Circuit(n, tuple(gates), max(n_par, 1), n_in), 3, seed)


def test_controlled_encodings_are_left_to_the_simulator():
    c = Circuit(2, (Gate("ry", (0,), ("input", 0), controls=((1, 1),)),), 1, 1)
    assert token_program(c) is None
