"""tnpeft as a peft method: ``get_peft_model(model, TNPeftConfig(...))`` is ``tnpeft.inject`` (same
outputs and gradients with equal weights, same merge), its checkpoints load in a fresh process
(``PeftModel.from_pretrained``, ``AutoPeftModelForCausalLM``, transformers' ``load_adapter``), and
peft's lifecycle — several adapters, weighted combinations, deletion, disabling — runs on tnpeft's
own layer; bad configurations fail before the model changes."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils import PeftType
from safetensors.torch import load_file, save_file
from tiny_llama import METHODS, TARGETS, adapter_grads, perturb, tiny_llama, token_ids
from transformers import LlamaForCausalLM

import tnpeft
from tnpeft.errors import AdapterStateError, ConfigError, GraphError, NotMergeableError, TargetModuleError
from tnpeft.nn import tn_layers
from tnpeft.nn.peft_config import extend_str_enum
from tnpeft.nn.peft_method import register

ROOT = Path(__file__).resolve().parents[1]


def both(method, hp=None):
    """``(native, peft)``: the method injected by tnpeft and by peft into copies of one tiny Llama,
    with equal (perturbed, non-trivial) adapter values (``hp``: its hyper-parameters, METHODS' by default)."""
    hp = METHODS[method] if hp is None else hp
    base = tiny_llama()
    native = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig(method, TARGETS, **hp))
    pm = get_peft_model(copy.deepcopy(base), tnpeft.TNPeftConfig(method=method, target_modules=TARGETS, **hp))
    perturb(native)
    inner = pm.base_model.model
    for path, layer in tn_layers(native):
        inner.get_submodule(path).tn_adapters["default"].load_state_dict(layer.tn_adapters["default"].state_dict())
    return base, native, pm


@pytest.mark.parametrize("method", list(METHODS))
def test_get_peft_model_equals_inject(method):
    base, native, pm = both(method)
    assert [p for p, _ in tn_layers(native)] == [p for p, _ in tn_layers(pm.base_model.model)]
    assert all(isinstance(m, tnpeft.TNLinear) for _, m in tn_layers(pm))          # peft's layer is tnpeft's
    x = token_ids()
    with torch.no_grad():
        want = native(x).logits
        assert (want - base(x).logits).abs().max() > 1e-3                         # the adapters act
        torch.testing.assert_close(pm(x).logits, want, atol=1e-6, rtol=0)
    native.train()
    pm.train()
    native(x, labels=x).loss.backward()
    pm(x, labels=x).loss.backward()
    g_native, g_peft = adapter_grads(native), adapter_grads(pm)
    assert g_native.keys() == g_peft.keys() and g_native
    for k in g_native:
        torch.testing.assert_close(g_peft[k], g_native[k], atol=1e-6, rtol=1e-5)
    # trainable counts: peft's, tnpeft's and the graphs' closed form agree
    closed = sum(layer.tn_adapters["default"].graph.num_parameters() for _, layer in tn_layers(native))
    assert pm.get_nb_trainable_parameters()[0] == tnpeft.trainable_parameters(native).trainable == closed


