"""The frame kernel (fused Kronecker factors, folded CZ signs, one autograd function) against the
dense unitary of the same circuit, values and gradients, for random RY/CZ circuits."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnpeft.circuits.circuit import Circuit, Gate, unitary_matrix
from tnpeft.circuits.frame_kernel import (
    FactorOp,
    RyFactor,
    SignOp,
    compile_frame,
    compile_program,
    kernel_ops,
    run_kernel,
)
from tnpeft.circuits.frames import pauli_frame


@st.composite
def ry_cz_circuits(draw):
    n = draw(st.integers(1, 6))
    gates, k = [], 0
    for _ in range(draw(st.integers(1, 30))):
        if n > 1 and draw(st.booleans()):
            a, b = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
            gates.append(Gate("cz", (a, b)))
        else:
            # angles may repeat and come in any order: the kernel reads them by index
            idx = draw(st.integers(0, k)) if k and draw(st.booleans()) else k
            k = max(k, idx + 1)
            gates.append(Gate("ry", (draw(st.integers(0, n - 1)),), ("param", idx)))
    return Circuit(n, tuple(gates), max(k, 1))


@settings(max_examples=120, deadline=None)
@given(circuit=ry_cz_circuits(), k=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_kernel_equals_the_dense_unitary(circuit, k, seed):
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(2, circuit.n_params, dtype=torch.float64, generator=gen, requires_grad=True)
    state = torch.randn(2, circuit.dim, k, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(2, circuit.dim, k, dtype=torch.float64, generator=gen)
    ref = torch.stack([unitary_matrix(circuit, theta[i]) @ state[i] for i in range(2)])
    g_ref = torch.autograd.grad((ref * w).sum(), (theta, state), allow_unused=True)
    half = theta / 2
    out = run_kernel(circuit, state, torch.cos(half), torch.sin(half))
    g_out = torch.autograd.grad((out * w).sum(), (theta, state), allow_unused=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    zero = torch.zeros_like(theta)   # an angle no gate reads has no gradient
    torch.testing.assert_close(zero if g_out[0] is None else g_out[0], zero if g_ref[0] is None else g_ref[0],
                               rtol=0, atol=1e-11)
    torch.testing.assert_close(g_out[1], g_ref[1], rtol=0, atol=1e-12)


def test_quantum_peft_circuits_fold_every_cz_and_merge_the_first_layers():
    # RY on all qubits, CZ even, RY even: one factor per group; CZ odd folds into the odd RYs
    for n in range(2, 13):
        from tnpeft.circuits.circuit import pauli_circuit
        ops = kernel_ops(pauli_circuit(n, 1))
        assert all(isinstance(op, RyFactor) for op in ops), n
        assert len(ops) <= 2 * -(-n // 4), (n, len(ops))
    prog = compile_program(compile_frame(pauli_frame(3072, 1)))
    assert sum(isinstance(op, FactorOp) for op in prog.ops) == 15 and not any(isinstance(op, SignOp) for op in prog.ops)
