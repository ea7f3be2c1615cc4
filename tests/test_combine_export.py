"""Weighted combinations of adapters (graph algebra), deleting adapters, and exporting every linear
adapter as a peft LoRA checkpoint — checked against dense products and peft's own loader."""

import copy

import pytest
import torch
from conftest import load_minilm, tiny_gpt2
from hypothesis import given
from hypothesis import strategies as st
from peft import PeftModel

import tnpeft
from tnpeft import AdapterConfig, Dense, Graph, GraphModule
from tnpeft.algebra import low_rank_factors, truncate_factors, weighted_sum
from tnpeft.errors import AdapterStateError, ConfigError, NotMergeableError
from tnpeft.nn import adapter_config, tn_layers

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
BERT_TARGETS = ["query", "key", "value", "dense"]
HP = {"lora": dict(r=4), "quantum_peft": dict(rank=4), "adalora": dict(r=4, target_r=2), "oft": dict(block_size=8),
      "qpa": dict(r=2), "mpo": dict(r=4), "qwthn": dict(r=4)}
LINEAR = [m for m in HP if m != "qwthn"]


def chain3(in_features, out_features, r=3):
    """A user topology: three dense nodes in a chain, in → r → s → out."""
    return Graph([Dense("P", ("r", "in"), (r, in_features)), Dense("M", ("s", "r"), (r + 1, r)),
                  Dense("Q", ("out", "s"), (out_features, r + 1))], scale=0.5, name="chain3")


def perturb(model, name, seed, size=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in tn_layers(model):
            if name in layer.tn_adapters:
                for p in layer.tn_adapters[name].parameters():
                    p.add_(size * torch.randn(p.shape, generator=g))


def two_adapters(base, method, targets, hp, second=None):
    m = tnpeft.inject(copy.deepcopy(base), AdapterConfig(method, targets, **hp), adapter_name="a")
    second = second or (method, hp)
    tnpeft.inject(m, AdapterConfig(second[0], targets, **second[1]), adapter_name="b")
    perturb(m, "a", 1)
    perturb(m, "b", 2)
    return m


def layer_output(layer, names, x):
    before = list(layer.active_adapters)
    layer.active_adapters = list(names)
    try:
        with torch.no_grad():
            return layer(x)
    finally:
        layer.active_adapters = before


def check_cat(model, weights, new="ab", tol=1e-5):
    for _, layer in tn_layers(model):
        x = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(3))
        base = layer_output(layer, [], x)
        want = base + sum(w * (layer_output(layer, [n], x) - base) for n, w in zip("ab", weights))
        got = layer_output(layer, [new], x)
        scale = max(1.0, float(want.abs().max()))
        assert float((got - want).abs().max()) <= tol * scale


@pytest.mark.parametrize("method", LINEAR + ["chain3"])
def test_gpt2_cat_is_the_weighted_sum_and_svd_reports_its_error(method):
    base = tiny_gpt2()
    meth, hp = (chain3, {}) if method == "chain3" else (method, HP[method])
    m = two_adapters(base, meth, GPT2_TARGETS, hp)
    weights = [0.6, -1.1]                                     # task arithmetic: a subtraction
    rep = tnpeft.add_weighted_adapter(m, ["a", "b"], weights, "ab", combination_type="cat")
    assert rep.exact and rep.max_error == 0.0
    check_cat(m, weights)
    # the new adapter is added inactive and frozen; the active ones are unchanged
    assert all(layer.active_adapters == ["b"] for _, layer in tn_layers(m))
    assert not any(p.requires_grad for n, p in m.named_parameters() if ".ab." in n)
    rep = tnpeft.add_weighted_adapter(m, ["a", "b"], weights, "svd1", combination_type="svd", svd_rank=1)
    for path, layer in tn_layers(m):
        x = torch.eye(layer.in_features)
        base_out = layer_output(layer, [], x)
        want = sum(w * (layer_output(layer, [n], x) - base_out) for n, w in zip("ab", weights))
        got = layer_output(layer, ["svd1"], x) - base_out
        err = float((got - want).norm() / want.norm())
        assert abs(err - rep.modules[path]["error"]) < 1e-4, (path, err, rep.modules[path])
        assert rep.modules[path]["rank"] == 1
    assert 0 < rep.max_error < 1
    assert adapter_config(m, "svd1")["combination"]["max_error"] == rep.max_error


