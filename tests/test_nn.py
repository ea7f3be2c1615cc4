"""Injection, matching rules, merge/unmerge, several adapters, training — the peft tuner test matrix."""

import copy
import re

import pytest
import torch
from conftest import load_minilm, tiny_gpt2
from hypothesis import given
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from torch import nn

import tnpeft
from tnpeft.errors import AdapterStateError, ConfigError, TargetModuleError
from tnpeft.nn import TNLinear, find_targets, tn_layers

TARGETS = ["c_attn", "c_proj", "c_fc"]


def ids(n=2, t=12, seed=0):
    return torch.randint(0, 97, (n, t), generator=torch.Generator().manual_seed(seed))


def adapted(base=None, **hp):
    base = base or tiny_gpt2()
    hp.setdefault("init_b", "normal")
    return tnpeft.inject(base, tnpeft.AdapterConfig("lora", TARGETS, r=4, alpha=8, **hp))


def test_base_is_frozen_and_only_adapters_train():
    m = adapted()
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(".tnpeft_adapters.default." in n for n in trainable)
    before = {n: p.clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    x = ids()
    m.train()
    for _ in range(3):
        loss = m(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in m.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == (n in trainable), n


def test_output_differs_from_base_and_zero_init_starts_at_base():
    base = tiny_gpt2()
    x = ids()
    ref = base(x).logits
    zero = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("lora", TARGETS, r=4))
    torch.testing.assert_close(zero(x).logits, ref, atol=0, rtol=0)
    m = adapted(copy.deepcopy(base))
    assert (m(x).logits - ref).abs().max() > 1e-3


@pytest.mark.parametrize("make", ["gpt2", "linear"])
def test_merge_unmerge_round_trip(make):
    if make == "gpt2":
        m, x = adapted(), ids()
        run = lambda: m(x).logits  # noqa: E731
    else:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 8))
        tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["0", "2"], r=3, init_b="normal"))
        x = torch.randn(5, 16)
        run = lambda: m(x)  # noqa: E731
    weights = {n: lay.base_layer.weight.detach().clone() for n, lay in tn_layers(m)}
    y = run()
    tnpeft.merge(m)
    assert all(lay.merged_adapters == ["default"] for _, lay in tn_layers(m))
    torch.testing.assert_close(run(), y, atol=1e-5, rtol=1e-5)
    assert any(not torch.equal(lay.base_layer.weight, weights[n]) for n, lay in tn_layers(m))
    tnpeft.unmerge(m)
    for n, lay in tn_layers(m):
        torch.testing.assert_close(lay.base_layer.weight, weights[n], atol=1e-6, rtol=0)
    # the restored weights differ from the originals by float32 rounding of W + ΔW (|ΔW| ≫ |W| here), so
    # the output agrees to that rounding times the fan-in, as the merged output above does
    torch.testing.assert_close(run(), y, atol=1e-5, rtol=1e-5)


def test_merge_and_unload_leaves_no_adapter_layers():
    m = adapted()
    x = ids()
    y = m(x).logits
    plain = tnpeft.merge_and_unload(m)
    assert not any(isinstance(mod, TNLinear) for mod in plain.modules())
    torch.testing.assert_close(plain(x).logits, y, atol=1e-5, rtol=1e-5)


def test_unload_without_merge_restores_base():
    base = tiny_gpt2()
    x = ids()
    ref = base(x).logits
    m = adapted(copy.deepcopy(base))
    tnpeft.merge(m)
    plain = tnpeft.unload(m)
    torch.testing.assert_close(plain(x).logits, ref, atol=1e-5, rtol=1e-5)


def test_merged_conv1d_weight_equals_peft_merge():
    base = tiny_gpt2()
    torch.manual_seed(1)
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                        fan_in_fan_out=True, init_lora_weights=False))
    tm = tnpeft.import_peft(copy.deepcopy(base), _save(pm))
    merged_peft = pm.merge_and_unload()
    merged_tn = tnpeft.merge_and_unload(tm)
    for (n1, p1), (n2, p2) in zip(merged_peft.named_parameters(), merged_tn.named_parameters()):
        assert n1 == n2
        torch.testing.assert_close(p2, p1, atol=1e-6, rtol=0)


def _save(pm):
    import tempfile

    d = tempfile.mkdtemp()
    pm.save_pretrained(d)
    return d


