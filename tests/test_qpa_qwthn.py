"""QPA (generated LoRA factors), QWTHN (MPO + QNN) and MPO adapters."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import tiny_gpt2, train_lm
from hypothesis import given, settings
from hypothesis import strategies as st

import tnpeft
from tnpeft.adapters import factorize, lora, mpo, qpa, qwthn, tt_from_matrix
from tnpeft.circuits.circuit import probabilities, qnn_circuit, simulate
from tnpeft.errors import ConfigError, GraphError, NotMergeableError
from tnpeft.graph import Dense, Graph, HyperNetwork, Nonlinear
from tnpeft.runtime import GraphModule


def _randomize(module, seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)


# ----------------------------------------------------------------------------------------- QPA
def qpa_closed_form(n, m, r, chunk, layers, hidden=(32, 64, 128, 128, 64, 32, 32)):
    total = r * (n + m)
    n_ch = -(-total // chunk)
    n_q = max(1, math.ceil(math.log2(n_ch))) if n_ch > 1 else 1
    widths = [n_q + 1, *hidden, chunk]
    return n_q * layers + sum(a * b + b for a, b in zip(widths, widths[1:]))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 300), m=st.integers(2, 300), r=st.integers(1, 6), chunk=st.integers(1, 400),
       layers=st.integers(1, 9))
def test_qpa_count_is_the_closed_form_and_factors_have_lora_shapes(n, m, r, chunk, layers):
    g = qpa(n, m, r=r, chunk_size=chunk, qnn_layers=layers)
    gm = GraphModule(g)
    want = qpa_closed_form(n, m, r, chunk, layers)
    assert g.num_parameters() == want
    assert sum(p.numel() for p in gm.parameters() if p.requires_grad) == want
    assert g.num_generated() == r * (n + m)
    ref = lora(n, m, r=r)                       # LoRA's factors: A (r × N), B (M × r)
    refm = GraphModule(ref)
    assert gm.tensor("A").shape == refm.tensor("A").shape == (r, n)
    assert gm.tensor("B").shape == refm.tensor("B").shape == (m, r)


def test_qpa_factors_match_peft_lora_shapes():
    from peft import LoraConfig, get_peft_model

    base = tiny_gpt2()
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["c_fc"], fan_in_fan_out=True))
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("qpa", ["c_fc"], r=4, chunk_size=64))
    for path, layer in tnpeft.nn.tn_layers(m):
        peft_layer = pm.base_model.model.get_submodule(path)
        gm = layer.tn_adapters["default"]
        assert gm.tensor("A").shape == peft_layer.lora_A["default"].weight.shape
        assert gm.tensor("B").shape == peft_layer.lora_B["default"].weight.shape


def test_qpa_forward_is_lora_with_the_generated_factors():
    g = qpa(40, 24, r=3, chunk_size=10, qnn_layers=2)
    gm = GraphModule(g)
    _randomize(gm)
    x = torch.randn(5, 40)
    a, b = gm.tensor("A"), gm.tensor("B")
    torch.testing.assert_close(gm(x), x @ a.T @ b.T * g.scale)
    # the generated vector is the generator's flat output, A first (row-major), then B
    flat = gm.G()
    torch.testing.assert_close(torch.cat([a.reshape(-1), b.reshape(-1)]), flat)
    # and the generator follows the formula: MLP(features(p)) chunk by chunk
    gen = gm.G
    p = probabilities(simulate(gen.circuit, gen.theta.double())).float()[: gen.shape.n_chunks]
    feats = torch.cat([(p * 2 ** gen.shape.qubits - 1)[:, None], gen.bits], 1)
    torch.testing.assert_close(flat, gen.mlp(feats).reshape(-1)[: g.num_generated()])


def test_qpa_reference_preset():
    g = qpa(30, 20, r=2, chunk_size=7, qnn_layers=3, preset="reference")
    gm = GraphModule(g)
    assert g.scale == 2.0
    gen = gm.G
    assert not any(isinstance(mod, torch.nn.Tanh) for mod in gen.mlp)   # an affine MLP
    flat = gen()
    assert abs(float(flat.detach().mean())) < 1e-5                                # mean-centred
    p = gen.probabilities()
    f = (0.6 * torch.tanh(0.1 * 2 ** (gen.shape.qubits - 1) * p)) ** 0.15
    torch.testing.assert_close(gen.features(p)[:, 0], f - f.mean())
    bits = gen.features(p)[:, 1:]
    for i in range(gen.shape.n_chunks):                                  # ±1 bits of i, qubit q = bit q
        assert bits[i].tolist() == [float(2 * ((i >> q) & 1) - 1) for q in range(gen.shape.qubits)]


def test_generator_runs_once_per_training_forward_and_is_cached_without_grad():
    g = qpa(16, 12, r=2, chunk_size=8, qnn_layers=2)
    gm = GraphModule(g)
    calls = []
    gm.G.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(3, 16)
    opt = torch.optim.SGD(gm.parameters(), lr=0.1)
    for _ in range(2):
        gm(x).square().sum().backward()
        opt.step()
        opt.zero_grad()
    assert len(calls) == 2                      # fresh every training forward
    with torch.no_grad():
        y1 = gm(x)
        y2 = gm(x)
        gm.dense()
    assert len(calls) == 3                      # one generation serves eval and dense()
    with torch.no_grad():
        gm.G.theta.add_(0.5)              # a parameter change invalidates the cache
        y3 = gm(x)
    assert len(calls) == 4 and torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_qpa_generates_from_given_probabilities():
    g = qpa(16, 12, r=2, chunk_size=8, qnn_layers=2)
    gm = GraphModule(g)
    exact = gm.G.probabilities().detach()
    a = gm.generated_values("G", probs=exact)["A"]
    torch.testing.assert_close(a, gm.tensor("A"))
    with pytest.raises(ConfigError, match="first 7 basis states"):
        gm.generated_values("G", probs=torch.ones(3))


def test_qpa_injects_trains_merges_and_reloads(tmp_path):
    base = tiny_gpt2()
    ids = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("qpa", ["c_attn", "c_fc"], r=4, chunk_size=32,
                                                                qnn_layers=4))
    n_train = sum(p.numel() for p in m.parameters() if p.requires_grad)
    per_layer = {path: layer.tn_adapters["default"].graph.num_parameters() for path, layer in tnpeft.nn.tn_layers(m)}
    assert n_train == sum(per_layer.values())
    losses = train_lm(m, ids, lr=3e-3)
    assert losses[-1] < losses[0] - 0.05, losses
    m.eval()
    with torch.no_grad():
        y = m(ids).logits
    tnpeft.save_adapter(m, tmp_path)
    fresh = tnpeft.load_adapter(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, y)
        tnpeft.merge(m)
        torch.testing.assert_close(m(ids).logits, y, atol=1e-5, rtol=1e-5)
        tnpeft.unmerge(m)
        torch.testing.assert_close(m(ids).logits, y, atol=1e-5, rtol=1e-5)
    # only the generator is stored: no LoRA-sized tensors in the file
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert sum(t.numel() for t in stored.values()) == n_train


def test_generator_errors_name_the_field():
    with pytest.raises(ConfigError) as e:
        qpa(8, 8, chunk_size=0)
    assert e.value.field == "chunk_size"
    with pytest.raises(ConfigError) as e:
        qpa(8, 8, preset="paper")
    assert e.value.field == "preset"
    nodes = [Dense("A", ("r", "in"), (2, 8)), Dense("B", ("out", "r"), (8, 2))]
    with pytest.raises(GraphError, match="no such node") as e:
        Graph(nodes, hypernetworks=[HyperNetwork("G", ("A", "C"))])
    assert e.value.node == "G"
    with pytest.raises(GraphError, match="two hyper-networks"):
        Graph(nodes, hypernetworks=[HyperNetwork("G", ("A",)), HyperNetwork("H", ("A", "B"))])
    with pytest.raises(GraphError, match="already used"):
        Graph(nodes, hypernetworks=[HyperNetwork("A", ("B",))])


# ----------------------------------------------------------------------------------------- QWTHN / MPO
def test_factorize():
    assert factorize(768, 2) == (32, 24)
    assert factorize(8, 3) == (2, 2, 2)
    assert factorize(7, 2) == (7, 1)
    for n in range(1, 200):
        for k in (1, 2, 3):
            assert math.prod(factorize(n, k)) == n


def mpo_closed_form(n_f, m_f, r_f, bond):
    k = len(n_f)
    b = [1] + [bond] * (k - 1) + [1]
    return sum(b[t] * n_f[t] * r_f[t] * b[t + 1] + b[t] * r_f[t] * m_f[t] * b[t + 1] for t in range(k))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 200), m=st.integers(2, 200), r=st.sampled_from([1, 2, 4, 6, 8]), cores=st.integers(1, 3),
       bond=st.integers(1, 6), fusion=st.sampled_from(["product", "linear"]), layers=st.integers(1, 3))
def test_qwthn_count_is_the_closed_form(n, m, r, cores, bond, fusion, layers):
    g = qwthn(n, m, r=r, cores=cores, bond=bond, fusion=fusion, qnn_layers=layers)
    gm = GraphModule(g)
    n_q = max(1, math.ceil(math.log2(r))) if r > 1 else 1
    qnn = n_q * max(layers, math.ceil(r / n_q)) + (2 * r if fusion == "linear" else 0)
    want = mpo_closed_form(factorize(n, cores), factorize(m, cores), factorize(r, cores), bond) + qnn
    assert g.num_parameters() == want
    assert sum(p.numel() for p in gm.parameters() if p.requires_grad) == want
    assert mpo(n, m, r=r, cores=cores, bond=bond).num_parameters() == want - qnn


def test_qwthn_claim_configuration():
    # the configuration documented in docs/adapters/qwthn.md: GPT-2's c_attn (768 → 2304), r = 8
    g = qwthn(768, 2304, r=8, cores=2, bond=8)
    assert g.num_parameters() == 3_721
    assert 1 - g.num_parameters() / (8 * (768 + 2304)) > 0.76


def _manual_qwthn(mod, x):
    """An independent evaluation: contract the down cores to a matrix, run the QNN on each row
    with the simulator, fuse, contract the up cores."""
    g = mod.graph
    k = len(g.meta["in_factors"])
    assert k == 2
    d1, d2, u1, u2 = (mod.tensor(n).double() for n in ("D1", "D2", "U1", "U2"))
    a = torch.einsum("pja,aqk->jkpq", d1, d2).reshape(g.meta["hparams"]["r"], g.in_features)
    b = torch.einsum("jpb,bkq->pqjk", u1, u2).reshape(g.out_features, g.meta["hparams"]["r"])
    h = x.double() @ a.T
    q_mod = mod.Q
    circ = qnn_circuit(q_mod.opts.qubits, q_mod.opts.layers, h.shape[1], q_mod.opts.entangler)
    q = probabilities(simulate(circ, q_mod.theta.double(), h)) * 2 ** q_mod.opts.qubits
    q = q[:, : h.shape[1]]
    fused = h * q if q_mod.opts.fusion == "product" else h * q_mod.a.double() + q * q_mod.b.double()
    return fused @ b.T * g.scale


@pytest.mark.parametrize("fusion", ["product", "linear"])
def test_qwthn_forward_equals_an_independent_evaluation(fusion):
    torch.manual_seed(0)
    g = qwthn(24, 18, r=8, cores=2, bond=3, fusion=fusion, qnn_layers=2)
    gm = GraphModule(g)
    x = torch.randn(6, 24)
    assert torch.equal(gm(x), torch.zeros(6, 18))                  # last up core zero: base model
    _randomize(gm, std=0.5)
    want = _manual_qwthn(gm, x)
    # float32 against float64: outputs reach ~50 at std 0.5, so the tolerance scales with the largest
    # (over 600 draws the error stayed below 2.2e-6 of it; a fixed 1e-5 failed one draw in a few hundred)
    torch.testing.assert_close(gm(x).double(), want, atol=1e-5 * want.abs().max().item(), rtol=1e-5)


def test_qwthn_v2_starts_as_the_plain_mpo():
    g = qwthn(24, 18, r=4, bond=3, fusion="linear")
    gm = GraphModule(g)
    plain = mpo(24, 18, r=4, bond=3)
    plainm = GraphModule(plain)
    _randomize(gm, std=0.5)
    with torch.no_grad():
        gm.Q.a.fill_(1.0)
        gm.Q.b.zero_()
        for name in ("D1", "D2", "U1", "U2"):
            plainm.tensor(name).copy_(gm.tensor(name))
    x = torch.randn(5, 24)
    torch.testing.assert_close(gm(x), plainm(x))


def test_mpo_init_from_a_matrix_and_lora_compression():
    torch.manual_seed(0)
    w = torch.randn(36, 4) @ torch.randn(4, 20)                           # a rank-4 update, 20 → 36
    exactm = tt_from_matrix(mpo(20, 36, r=4, bond=64), w)                # bond ≥ the TT ranks: exact
    torch.testing.assert_close(exactm.dense(scaled=True), w, atol=1e-4, rtol=1e-4)
    # compress a trained LoRA into a tensor-train graph
    lo = lora(48, 64, r=6, init_b="normal")
    lom = GraphModule(lo)
    with torch.no_grad():
        lom.B.weight.normal_()
    dw = lom.dense(scaled=True).detach()
    ttm = tt_from_matrix(mpo(48, 64, r=6, bond=48), dw)
    torch.testing.assert_close(ttm.dense(scaled=True), dw, atol=1e-4, rtol=1e-4)
    smallm = tt_from_matrix(mpo(48, 64, r=6, bond=2), dw)                # a truncated train approximates
    err = (smallm.dense(scaled=True) - dw).norm() / dw.norm()
    assert 0 < err < 1
    assert smallm.graph.num_parameters() < ttm.graph.num_parameters() < lo.num_parameters() * 10
    with pytest.raises(ConfigError, match="shape"):
        tt_from_matrix(mpo(48, 64, r=6), torch.zeros(3, 3))
    with pytest.raises(ConfigError, match="mpo or qwthn"):
        tt_from_matrix(lo, dw)
    qw = tt_from_matrix(qwthn(48, 64, r=6, bond=48), dw)                  # QWTHN's MPO cores: the same train
    for name in ("D1", "D2", "U1", "U2"):
        torch.testing.assert_close(qw.tensor(name), ttm.tensor(name))


def test_qwthn_injects_trains_saves_and_refuses_to_merge(tmp_path):
    base = tiny_gpt2()
    ids = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    ref = base(ids).logits
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("qwthn", ["c_attn", "c_fc"], r=4, bond=4))
    torch.testing.assert_close(m(ids).logits, ref, atol=0, rtol=0)
    losses = train_lm(m, ids, lr=1e-2)
    assert losses[-1] < losses[0] - 0.05, losses
    m.eval()
    with torch.no_grad():
        y = m(ids).logits
    tnpeft.save_adapter(m, tmp_path)
    fresh = tnpeft.load_adapter(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, y)
    with pytest.raises(NotMergeableError, match="Q"):
        tnpeft.merge(m)
    with torch.no_grad():                                                  # a refused merge changes nothing
        assert torch.equal(m(ids).logits, y)


def test_qnn_node_json_round_trip_and_errors():
    g = qwthn(24, 18, r=8, fusion="linear", readout="probs", entangler="cx")
    back = Graph.from_json(g.to_json())
    assert back == g and back.num_parameters() == g.num_parameters()
    q = qpa(24, 18, r=2, chunk_size=5)
    assert Graph.from_json(q.to_json()) == q
    with pytest.raises(GraphError, match="readout 'z' on 2 qubits gives 2 values") as e:
        Nonlinear.qnn("Q", {"h": 4}, ("g",), readout="z", qubits=2)
    assert e.value.node == "Q"
    with pytest.raises(GraphError, match="fusion"):
        Nonlinear.qnn("Q", {"h": 4}, {"g": 3}, fusion="product")
    with pytest.raises(GraphError, match="takes options"):
        Nonlinear.qnn("Q", {"h": 4}, ("g",), depth=3)
    with pytest.raises(ConfigError) as e:
        qwthn(24, 18, r=8, fusion="sum")
    assert e.value.field == "fusion"
    with pytest.raises(ConfigError) as e:
        qwthn(24, 18, r=8, in_factors=(5, 5))
    assert e.value.field == "in_factors"


def test_qnn_node_computes_in_float32_for_bfloat16():
    g = qwthn(24, 18, r=4, bond=2)
    gm = GraphModule(g)
    _randomize(gm, std=0.5)
    x = torch.randn(3, 24)
    y32 = gm(x)
    g16 = copy.deepcopy(gm).to(torch.bfloat16)
    y16 = g16(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, atol=0.1, rtol=0.1)
