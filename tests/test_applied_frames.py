"""Frames applied without their matrix: the Givens butterfly as two block-diagonal factors, on
vectors and inside an adapter's forward, against the formed frame (float64, values and
gradients)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnpeft
import tnpeft.runtime.applied_frames as applied_frames
from tnpeft import Graph, Unitary
from tnpeft.adapters import oft
from tnpeft.params.unitary import UNITARY_PARAMS, GivensFrame
from tnpeft.runtime import GraphModule


def _frame(n, k, g, layers, seed):
    kw = {} if layers is None else {"layers": layers}
    m = UNITARY_PARAMS["givens"].build(n, k, (g,), dtype=torch.float64, **kw)
    with torch.no_grad():
        m.theta.copy_(torch.randn(m.theta.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return m


@settings(max_examples=60, deadline=None)
@given(n=st.integers(4, 300), k_frac=st.floats(0.01, 1.0), g=st.integers(1, 3),
       layers=st.one_of(st.none(), st.integers(1, 20)), adjoint=st.booleans(), seed=st.integers(0, 2**16))
def test_apply_equals_the_formed_frame(n, k_frac, g, layers, adjoint, seed):
    k = max(1, int(round(k_frac * n)))
    m = _frame(n, k, g, layers, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    h = torch.randn(5, g, n if adjoint else k, dtype=torch.float64, generator=gen, requires_grad=True)
    u = m()                                                   # (g, n, k), formed
    ref = torch.einsum("mgn,gnk->mgk", h, u) if adjoint else torch.einsum("mgk,gnk->mgn", h, u)
    w = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    g_ref = torch.autograd.grad((ref * w).sum(), (h, m.theta))
    out = m.apply_frame(h, adjoint=adjoint)
    g_out = torch.autograd.grad((out * w).sum(), (h, m.theta))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_out[0], g_ref[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(g_out[1], g_ref[1], rtol=0, atol=1e-11)


def test_frame_matches_an_independent_product_of_rotations():
    # the formed frame against 2×2 rotations written into an N×N identity one pair at a time
    from tnpeft.params.unitary import butterfly_pairs
    for n, k, layers in [(6, 6, None), (37, 37, None), (64, 64, 3), (100, 40, 9), (130, 130, 16)]:
        m = _frame(n, k, 1, layers, n)
        theta = m.theta.detach()[0]
        full, off = torch.eye(n, dtype=torch.float64), 0
        for a, b in butterfly_pairs(n, m.n_layers):
            r = torch.eye(n, dtype=torch.float64)
            for i, j in zip(a, b):
                c, s = torch.cos(theta[off]), torch.sin(theta[off])
                r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
                off += 1
            full = r @ full
        torch.testing.assert_close(m()[0], full[:, :k], rtol=0, atol=1e-12)


def _grads(module, x, w):
    module.zero_grad()
    x = x.clone().requires_grad_(True)
    y = module(x)
    (y * w).sum().backward()
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("n,block", [(256, 256), (512, 128), (200, 200)])
def test_oft_applies_its_frames_and_agrees_with_the_dense_path(n, block, monkeypatch):
    g = oft(n, 64, block_size=block, param="givens")
    gm = GraphModule(g)
    mod = gm.double()
    with torch.no_grad():
        for p in mod.parameters():
            p.normal_()
    assert mod._applied, "a wide butterfly should be applied to the activation"
    x = torch.randn(3, 7, n, dtype=torch.float64)
    w = torch.randn(3, 7, n, dtype=torch.float64)
    fast = _grads(mod, x, w)
    monkeypatch.setattr(applied_frames, "APPLY_THRESHOLD", 0.0)
    dense_g = oft(n, 64, block_size=block, param="givens")
    dense_gm = GraphModule(dense_g)
    ref_mod = dense_gm.double()
    ref_mod.load_state_dict(mod.state_dict())
    assert not ref_mod._applied
    ref = _grads(ref_mod, x, w)
    torch.testing.assert_close(fast[0], ref[0], rtol=0, atol=1e-11)
    torch.testing.assert_close(fast[0], x @ mod.dense().T, rtol=0, atol=1e-11)   # x ↦ R x per row
    torch.testing.assert_close(fast[1], ref[1], rtol=0, atol=1e-11)
    for name in ref[2]:
        torch.testing.assert_close(fast[2][name], ref[2][name], rtol=0, atol=1e-10)


def test_an_additive_frame_read_by_its_long_leg_is_the_adjoint():
    # U is (N=i, K=o): the activation carries i, so the stage is x ↦ Uᵀ x, then added to the base
    n, k = 512, 300
    g = Graph([Unitary("U", ("i", "o"), (n, k), param="givens")], in_index="i", out_index="o", name="adjoint")
    gm = GraphModule(g)
    mod = gm.double()
    d = mod._applied[0]
    assert d.adjoint
    x = torch.randn(4, n, dtype=torch.float64)
    base = torch.randn(4, k, dtype=torch.float64)
    torch.testing.assert_close(mod(x), x @ mod.tensor("U"), rtol=0, atol=1e-12)
    out = mod.accumulate(base.clone(), x)
    torch.testing.assert_close(out, base + x @ mod.tensor("U"), rtol=0, atol=1e-12)


def test_narrow_and_small_frames_are_formed():
    assert GivensFrame(3072, 8).apply_cost() > applied_frames.APPLY_THRESHOLD   # a Quantum-PEFT-like frame
    assert GivensFrame(32, 32).apply_cost() > applied_frames.APPLY_THRESHOLD    # OFT's default block
    assert GivensFrame(3, 3).apply_cost() is None
    assert GivensFrame(3072, 3072).apply_cost() < 0.1
    g = oft(64, 64, block_size=32, param="givens")
    gm = GraphModule(g)
    assert not gm._applied


def test_an_applied_frame_leaves_the_batching_scope():
    g = oft(256, 64, block_size=256, param="givens")
    gm = GraphModule(g)
    frame = gm.R1
    assert frame.scope is None
    # its matrix is still there for merging and drawing
    r = gm.dense().double()
    torch.testing.assert_close(r.T @ r, torch.eye(256, dtype=torch.float64), rtol=0, atol=1e-5)


def test_a_model_holding_frames_takes_module_apply():
    # nn.Module.apply(fn) walks the modules; a frame's own method has another name and never shadows it
    m = tnpeft.GraphModule(tnpeft.adapters.oft(32, 32, block_size=8, butterfly=True, param="givens"))
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert "GivensFrame" in seen and "GraphModule" in seen