@pytest.mark.parametrize("method", list(METHODS))
def test_merge_and_unload_equals_tnpeft(method):
    _, native, pm = both(method)
    x = token_ids()
    if method == "qwthn":
        for call in (lambda: pm.merge_and_unload(), lambda: tnpeft.merge_and_unload(native)):
            with pytest.raises(NotMergeableError):
                call()
        assert all(isinstance(m, tnpeft.TNLinear) for _, m in tn_layers(pm))  # refused: nothing changed
        return
    with torch.no_grad():
        unmerged = pm(x).logits
        merged_peft = pm.merge_and_unload()
        merged_native = tnpeft.merge_and_unload(native)
        assert not list(tn_layers(merged_peft)) and type(merged_peft) is LlamaForCausalLM
        torch.testing.assert_close(merged_peft(x).logits, merged_native(x).logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(merged_peft(x).logits, unmerged, atol=1e-4, rtol=1e-4)


def test_saved_adapters_load_in_a_fresh_process(tmp_path):
    """Every method: save_pretrained → PeftModel.from_pretrained after `import tnpeft` in a new
    process; AutoPeftModelForCausalLM and transformers' load_adapter too; and save_pretrained of a
    natively adapted model → AutoModelForCausalLM.from_pretrained."""
    tiny_llama().save_pretrained(tmp_path / "base")
    x = token_ids()
    ref = {}
    for method, hp in METHODS.items():
        pm = get_peft_model(LlamaForCausalLM.from_pretrained(tmp_path / "base"),
                            tnpeft.TNPeftConfig(method=method, target_modules=TARGETS, task_type="CAUSAL_LM", **hp))
        perturb(pm)
        pm.eval()
        with torch.no_grad():
            ref[method] = pm(x).logits.contiguous()
        pm.save_pretrained(tmp_path / method)
    cfg = json.loads((tmp_path / "quantum_peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "TNPEFT" and cfg["method"] == "quantum_peft" and cfg["hparams"] == {"rank": 4}
    assert cfg["format_version"] == 1 and cfg["task_type"] == "CAUSAL_LM"
    assert sorted(os.listdir(tmp_path / "lora")) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert all(".default." not in k for k in load_file(tmp_path / "lora" / "adapter_model.safetensors"))
    native = tnpeft.inject(LlamaForCausalLM.from_pretrained(tmp_path / "base"),
                           tnpeft.AdapterConfig("qpa", TARGETS, **METHODS["qpa"]))
    perturb(native)
    with torch.no_grad():
        ref["native"] = native(x).logits.contiguous()
    native.save_pretrained(tmp_path / "native")
    save_file({**ref, "x": x}, tmp_path / "ref.safetensors")
    script = f"""
import json, torch, tnpeft
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM
d = {str(tmp_path)!r}
ref = load_file(d + "/ref.safetensors"); x = ref.pop("x"); out = {{}}
base = lambda: LlamaForCausalLM.from_pretrained(d + "/base").eval()
with torch.no_grad():
    for m in {list(METHODS)!r}:
        out[m] = (PeftModel.from_pretrained(base(), d + "/" + m)(x).logits - ref[m]).abs().max().item()
    out["auto"] = (AutoPeftModelForCausalLM.from_pretrained(d + "/lora")(x).logits - ref["lora"]).abs().max().item()
    model = base(); model.load_adapter(d + "/quantum_peft")
    out["load_adapter"] = (model(x).logits - ref["quantum_peft"]).abs().max().item()
    out["native"] = (AutoModelForCausalLM.from_pretrained(d + "/native")(x).logits - ref["native"]).abs().max().item()
print("RESULT" + json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, run.stderr[-3000:]
    diffs = json.loads(line[len("RESULT"):])
    assert set(diffs) == set(METHODS) | {"auto", "load_adapter", "native"}
    assert all(v <= 1e-6 for v in diffs.values()), diffs


def test_lifecycle_of_several_adapters(tmp_path, capsys):
    pm = get_peft_model(tiny_llama(), tnpeft.TNPeftConfig(method="quantum_peft", target_modules=TARGETS, rank=4))
    perturb(pm, seed=1)
    pm.add_adapter("b", tnpeft.TNPeftConfig(method="lora", target_modules=["q_proj"], r=2, alpha=2))
    perturb(pm, seed=2)
    pm.eval()
    x = token_ids()
    with torch.no_grad():
        base = tiny_llama()(x).logits
        a = pm(x).logits
        pm.set_adapter("b")
        b = pm(x).logits
        assert (a - b).abs().max() > 1e-3 and (b - base).abs().max() > 1e-3
        with pm.disable_adapter():
            torch.testing.assert_close(pm(x).logits, base, atol=1e-6, rtol=0)
        torch.testing.assert_close(pm(x).logits, b, atol=0, rtol=0)
    # only the active adapter trains; frozen nodes stay frozen
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all(".tnpeft_adapters.b." in n for n in trainable)
    pm.print_trainable_parameters()
    assert "trainable params: 256 ||" in capsys.readouterr().out      # r (in + out) on q_proj of 2 layers
    # a weighted combination ("cat": exact) is the weighted sum of the updates, layer by layer
    pm.add_weighted_adapter(["default", "b"], [0.5, -2.0], "w", combination_type="cat")
    for _, layer in tn_layers(pm):
        want = 0.5 * layer.delta_weight("default") + (-2.0 * layer.delta_weight("b") if "b" in layer.tn_adapters else 0)
        torch.testing.assert_close(layer.delta_weight("w"), want, atol=1e-5, rtol=1e-5)
    pm.save_pretrained(tmp_path / "all")            # every adapter: peft's layout (others in sub-folders)
    assert (tmp_path / "all" / "w" / "adapter_config.json").is_file()
    pm.set_adapter("w")
    with torch.no_grad():
        w = pm(x).logits
    again = PeftModel.from_pretrained(tiny_llama(), tmp_path / "all" / "w").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, w, atol=1e-6, rtol=0)
    # a saved adapter loads under another name
    pm.load_adapter(tmp_path / "all", adapter_name="other")
    pm.set_adapter("other")
    with torch.no_grad():
        torch.testing.assert_close(pm(x).logits, a, atol=1e-6, rtol=0)
    pm.delete_adapter("b")
    assert sorted(pm.peft_config) == ["default", "other", "w"] and pm.active_adapters == ["other"]
    assert not any("b" in layer.tn_adapters for _, layer in tn_layers(pm))
    with pytest.raises(ValueError, match="nope"):               # peft checks the name first
        pm.delete_adapter("nope")
    pm.merge_adapter()
    with torch.no_grad():
        torch.testing.assert_close(pm(x).logits, a, atol=1e-4, rtol=1e-4)
    pm.unmerge_adapter()
    assert not any(layer.merged_adapters for _, layer in tn_layers(pm))
    with torch.no_grad():
        torch.testing.assert_close(pm.unload()(x).logits, base, atol=1e-5, rtol=0)


def test_graph_file_and_user_method(tmp_path):
    g = tnpeft.adapters.lora(32, 32, r=3, init_b="normal")
    (tmp_path / "g.json").write_text(g.to_json())
    pm = get_peft_model(tiny_llama(), tnpeft.TNPeftConfig(graph=str(tmp_path / "g.json"), target_modules=["q_proj"]))
    assert all(layer.tn_adapters["default"].graph == g for _, layer in tn_layers(pm))
    with pytest.raises(GraphError, match="v_proj"):             # a 32 → 16 layer: the graph does not fit
        get_peft_model(tiny_llama(), tnpeft.TNPeftConfig(graph=g, target_modules=TARGETS))

    @tnpeft.adapters.register("tests_scaled_lora")
    def scaled(in_features, out_features, r=2, gain=0.5):
        return tnpeft.adapters.lora(in_features, out_features, r=r, alpha=gain * r, init_b="normal")

    pm = get_peft_model(tiny_llama(), tnpeft.TNPeftConfig(method="tests_scaled_lora", target_modules=TARGETS, gain=2.0))
    pm.eval()
    x = token_ids()
    with torch.no_grad():
        want = pm(x).logits
    pm.save_pretrained(tmp_path / "user")
    assert PeftConfig.from_pretrained(tmp_path / "user").hparams == {"gain": 2.0}
    with torch.no_grad():
        torch.testing.assert_close(PeftModel.from_pretrained(tiny_llama(), tmp_path / "user")(x).logits, want,
                                   atol=1e-6, rtol=0)


def _snapshot(model):
    return [(n, type(m).__name__) for n, m in model.named_modules()], {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kwargs, error, field", [
    ({"method": "no_such_method"}, ConfigError, "method"),
    ({"method": "lora", "rank_typo": 3}, ConfigError, "rank_typo"),
    ({"method": "lora", "bias": "all"}, ConfigError, "bias"),
    ({"method": "lora", "format_version": 99}, ConfigError, "format_version"),
    ({"method": "lora", "graph": "not a graph"}, ConfigError, "graph"),
])
def test_bad_configs_name_the_field(kwargs, error, field):
    with pytest.raises(error) as e:
        tnpeft.TNPeftConfig(target_modules=TARGETS, **kwargs)
    assert e.value.field == field


@pytest.mark.parametrize("targets, hp, error, says", [
    (["q_proj", "embed_tokens"], {}, TargetModuleError, "Embedding"),
    (TARGETS, {"r": 20}, ConfigError, "v_proj"),       # rank 20 > v_proj's 16 columns: the second target fails
])
def test_bad_targets_leave_the_model_unchanged(targets, hp, error, says):
    model = tiny_llama()
    before = _snapshot(model)
    method = "quantum_peft" if hp else "lora"
    with pytest.raises(error, match=says):
        get_peft_model(model, tnpeft.TNPeftConfig(method=method, target_modules=targets, **hp))
    after = _snapshot(model)
    assert after[0] == before[0] and after[1].keys() == before[1].keys()
    assert all(torch.equal(after[1][k], v) for k, v in before[1].items())


def test_a_newer_format_is_refused_on_load(tmp_path):
    pm = get_peft_model(tiny_llama(), tnpeft.TNPeftConfig(method="lora", target_modules=TARGETS))
    pm.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, "format_version": 2}))
    with pytest.raises(ConfigError, match="format_version"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path)


def test_registration_is_idempotent():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    before = dict(PEFT_TYPE_TO_TUNER_MAPPING)
    assert register() and register()
    assert extend_str_enum(PeftType, "TNPEFT") is PeftType.TNPEFT is PeftType("TNPEFT")
    assert PEFT_TYPE_TO_CONFIG_MAPPING["TNPEFT"] is tnpeft.TNPeftConfig and dict(PEFT_TYPE_TO_TUNER_MAPPING) == before


def test_native_save_pretrained_refuses_merged_adapters(tmp_path):
    m = tnpeft.inject(tiny_llama(), tnpeft.AdapterConfig("lora", TARGETS, r=2))
    tnpeft.merge(m)
    with pytest.raises(AdapterStateError, match="merge_and_unload"):
        m.save_pretrained(tmp_path)
    tnpeft.unload(m)
    assert "save_pretrained" not in m.__dict__                  # the class's own again


def test_export_peft_writes_the_task_type(tmp_path):
    from peft import AutoPeftModelForCausalLM

    tiny_llama().save_pretrained(tmp_path / "base")
    m = tnpeft.inject(LlamaForCausalLM.from_pretrained(tmp_path / "base"),
                      tnpeft.AdapterConfig("quantum_peft", TARGETS, rank=4))
    perturb(m)
    tnpeft.export_peft(m, tmp_path / "lora")
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    x = token_ids()
    with torch.no_grad():
        torch.testing.assert_close(AutoPeftModelForCausalLM.from_pretrained(tmp_path / "lora")(x).logits,
                                   m(x).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["vera", "metatt"])
def test_methods_with_shared_tensors_are_refused_before_any_change(method):
    # their tensors live once on the model, which peft's per-layer injection does not hold (yet)
    model = tiny_llama()
    before = _snapshot(model)
    with pytest.raises(ConfigError, match="shares tensors across layers") as e:
        get_peft_model(model, tnpeft.TNPeftConfig(method=method, target_modules=TARGETS, r=4))
    assert e.value.field == "method"
    after = _snapshot(model)
    assert after[0] == before[0] and all(torch.equal(after[1][k], v) for k, v in before[1].items())


#: peft's tensor-network tuners built into tnpeft (additive, input- and output-side ones)
ZOO = {"loha": {"r": 4}, "lokr": {"r": 4}, "ia3": {}, "boft": {"block_size": 4}, "hra": {"r": 4}}


@pytest.mark.parametrize("method", list(ZOO))
def test_the_zoo_through_the_peft_method_equals_inject(method):
    base, native, pm = both(method, ZOO[method])
    x = token_ids()
    with torch.no_grad():
        want = native(x).logits
        assert (want - base(x).logits).abs().max() > 1e-3                         # the adapters act
        torch.testing.assert_close(pm(x).logits, want, atol=1e-6, rtol=0)
        merged = pm.merge_and_unload()
        assert not list(tn_layers(merged))
        torch.testing.assert_close(merged(x).logits, want, atol=1e-5, rtol=1e-5)