def test_cat_of_different_topologies_and_linear():
    base = tiny_gpt2()
    m = two_adapters(base, "quantum_peft", GPT2_TARGETS, HP["quantum_peft"], second=("mpo", HP["mpo"]))
    rep = tnpeft.add_weighted_adapter(m, ["a", "b"], [1.0, 2.0], "ab", combination_type="cat")
    assert {v["how"] for v in rep.modules.values()} == {"factors"} and rep.exact
    check_cat(m, [1.0, 2.0])
    with pytest.raises(ConfigError, match="one topology"):
        tnpeft.add_weighted_adapter(m, ["a", "b"], [1.0, 1.0], "lin", combination_type="linear")
    # linear on one topology: one part's size, error measured against the exact sum
    m = two_adapters(base, "lora", GPT2_TARGETS, HP["lora"])
    rep = tnpeft.add_weighted_adapter(m, ["a", "b"], [0.5, 0.5], "lin", combination_type="linear")
    for path, layer in tn_layers(m):
        assert layer.tn_adapters["lin"].graph.nodes["A"].sizes == (4, layer.in_features)
        want = 0.5 * (layer.delta_weight("a") + layer.delta_weight("b")).detach()
        got = layer.delta_weight("lin").detach()
        assert abs(float((got - want).norm() / want.norm()) - rep.modules[path]["error"]) < 1e-4
    # one part alone is exact
    rep = tnpeft.add_weighted_adapter(m, ["a"], [-2.0], "neg", combination_type="linear")
    assert rep.max_error < 1e-6
    for _, layer in tn_layers(m):
        torch.testing.assert_close(layer.delta_weight("neg"), -2.0 * layer.delta_weight("a"), atol=1e-5, rtol=1e-5)


def test_combination_refusals_change_nothing():
    base = tiny_gpt2()
    m = two_adapters(base, "lora", GPT2_TARGETS, HP["lora"], second=("qwthn", HP["qwthn"]))
    names = tnpeft.adapter_names(m)
    with pytest.raises(NotMergeableError, match="node 'Q'"):
        tnpeft.add_weighted_adapter(m, ["a", "b"], [1, 1], "ab", combination_type="cat")
    for bad, err in ((dict(adapters=["a", "zz"]), AdapterStateError), (dict(weights=[1.0, 2.0]), ConfigError),
                     (dict(combination_type="ties"), ConfigError), (dict(adapter_name="a"), AdapterStateError),
                     (dict(svd_rank=0), ConfigError), (dict(weights=[float("nan")]), ConfigError)):
        kw = dict(adapters=["a"], weights=[1.0], adapter_name="new", combination_type="svd") | bad
        with pytest.raises(err):
            tnpeft.add_weighted_adapter(m, **kw)
    assert tnpeft.adapter_names(m) == names
    # OFT (input-mode) is refused by "linear" and needs nothing merged for "cat"
    m = two_adapters(base, "oft", GPT2_TARGETS, HP["oft"])
    with pytest.raises(NotMergeableError, match="input-mode"):
        tnpeft.add_weighted_adapter(m, ["a", "b"], [1, 1], "ab", combination_type="linear")
    tnpeft.merge(m, ["b"])
    with pytest.raises(AdapterStateError, match="unmerge"):
        tnpeft.add_weighted_adapter(m, ["a", "b"], [1, 1], "ab", combination_type="cat")


@pytest.mark.parametrize("method", LINEAR + ["qwthn"])
def test_delete_adapter(method):
    base = tiny_gpt2()
    m = two_adapters(base, method, GPT2_TARGETS, HP[method])
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(0))
    tnpeft.set_adapter(m, "a")
    with torch.no_grad():
        only_a = m(ids).logits
    tnpeft.set_adapter(m, ["a", "b"])
    if method != "qwthn":
        tnpeft.merge(m)                                        # a merged adapter is unmerged first
    n_params = sum(p.numel() for p in m.parameters())
    b_params = sum(p.numel() for n, p in m.named_parameters() if ".tnpeft_adapters.b." in n)
    tnpeft.delete_adapter(m, "b")
    assert tnpeft.adapter_names(m) == ["a"]
    assert not any(".tnpeft_adapters.b." in n for n, _ in m.named_parameters())
    assert sum(p.numel() for p in m.parameters()) == n_params - b_params
    assert adapter_config(m, "b") is None
    with torch.no_grad():
        torch.testing.assert_close(m(ids).logits, only_a, atol=1e-5, rtol=1e-5)
    with pytest.raises(AdapterStateError, match="no adapter named 'b'"):
        tnpeft.delete_adapter(m, "b")
    tnpeft.delete_adapter(m, "a")
    with torch.no_grad():
        torch.testing.assert_close(m(ids).logits, base(ids).logits, atol=1e-5, rtol=1e-5)


def peft_logits(base, directory, ids):
    pm = PeftModel.from_pretrained(copy.deepcopy(base), directory).eval()
    with torch.no_grad():
        return pm(ids).logits


