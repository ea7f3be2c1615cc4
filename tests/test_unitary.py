"""Unitary parametrizations: orthonormal columns by construction, gradients, closed-form counts,
and the Pauli frame against an independent dense simulation of its circuit."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnpeft.params.unitary import UNITARY_PARAMS, circuit_angle_count, pauli_count

PARAMS = sorted(UNITARY_PARAMS)
EXACT = sorted(k for k, v in UNITARY_PARAMS.items() if v.exact)    # cayley_neumann is peft OFT's series


def options_for(name, data):
    o = {}
    if name in ("pauli", "givens"):
        o["layers"] = data.draw(st.integers(1, 3), label="layers")
    if name in ("cayley", "exp", "taylor", "householder") and data.draw(st.booleans(), label="use K'"):
        o["intrinsic_rank"] = data.draw(st.integers(1, 4), label="intrinsic_rank")
    return o


@pytest.mark.parametrize("name", EXACT)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_orthonormal_columns_float32(name, data):
    # cayley_packed is one dense N×N solve over N(N−1)/2 parameters (peft OFT's blocks are small): N ≤ 256
    big = [128, 255, 256] if name == "cayley_packed" else [128, 255, 256, 768, 1000, 1024, 2049, 4096]
    n = data.draw(st.one_of(st.integers(2, 64), st.sampled_from(big)), label="N")
    k = data.draw(st.integers(1, min(n, 16)), label="K")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    opts = options_for(name, data)
    m = UNITARY_PARAMS[name].build(n, k, (2,), rng=torch.Generator().manual_seed(seed), **opts)
    with torch.no_grad():
        for p in m.parameters():  # generators of any size, not just the initial ones
            p.mul_(data.draw(st.sampled_from([1.0, 10.0, 100.0]), label="scale"))
        u = m()
    assert u.shape == (2, n, k) and u.dtype == torch.float32
    # the float32 frame is checked with a float64 product, so that the rounding of a 4096-term float32
    # dot product (≈ 1e-5 by itself) is not mistaken for an error of the frame
    u = u.double()
    err = (u.transpose(-1, -2) @ u - torch.eye(k, dtype=torch.float64)).abs().max().item()
    assert err <= 1e-5, (name, n, k, opts, err)


@pytest.mark.parametrize("name", PARAMS)
@pytest.mark.parametrize("n,k", [(4, 2), (6, 3), (5, 5)])
def test_gradients_match_finite_differences(name, n, k):
    m = UNITARY_PARAMS[name].build(n, k, (), dtype=torch.float64, rng=torch.Generator().manual_seed(1))
    (p,) = list(m.parameters())
    w = torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def f(x):
        with torch.no_grad():
            p.copy_(x)
        return (m() * w).sum()

    x0 = p.detach().clone()
    with torch.no_grad():
        p.copy_(x0)
    loss = (m() * w).sum()
    (grad,) = torch.autograd.grad(loss, p)
    eps = 1e-6
    fd = torch.zeros_like(x0)
    flat = fd.view(-1)
    for i in range(x0.numel()):
        e = torch.zeros_like(x0).view(-1)
        e[i] = eps
        flat[i] = (f(x0 + e.view_as(x0)) - f(x0 - e.view_as(x0))) / (2 * eps)
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", PARAMS)
@given(n=st.integers(1, 5000), k=st.integers(1, 64), batch=st.lists(st.integers(1, 3), max_size=2))
def test_parameter_count_equals_closed_form(name, n, k, batch):
    k = min(k, n)
    p = UNITARY_PARAMS[name]
    count = p.num_parameters(n, k)
    if name == "pauli":
        if n & (n - 1) == 0:
            q = n.bit_length() - 1
            assert count == q + 2 * (q // 2 + max(q - 1, 0) // 2)
        assert count == pauli_count(n)
    elif name == "givens":
        d = max(1, (n - 1).bit_length())
        assert count == sum(len([i for i in range(n) if (i // (1 << (j % d))) % 2 == 0 and i + (1 << (j % d)) < n])
                            for j in range(d))
    elif name in ("cayley_packed", "cayley_neumann"):     # the strict upper triangle of one n×n block
        assert count == math.comb(n, 2)
        if n > 150:
            return
    else:
        assert count == n * k
    if n * k <= 20000:
        m = p.build(n, k, tuple(batch))
        assert sum(x.numel() for x in m.parameters()) == math.prod(batch) * count


def test_pauli_count_is_polylog():
    for n in (1024, 2048, 4096, 8192, 16384):
        assert pauli_count(n, 1) == circuit_angle_count(int(math.log2(n)), 1) <= 3 * math.log2(n)
    # non powers of two stay O(log² N)
    assert pauli_count(16383, 1) <= 3 * math.log2(16384) ** 2
    assert pauli_count(768, 1) == 2 * circuit_angle_count(9, 1) + circuit_angle_count(8, 1) + 1


def dense_circuit(n_qubits, theta, layers):
    """Independent reference: the 2ⁿ×2ⁿ circuit matrix from Kronecker products (little-endian:
    qubit q is bit q of the basis index)."""
    dim = 1 << n_qubits

    def ry_on(q, t):
        c, s = math.cos(t / 2), math.sin(t / 2)
        g = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        mats = [g if j == q else torch.eye(2, dtype=torch.float64) for j in reversed(range(n_qubits))]
        out = mats[0]
        for m in mats[1:]:
            out = torch.kron(out, m)
        return out

    def cz(q1, q2):
        d = torch.tensor([-1.0 if (i >> q1) & 1 and (i >> q2) & 1 else 1.0 for i in range(dim)], dtype=torch.float64)
        return torch.diag(d)

    u = torch.eye(dim, dtype=torch.float64)
    a = 0
    for q in range(n_qubits):
        u = ry_on(q, theta[a]) @ u
        a += 1
    for _ in range(layers):
        for parity in (0, 1):
            for p in range(parity, n_qubits - 1, 2):
                u = cz(p, p + 1) @ u
                for q in (p, p + 1):
                    u = ry_on(q, theta[a]) @ u
                    a += 1
    assert a == len(theta)
    return u


@pytest.mark.parametrize("n_qubits,layers", [(1, 1), (2, 1), (3, 2), (4, 1), (5, 2)])
def test_pauli_frame_equals_dense_circuit(n_qubits, layers):
    n = 1 << n_qubits
    m = UNITARY_PARAMS["pauli"].build(n, n, (), dtype=torch.float64, layers=layers,
                                      rng=torch.Generator().manual_seed(n_qubits))
    ref = dense_circuit(n_qubits, m.theta.detach().tolist(), layers)
    torch.testing.assert_close(m().detach(), ref, atol=1e-12, rtol=0)


def test_identity_init_starts_at_identity():
    for name in ("cayley", "exp", "taylor", "householder", "givens"):
        m = UNITARY_PARAMS[name].build(12, 5, (3,), init="identity")
        torch.testing.assert_close(m().detach(), torch.eye(12, 5).expand(3, 12, 5))


def test_quantized_angles_take_few_values_and_pass_gradients():
    m = UNITARY_PARAMS["pauli"].build(16, 4, (), bits=3)
    u = m()
    from tnpeft.params.unitary import quantize_ste

    q = quantize_ste(m.theta, 3).detach()
    levels = torch.round(q / (2 * math.pi / 8))
    torch.testing.assert_close(q, levels * (2 * math.pi / 8))
    u.sum().backward()
    assert m.theta.grad is not None and m.theta.grad.abs().sum() > 0


@pytest.mark.parametrize("param", sorted(UNITARY_PARAMS))
def test_bfloat16_parameters_get_frames_computed_in_float32(param):
    m = UNITARY_PARAMS[param].build(48, 6, (), dtype=torch.bfloat16)
    u = m()
    assert u.dtype == torch.bfloat16
    u32 = m._compute(m.flat_param().float())[0]
    if UNITARY_PARAMS[param].exact:     # cayley_neumann, peft OFT's series, is not orthogonal by design
        assert (u32.double().T @ u32.double() - torch.eye(6, dtype=torch.float64)).abs().max() < 1e-5
    assert torch.equal(u, u32.to(torch.bfloat16).reshape(u.shape))     # computed in float32, rounded once
