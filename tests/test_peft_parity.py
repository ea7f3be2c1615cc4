"""tnpeft LoRA against peft's own LoRA: same weights → same outputs and gradients; checkpoints
move both ways."""

import copy

import pytest
import torch
from conftest import load_minilm, tiny_gpt2
from peft import LoraConfig, PeftModel, get_peft_model

import tnpeft
from tnpeft.nn import tn_layers

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
BERT_TARGETS = ["query", "key", "value", "dense"]


def peft_and_tnpeft(base, targets, r=4, alpha=8, fan_in_fan_out=False, use_rslora=False):
    torch.manual_seed(1)
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=alpha, target_modules=targets,
                                                        fan_in_fan_out=fan_in_fan_out, use_rslora=use_rslora,
                                                        init_lora_weights=False))
    tm = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("lora", targets, r=r, alpha=alpha,
                                                                  use_rslora=use_rslora))
    # copy peft's (non-zero) LoRA weights into tnpeft's A and B nodes
    peft_mods = dict(pm.base_model.model.named_modules())
    n = 0
    for path, layer in tn_layers(tm):
        pl = peft_mods[path]
        with torch.no_grad():
            layer.tn_adapters["default"].A.weight.copy_(pl.lora_A["default"].weight)
            layer.tn_adapters["default"].B.weight.copy_(pl.lora_B["default"].weight)
        n += 1
    assert n == sum(1 for m in pm.modules() if m.__class__.__name__ == "Linear" and hasattr(m, "lora_A"))
    return pm, tm


def grads(model, kind):
    out = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        if kind == "peft":
            path = name.replace("base_model.model.", "").replace(".lora_A.default.weight", ".A").replace(
                ".lora_B.default.weight", ".B")
        else:
            path = name.replace(".tnpeft_adapters.default", "").replace(".A.weight", ".A").replace(".B.weight", ".B")
        out[path] = p.grad
    return out


@pytest.mark.parametrize("use_rslora", [False, True])
def test_gpt2_outputs_and_gradients_equal_peft(use_rslora):
    base = tiny_gpt2()
    pm, tm = peft_and_tnpeft(base, GPT2_TARGETS, fan_in_fan_out=True, use_rslora=use_rslora)
    ids = torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(0))
    yp = pm(ids, labels=ids)
    yt = tm(ids, labels=ids)
    torch.testing.assert_close(yt.logits, yp.logits, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert (yt.logits - base(ids).logits).abs().max() > 1e-3  # the adapters really change the output
    yp.loss.backward()
    yt.loss.backward()
    gp, gt = grads(pm, "peft"), grads(tm, "tn")
    assert set(gp) == set(gt) and len(gp) == 2 * 8
    for k in gp:
        torch.testing.assert_close(gt[k], gp[k], atol=1e-6, rtol=1e-5)
    assert tnpeft.trainable_parameters(tm) == tuple(pm.get_nb_trainable_parameters())


def test_minilm_outputs_and_gradients_equal_peft(minilm_dir):
    base = load_minilm(minilm_dir)
    pm, tm = peft_and_tnpeft(base, BERT_TARGETS)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    enc = tok(["the flight was late again", "what a lovely day"], padding=True, return_tensors="pt")
    hp = pm(**enc).last_hidden_state
    ht = tm(**enc).last_hidden_state
    torch.testing.assert_close(ht, hp, atol=1e-6, rtol=0)
    (hp ** 2).mean().backward()
    (ht ** 2).mean().backward()
    gp, gt = grads(pm, "peft"), grads(tm, "tn")
    assert set(gp) == set(gt) and len(gp) == 2 * 6 * 6  # 6 layers × (q, k, v, 3 dense); the unused pooler gets no gradient
    for k in gp:
        torch.testing.assert_close(gt[k], gp[k], atol=1e-6, rtol=1e-5)


def test_peft_checkpoint_imports_into_tnpeft(tmp_path):
    base = tiny_gpt2()
    pm, _ = peft_and_tnpeft(base, GPT2_TARGETS, fan_in_fan_out=True)
    pm.save_pretrained(tmp_path / "peft")
    tm = tnpeft.import_peft(copy.deepcopy(base), tmp_path / "peft")
    ids = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(tm(ids).logits, pm(ids).logits, atol=1e-6, rtol=0)


def test_tnpeft_lora_exports_to_a_checkpoint_peft_loads(tmp_path):
    base = tiny_gpt2()
    tm = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("lora", GPT2_TARGETS, r=3, alpha=5, init_b="normal"))
    tnpeft.export_peft(tm, tmp_path / "out")
    pm = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "out")
    ids = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(pm(ids).logits, tm(ids).logits, atol=1e-6, rtol=0)
    # and back again: a full round trip through peft's format is exact
    back = tnpeft.import_peft(copy.deepcopy(base), tmp_path / "out")
    torch.testing.assert_close(back(ids).logits, tm(ids).logits, atol=0, rtol=0)


def test_rank_and_alpha_patterns_round_trip(tmp_path):
    base = tiny_gpt2()
    torch.manual_seed(3)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=GPT2_TARGETS, fan_in_fan_out=True, init_lora_weights=False,
                     rank_pattern={"c_fc": 2}, alpha_pattern={"c_attn": 3})
    pm = get_peft_model(copy.deepcopy(base), cfg)
    pm.save_pretrained(tmp_path / "p")
    tm = tnpeft.import_peft(copy.deepcopy(base), tmp_path / "p")
    ids = torch.randint(0, 97, (2, 10))
    torch.testing.assert_close(tm(ids).logits, pm(ids).logits, atol=1e-6, rtol=0)
    tnpeft.export_peft(tm, tmp_path / "q")
    pm2 = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "q")
    torch.testing.assert_close(pm2(ids).logits, pm(ids).logits, atol=1e-6, rtol=0)


def test_import_refuses_non_lora_and_mismatched_checkpoints(tmp_path):
    import json

    base = tiny_gpt2()
    pm, _ = peft_and_tnpeft(base, GPT2_TARGETS, fan_in_fan_out=True)
    pm.save_pretrained(tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    (tmp_path / "p" / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(tnpeft.AdapterFileError, match="peft_type"):
        tnpeft.import_peft(base, tmp_path / "p")
    (tmp_path / "p" / "adapter_config.json").write_text(json.dumps(cfg))
    other = tiny_gpt2()
    other.transformer.h[0].attn.c_attn = torch.nn.Linear(16, 16)  # a model of another shape
    with pytest.raises(tnpeft.AdapterFileError, match="c_attn"):
        tnpeft.import_peft(other, tmp_path / "p")
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    assert not list(tn_layers(base))