def test_safe_merge_refuses_non_finite_update():
    m = adapted()
    layer = next(lay for _, lay in tn_layers(m))
    with torch.no_grad():
        layer.tn_adapters["default"].A.weight[0, 0] = float("inf")
    w = layer.base_layer.weight.clone()
    with pytest.raises(AdapterStateError, match="NaN or infinite"):
        layer.merge(safe_merge=True)
    assert torch.equal(layer.base_layer.weight, w) and not layer.merged_adapters


def test_several_adapters_switch_and_disable():
    base = tiny_gpt2()
    x = ids()
    ref = base(x).logits
    m = copy.deepcopy(base)
    tnpeft.inject(m, tnpeft.AdapterConfig("lora", TARGETS, r=4, init_b="normal"), adapter_name="one")
    y_one = m(x).logits
    tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"), adapter_name="two")
    assert tnpeft.adapter_names(m) == ["one", "two"]
    y_two = m(x).logits  # inject makes the new adapter the active one
    assert (y_two - y_one).abs().max() > 1e-4
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(".two." in n for n in trainable)
    tnpeft.set_adapter(m, "one")
    torch.testing.assert_close(m(x).logits, y_one, atol=0, rtol=0)
    with tnpeft.disable_adapters(m):
        torch.testing.assert_close(m(x).logits, ref, atol=0, rtol=0)
    torch.testing.assert_close(m(x).logits, y_one, atol=0, rtol=0)
    # both at once: the updates add up
    tnpeft.set_adapter(m, ["one", "two"])
    both = m(x).logits
    tnpeft.merge(m)
    torch.testing.assert_close(m(x).logits, both, atol=1e-5, rtol=1e-5)
    with tnpeft.disable_adapters(m):  # disabling unmerges first
        torch.testing.assert_close(m(x).logits, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(AdapterStateError, match="three"):
        tnpeft.set_adapter(m, "three")
    with pytest.raises(AdapterStateError, match="one"):
        tnpeft.inject(m, tnpeft.AdapterConfig("lora", TARGETS), adapter_name="one")


def test_trainable_report_matches_peft_format(capsys):
    base = tiny_gpt2()
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, fan_in_fan_out=True))
    pm.print_trainable_parameters()
    want = capsys.readouterr().out.strip()
    m = adapted(copy.deepcopy(base))
    tnpeft.print_trainable_parameters(m)
    assert capsys.readouterr().out.strip() == want
    c = tnpeft.trainable_parameters(m)
    assert c.trainable == sum(4 * (a + b) for a, b in [(32, 96), (32, 32), (32, 128), (128, 32)]) * 2


# ------------------------------------------------------------------ matching rules against peft's own
def peft_targets(model, target_modules, exclude=None):
    cfg = LoraConfig(r=2, target_modules=target_modules, exclude_modules=exclude)
    pm = get_peft_model(copy.deepcopy(model), cfg)
    return sorted(n.removeprefix("base_model.model.") for n, mod in pm.named_modules()
                  if hasattr(mod, "lora_A") and not n.endswith(("lora_A", "lora_B")) and "lora_" not in n.rsplit(".", 1)[-1])


def tn_targets(model, target_modules, exclude=None):
    return sorted(find_targets(model, tnpeft.AdapterConfig("lora", target_modules, exclude_modules=exclude)))


RULES = [["c_attn"], ["attn.c_proj"], ["h.0.mlp.c_fc", "c_attn"], r".*\.h\.1\..*c_proj", r".*c_(attn|fc)",
         "all-linear", ["c_proj"]]


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_target_matching_equals_peft_on_gpt2(rule):
    base = tiny_gpt2()
    assert tn_targets(base, rule) == peft_targets(base, rule)


@given(st.lists(st.sampled_from(["query", "key", "value", "dense", "attention.output.dense", "output.dense",
                                 "self.query", "layer.0.attention.self.key", "intermediate.dense"]),
                min_size=1, max_size=4, unique=True),
       st.one_of(st.none(), st.lists(st.sampled_from(["pooler.dense", "layer.1.output.dense", "key"]), min_size=1,
                                     max_size=2, unique=True)))
def test_target_matching_equals_peft_on_bert(minilm_model, rule, exclude):
    if exclude and set(rule) <= set(exclude):
        return
    try:
        want = peft_targets(minilm_model, rule, exclude)
    except ValueError:  # peft: nothing left to adapt
        with pytest.raises(TargetModuleError):
            tn_targets(minilm_model, rule, exclude)
        return
    assert tn_targets(minilm_model, rule, exclude) == want


