"""Quantum-PEFT: counts in closed form, orthonormal frames, training from the base model, exact merge."""

import copy

import pytest
import torch
from conftest import tiny_gpt2, train_lm
from hypothesis import given
from hypothesis import strategies as st

import tnpeft
from tnpeft.adapters import quantum_peft
from tnpeft.errors import ConfigError
from tnpeft.params.unitary import UNITARY_PARAMS
from tnpeft.runtime import GraphModule

PARAMS = sorted(k for k, v in UNITARY_PARAMS.items() if "intrinsic_rank" in v.options or k in ("pauli", "givens"))


@given(n=st.integers(2, 3000), m=st.integers(2, 3000), k=st.integers(1, 16), layers=st.integers(1, 4),
       param=st.sampled_from(PARAMS), kk=st.one_of(st.none(), st.integers(1, 16)))
def test_count_equals_closed_form(n, m, k, layers, param, kk):
    k = min(k, n, m)
    if kk is not None:
        kk = min(kk, k)
    g = quantum_peft(n, m, rank=k, layers=layers, param=param, intrinsic_rank=kk)
    p = UNITARY_PARAMS[param]
    if param in ("pauli", "givens"):
        lay = layers
        want = p.num_parameters(n, k, layers=lay) + p.num_parameters(m, k, layers=lay) + (kk or k)
    else:
        want = n * (kk or k) + m * (kk or k) + k
    assert g.num_parameters() == want


@pytest.mark.parametrize("param", PARAMS)
def test_frames_orthonormal_and_dense_is_u_lambda_vt(param):
    g = quantum_peft(96, 40, rank=6, param=param)
    gm = GraphModule(g)
    with torch.no_grad():
        gm.L.weight.normal_()
    u, v, lam = gm.tensor("U"), gm.tensor("V"), gm.tensor("L")
    for f in (u, v):
        torch.testing.assert_close(f.T @ f, torch.eye(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(gm.dense(), u @ torch.diag(lam) @ v.T, atol=1e-5, rtol=1e-5)


def test_intrinsic_rank_masks_lambda_for_circuits():
    g = quantum_peft(64, 64, rank=8, intrinsic_rank=3)
    gm = GraphModule(g)
    with torch.no_grad():
        gm.L.weight.fill_(1.0)
    lam = gm.tensor("L")
    assert lam.tolist() == [1.0] * 3 + [0.0] * 5
    assert torch.linalg.matrix_rank(gm.dense()) == 3


@pytest.mark.parametrize("param", ["pauli", "cayley", "givens"])
def test_trains_from_the_base_model_and_merges_exactly(param):
    base = tiny_gpt2()
    ids = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    ref = base(ids).logits
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("quantum_peft", ["c_attn", "c_proj", "c_fc"],
                                                                rank=4, param=param, layers=2))
    torch.testing.assert_close(m(ids).logits, ref, atol=0, rtol=0)  # Λ = 0: exactly the base model
    losses = train_lm(m, ids, lr=3e-2, steps=25)
    assert losses[-1] < losses[0] - 0.05, losses
    m.eval()
    for _, layer in tnpeft.nn.tn_layers(m):  # frames stay orthonormal through training
        for name in ("U", "V"):
            f = layer.tn_adapters["default"].tensor(name)
            torch.testing.assert_close(f.T @ f, torch.eye(4), atol=1e-5, rtol=0)
    y = m(ids).logits
    tnpeft.merge(m)
    torch.testing.assert_close(m(ids).logits, y, atol=1e-5, rtol=1e-5)
    tnpeft.unmerge(m)
    torch.testing.assert_close(m(ids).logits, y, atol=1e-5, rtol=1e-5)


def test_bad_hyperparameters_are_named():
    with pytest.raises(ConfigError) as e:
        quantum_peft(8, 8, rank=9)
    assert e.value.field == "rank"
    with pytest.raises(ConfigError) as e:
        quantum_peft(8, 8, rank=4, param="qr")
    assert e.value.field == "param"
    with pytest.raises(ConfigError) as e:
        quantum_peft(8, 8, rank=4, param="cayley", bits=4)
    assert e.value.field == "bits"
    with pytest.raises(ConfigError) as e:
        quantum_peft(8, 8, rank=4, intrinsic_rank=5)
    assert e.value.field == "intrinsic_rank"


def test_save_load_round_trip(tmp_path):
    base = tiny_gpt2()
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("quantum_peft", ["c_fc"], rank=3, param="pauli"))
    with torch.no_grad():
        for _, layer in tnpeft.nn.tn_layers(m):
            layer.tn_adapters["default"].L.weight.normal_()
    tnpeft.save_adapter(m, tmp_path)
    fresh = tnpeft.load_adapter(copy.deepcopy(base), tmp_path)
    ids = torch.randint(0, 97, (2, 8))
    assert torch.equal(fresh(ids).logits, m(ids).logits)
