"""tnpeft.params.linalg.solve: right where torch's batched CPU solve is not (see its docstring)."""

from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnpeft.params.linalg import BATCHED_CPU_MAX, solve
from tnpeft.params.unitary import UNITARY_PARAMS


@contextmanager
def threads(n: int = 2):
    before = torch.get_num_threads()
    torch.set_num_threads(n)          # torch's batched CPU LU goes wrong with two threads or more
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def two_threads():
    with threads(2):
        yield


@settings(max_examples=8, deadline=None)
@given(batch=st.integers(2, 4), n=st.sampled_from([64, BATCHED_CPU_MAX, 200, 256]), m=st.integers(1, 8),
       scale=st.sampled_from([0.01, 1.0]), seed=st.integers(0, 2**31 - 1))
def test_batched_solve_equals_a_float64_reference(batch, n, m, scale, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, generator=g) * scale
    a = torch.eye(n) + (a - a.transpose(1, 2))             # I + skew: condition number ≤ 1 + 2·scale·√n·3
    b = torch.randn(batch, n, m, generator=g)
    want = torch.stack([torch.linalg.solve(x.double(), y.double()) for x, y in zip(a, b)])
    with threads(2):
        got = solve(a, b)
    assert got.shape == (batch, n, m)
    assert ((got.double() - want).norm() / want.norm()).item() < 1e-4


def test_broadcast_batch_and_gradients(two_threads):
    r = torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0))
    a = torch.eye(256) + 0.1 * (r - r.transpose(1, 2))
    b = torch.randn(1, 256, 2, requires_grad=True)
    x = solve(a, b)
    residual = (a @ x - b.expand(3, 256, 2)).norm() / b.norm()
    assert x.shape == (3, 256, 2) and residual.item() < 1e-5
    x.sum().backward()
    assert b.grad is not None and torch.isfinite(b.grad).all()


@pytest.mark.parametrize("param", ["cayley", "cayley_packed"])
def test_frames_batched_across_layers_stay_orthonormal(two_threads, param):
    # frames of several layers are computed in one batched pass: 256 rows is where torch's batched
    # LU went wrong
    frame = UNITARY_PARAMS[param].build(256, 8, (3,), rng=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in frame.parameters():
            p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
        u = frame()
    err = (u.transpose(-1, -2) @ u - torch.eye(8)).abs().max().item()
    assert err < 1e-4, err