@pytest.fixture(scope="module")
def minilm_model(minilm_dir):
    return load_minilm(minilm_dir)


def test_all_linear_leaves_the_output_head_out():
    base = tiny_gpt2()
    names = tn_targets(base, "all-linear")
    assert "lm_head" not in names and len(names) == 8


def test_target_errors_are_clear():
    base = tiny_gpt2()
    with pytest.raises(TargetModuleError, match="matched no module") as e:
        tnpeft.inject(base, tnpeft.AdapterConfig("lora", ["qkv"]))
    assert "c_attn" in str(e.value)  # it lists what the model has
    with pytest.raises(TargetModuleError, match="LayerNorm"):
        tnpeft.inject(base, tnpeft.AdapterConfig("lora", ["ln_1"]))
    with pytest.raises(ConfigError, match="regular expression"):
        tnpeft.AdapterConfig("lora", "c_(attn")
    assert not list(tn_layers(base))


@given(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("r", "alpha", "dropout", "use_rslora", "init_b")))
def test_unknown_hparam_is_named(key):
    with pytest.raises(ConfigError) as e:
        tnpeft.AdapterConfig("lora", ["c_attn"], **{key: 1})
    assert e.value.field == key and repr(key) in str(e.value)


@given(st.one_of(st.integers(-3, 0), st.floats(), st.text(max_size=3), st.booleans(), st.none()))
def test_bad_rank_is_named(r):
    base = tiny_gpt2()
    with pytest.raises(ConfigError) as e:
        tnpeft.inject(base, tnpeft.AdapterConfig("lora", ["c_attn"], r=r))
    assert e.value.field == "r"
    assert not list(tn_layers(base))


@given(st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=2), st.just([]), st.just(""),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1)))
def test_bad_target_modules_type_is_named(t):
    with pytest.raises(ConfigError) as e:
        tnpeft.AdapterConfig("lora", t)
    assert e.value.field == "target_modules"


def test_unknown_adapter_and_custom_builder_errors():
    with pytest.raises(ConfigError, match="unknown adapter 'lorra'"):
        tnpeft.AdapterConfig("lorra", ["c_attn"])

    def broken(n, m, width=2):
        raise RuntimeError("boom")

    base = tiny_gpt2()
    with pytest.raises(ConfigError, match=r"failed to build for module 'transformer\.h\.0\.attn\.c_attn'.*boom"):
        tnpeft.inject(base, tnpeft.AdapterConfig(broken, ["c_attn"]))
    assert not list(tn_layers(base))


def test_custom_topology_injects_trains_and_merges():
    # a three-core tensor-train update written in a few lines
    def tt(n, m, r=3):
        return tnpeft.Graph([tnpeft.Dense("G1", ("in", "a"), (n, r)),
                             tnpeft.Dense("G2", ("a", "b"), (r, r), init="normal"),
                             tnpeft.Dense("G3", ("b", "out"), (r, m), init="normal")], name="tt")

    base = tiny_gpt2()
    x = ids()
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig(tt, ["c_fc"], r=2))
    assert tnpeft.trainable_parameters(m).trainable == 2 * (32 * 2 + 2 * 2 + 2 * 128)
    y = m(x).logits
    tnpeft.merge(m)
    torch.testing.assert_close(m(x).logits, y, atol=1e-5, rtol=1e-5)
    assert re.match(r"custom:tt", tnpeft.AdapterConfig(tt, ["c_fc"]).method)


def test_no_planning_in_steady_state():
    from tnpeft.contract import plan_stats

    m = adapted()
    x = ids()
    m(x)  # plans once per shape bucket
    built = plan_stats().plans_built
    for t in (12, 11, 10, 9):  # sequence lengths in the same bucket reuse the plan
        m(ids(2, t))
    assert plan_stats().plans_built == built


def test_builder_errors_name_the_layer():
    from torch import nn

    m = nn.Sequential(nn.Linear(16, 4), nn.Linear(4, 16))
    with pytest.raises(ConfigError, match=r"module '0' \(16 → 4\).*rank 8") as e:
        tnpeft.inject(m, tnpeft.AdapterConfig("quantum_peft", ["0", "1"], rank=8))
    assert e.value.field == "rank"
    assert not list(tn_layers(m))
