"""The orthogonal multiplicative adapter: exact orthogonality at any generator norm (peft's default
OFT is not), merge/unmerge by a transpose, never a dense rotation in the forward pass."""

import copy
import math

import pytest
import torch
from conftest import tiny_gpt2
from torch import nn

import tnpeft
from tnpeft.adapters import oft
from tnpeft.errors import ConfigError, GraphError
from tnpeft.runtime import GraphModule


def rotation(gm):
    return gm.dense()  # (N, N): x ↦ R x


@pytest.mark.parametrize("butterfly", [False, True])
@pytest.mark.parametrize("param", ["cayley", "exp", "householder", "givens"])
def test_starts_at_identity_and_stays_orthogonal_at_any_norm(butterfly, param):
    g = oft(32, 32, block_size=8, butterfly=butterfly, param=param)
    gm = GraphModule(g)
    torch.testing.assert_close(rotation(gm), torch.eye(32))
    for scale in (0.3, 1.1, 10.0, 100.0):
        with torch.no_grad():
            for p in gm.parameters():
                p.normal_()
                p.mul_(scale)
        r = rotation(gm).double()
        assert (r.T @ r - torch.eye(32, dtype=torch.float64)).abs().max() <= 1e-5, (param, scale)


def peft_cayley_neumann_error(generator_norm: float, block: int = 8, seed: int = 0) -> float:
    from peft.tuners.oft.layer import OFTRotationModule

    n_el = block * (block - 1) // 2
    m = OFTRotationModule(r=4, n_elements=n_el, block_size=block, in_features=4 * block)
    torch.manual_seed(seed)
    with torch.no_grad():
        m.weight.normal_()
        skew = m._pytorch_skew_symmetric(m.weight, block)
        m.weight.mul_(generator_norm / torch.linalg.matrix_norm(skew, ord=2).max())
        r = m._cayley_batch(m.weight, block, use_cayley_neumann=True, num_neumann_terms=5)
    eye = torch.eye(block)
    return (r.transpose(1, 2) @ r - eye).abs().max().item()


def test_peft_default_oft_is_not_orthogonal_where_ours_is():
    errs = {s: peft_cayley_neumann_error(s) for s in (0.3, 1.1)}
    assert errs[0.3] > 1e-3 and errs[1.1] > 1e-1  # peft's truncated series drifts off the manifold
    g = oft(32, 32, block_size=8)
    gm = GraphModule(g)
    for s in (0.3, 1.1):
        with torch.no_grad():
            p = gm.R1.skew_factor
            p.normal_()
            skew = p - p.transpose(1, 2)
            p.mul_(s / torch.linalg.matrix_norm(skew, ord=2).max())
        r = rotation(gm).double()
        assert (r.T @ r - torch.eye(32, dtype=torch.float64)).abs().max() <= 1e-5


def test_forward_is_base_of_rotated_input_and_merges_exactly():
    torch.manual_seed(0)
    lin = nn.Linear(24, 10)
    model = nn.Sequential(lin)
    w0 = lin.weight.detach().clone()
    tnpeft.inject(model, tnpeft.AdapterConfig("oft", ["0"], block_size=6, butterfly=True))
    layer = model[0]
    with torch.no_grad():
        for p in layer.tn_adapters["default"].parameters():
            p.normal_()
    x = torch.randn(5, 24)
    r = layer.tn_adapters["default"].dense()
    torch.testing.assert_close(model(x), nn.functional.linear(x @ r.T, w0, lin.bias), atol=1e-5, rtol=1e-5)
    y = model(x)
    tnpeft.merge(model)
    torch.testing.assert_close(layer.base_layer.weight, w0 @ r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x), y, atol=1e-5, rtol=1e-5)
    tnpeft.unmerge(model)
    torch.testing.assert_close(layer.base_layer.weight, w0, atol=1e-6, rtol=0)


def test_gpt2_conv1d_merge_and_combination_with_lora():
    base = tiny_gpt2()
    ids = torch.randint(0, 97, (2, 10))
    ref = base(ids).logits
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("oft", ["c_attn", "c_fc"], block_size=8,
                                                                  butterfly=True), adapter_name="rot")
    torch.testing.assert_close(m(ids).logits, ref, atol=1e-5, rtol=1e-5)  # identity start
    tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"), adapter_name="lo")
    for _, layer in tnpeft.nn.tn_layers(m):
        if "rot" in layer.tn_adapters:
            with torch.no_grad():
                for p in layer.tn_adapters["rot"].parameters():
                    p.normal_(0, 0.3)
    tnpeft.set_adapter(m, ["lo", "rot"])
    y = m(ids).logits
    tnpeft.merge(m)  # the rotation is merged first whatever the order asked
    torch.testing.assert_close(m(ids).logits, y, atol=1e-4, rtol=1e-4)
    tnpeft.unmerge(m)
    torch.testing.assert_close(m(ids).logits, y, atol=1e-4, rtol=1e-4)
    with tnpeft.disable_adapters(m):
        torch.testing.assert_close(m(ids).logits, ref, atol=1e-4, rtol=1e-4)


def test_no_dense_rotation_in_the_forward_pass():
    g = oft(4096, 4096, block_size=64, butterfly=True)
    gm = GraphModule(g)
    for n in g.nodes.values():  # the largest tensor is a batch of small rotations
        assert max(n.sizes[-2:]) <= 64
    plan = gm.plan(8)[0]
    assert plan.largest_intermediate <= 8 * 4096
    assert g.num_parameters() == 64 * 64 * 64 + 64 * 64 * 64


def test_count_and_errors():
    assert oft(768, 768, block_size=32).num_parameters() == 24 * 32 * 32
    assert oft(768, 768, block_size=32, param="givens").num_parameters() == 24 * (16 + 16 + 16 + 16 + 16)
    with pytest.raises(ConfigError) as e:
        oft(100, 100, block_size=32)
    assert e.value.field == "block_size"
    with pytest.raises(ConfigError) as e:
        oft(64, 64, param="pauli")
    assert e.value.field == "param"
    with pytest.raises(GraphError, match="input-mode"):
        tnpeft.nn.TNLinear(nn.Linear(16, 8)).add_adapter("x", oft(8, 8, block_size=4))
    assert math.isclose(oft(64, 64, block_size=8).scale, 1.0)