@pytest.mark.parametrize("method", LINEAR + ["chain3", "combined"])
def test_gpt2_export_loads_in_peft_with_the_same_outputs(method, tmp_path):
    base = tiny_gpt2()
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    if method == "combined":
        m = two_adapters(base, "quantum_peft", GPT2_TARGETS, HP["quantum_peft"], second=("adalora", HP["adalora"]))
        tnpeft.add_weighted_adapter(m, ["a", "b"], [1.0, -0.5], "default", combination_type="cat")
        tnpeft.set_adapter(m, "default")
    else:
        meth, hp = (chain3, {}) if method == "chain3" else (method, HP[method])
        m = tnpeft.inject(copy.deepcopy(base), AdapterConfig(meth, GPT2_TARGETS, **hp))
        perturb(m, "default", 1)
    with torch.no_grad():
        want = m(ids).logits
        assert float((want - base(ids).logits).abs().max()) > 1e-3
    ex = tnpeft.export_peft(m, tmp_path / "p")
    if method == "oft":
        from transformers import GPT2LMHeadModel

        assert ex.merged and not (tmp_path / "p" / "adapter_config.json").exists()
        got = GPT2LMHeadModel.from_pretrained(tmp_path / "p")(ids).logits
    else:
        assert ex.exact and not ex.merged
        assert {v["how"] for v in ex.modules.values()} == ({"lora"} if method in ("lora", "combined") else {"factors"})
        got = peft_logits(base, tmp_path / "p", ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    if method != "oft":    # compressed: the reported error is the update's relative error
        ex = tnpeft.export_peft(m, tmp_path / "q", max_rank=1)
        assert all(v["rank"] == 1 for v in ex.modules.values()) and 0 < ex.max_error < 1
        pm = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "q")
        for path, layer in tn_layers(m):
            pl = pm.base_model.model.get_submodule(path)
            got = (pl.lora_B["default"].weight @ pl.lora_A["default"].weight) * pl.scaling["default"]
            want = layer.tn_adapters["default"].dense(scaled=True).detach()
            err = float((got - want).norm() / want.norm())
            assert abs(err - ex.modules[path]["error"]) < 1e-4


def test_export_refuses_nonlinear_naming_the_node(tmp_path):
    m = tnpeft.inject(tiny_gpt2(), AdapterConfig("qwthn", GPT2_TARGETS, r=4))
    with pytest.raises(NotMergeableError, match="nonlinear node 'Q'"):
        tnpeft.export_peft(m, tmp_path / "p")
    assert not (tmp_path / "p").exists()
    with pytest.raises(ConfigError, match="max_rank"):
        tnpeft.export_peft(m, tmp_path / "p", max_rank=0)


def test_minilm_quantum_peft_export_and_combination(minilm_dir, tmp_path):
    from transformers import AutoTokenizer

    base = load_minilm(minilm_dir)
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    enc = tok(["the flight was late again", "what a lovely day"], padding=True, return_tensors="pt")
    m = two_adapters(base, "quantum_peft", BERT_TARGETS, dict(rank=4), second=("lora", dict(r=4)))
    rep = tnpeft.add_weighted_adapter(m, ["a", "b"], [1.0, -1.0], "ab", combination_type="cat")
    assert rep.exact
    check_cat(m, [1.0, -1.0])
    for name in ("a", "ab"):
        tnpeft.set_adapter(m, name)
        with torch.no_grad():
            want = m(**enc).last_hidden_state
        tnpeft.export_peft(m, tmp_path / name, adapter_name=name)
        pm = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / name).eval()
        with torch.no_grad():
            got = pm(**enc).last_hidden_state
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    tnpeft.delete_adapter(m, "ab")
    assert tnpeft.adapter_names(m) == ["a", "b"]


def _random_module(g, seed):
    mod = GraphModule(g, dtype=torch.float64, rng=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in mod.parameters():
            p.normal_(generator=torch.Generator().manual_seed(seed + 100))
    return mod


@given(w=st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=3),
       method=st.sampled_from(["lora", "quantum_peft", "adalora", "mpo", "chain3"]))
def test_graph_cat_equals_weighted_dense_sum(w, method):
    from tnpeft import adapters

    build = chain3 if method == "chain3" else getattr(adapters, method)
    hp = {"adalora": dict(r=3, target_r=2), "quantum_peft": dict(rank=3), "mpo": dict(r=4)}.get(method, {})
    mods = [_random_module(build(12, 8, **hp), k) for k in range(len(w))]
    c = weighted_sum(mods, w, "cat")
    want = sum(x * m.dense(scaled=True) for x, m in zip(w, mods))
    torch.testing.assert_close(c.module.dense(scaled=True).detach(), want.detach(), atol=1e-9, rtol=1e-9)
    b, a = low_rank_factors(mods[0])
    torch.testing.assert_close(b @ a, mods[0].dense(scaled=True).detach(), atol=1e-9, rtol=1e-9)


def test_truncate_factors_is_eckart_young():
    g = torch.Generator().manual_seed(0)
    b, a = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    for k in (1, 2, 5, 8):
        b2, a2, err = truncate_factors(b, a, k)
        s = torch.linalg.svdvals(b @ a)
        assert abs(err - float(s[k:].norm() / s.norm())) < 1e-12
        assert abs(float((b @ a - b2 @ a2).norm() / (b @ a).norm()) - err) < 1e-10
