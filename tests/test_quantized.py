"""Adapters on bitsandbytes' quantized linear layers (CPU): the unmerged forward is the quantized
base plus the adapter, and merging (dequantize, add, quantize again) equals it within the
quantization error — as peft's own LoRA merge on the same layer does."""

import copy

import pytest
import torch
from torch import nn

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes does not install here")

from peft import LoraConfig, get_peft_model  # noqa: E402
from tiny_llama import TARGETS, perturb, tiny_llama, token_ids  # noqa: E402

import tnpeft  # noqa: E402
from tnpeft.nn import tn_layers  # noqa: E402
from tnpeft.nn.quantized import float_weight, quantization  # noqa: E402

N_IN, N_OUT, R = 64, 32, 4


class Holder(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.proj = layer

    def forward(self, x):
        return self.proj(x)


def quantized(kind, lin):
    if kind == "int8":
        layer = bnb.nn.Linear8bitLt(N_IN, N_OUT, has_fp16_weights=False, threshold=0.0)
    else:
        layer = bnb.nn.Linear4bit(N_IN, N_OUT, quant_type="nf4", compute_dtype=torch.float32)
    layer.load_state_dict(lin.state_dict())
    holder = Holder(layer.to("cpu"))
    holder.is_loaded_in_8bit, holder.is_loaded_in_4bit = kind == "int8", kind != "int8"   # peft's bnb dispatch
    return holder


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_merge_into_a_quantized_base_matches_peft(kind):
    torch.manual_seed(0)
    lin = nn.Linear(N_IN, N_OUT)
    a, b = torch.randn(R, N_IN) * 0.1, torch.randn(N_OUT, R) * 0.1
    x = torch.randn(6, N_IN)
    ours = tnpeft.inject(quantized(kind, lin), tnpeft.AdapterConfig("lora", ["proj"], r=R, alpha=R))
    assert quantization(ours.proj.base_layer) == ("int8" if kind == "int8" else "4bit")
    with torch.no_grad():
        ours.proj.tn_adapters["default"].A.weight.copy_(a)
        ours.proj.tn_adapters["default"].B.weight.copy_(b)
    theirs = get_peft_model(quantized(kind, lin), LoraConfig(r=R, lora_alpha=R, target_modules=["proj"]))
    with torch.no_grad():
        theirs.base_model.model.proj.lora_A["default"].weight.copy_(a)
        theirs.base_model.model.proj.lora_B["default"].weight.copy_(b)
        base_q = quantized(kind, lin)(x)
        qerr = (base_q - lin(x)).abs().max().item()           # the base layer's own quantization error
        unmerged = ours(x)
        torch.testing.assert_close(unmerged, base_q + x @ (b @ a).T, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs(x), unmerged, atol=1e-5, rtol=1e-5)
        w_before = float_weight(ours.proj.base_layer).clone()
        tnpeft.merge(ours)
        merged = ours(x)
        theirs_merged = theirs.merge_and_unload()(x)
        err, peft_err = (merged - unmerged).abs().max().item(), (theirs_merged - unmerged).abs().max().item()
        assert err <= 2 * qerr and err <= 1.5 * peft_err + 1e-4, (err, peft_err, qerr)
        # the weight really moved by the update (within one rounding), not left as it was
        delta = float_weight(ours.proj.base_layer) - w_before
        assert (delta - b @ a).abs().max() < 0.5 * (b @ a).abs().max()
        tnpeft.unmerge(ours)
        assert (ours(x) - unmerged).abs().max().item() <= 3 * qerr


def test_the_peft_method_on_a_quantized_model(tmp_path):
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    tiny_llama().save_pretrained(tmp_path / "base")
    q = LlamaForCausalLM.from_pretrained(tmp_path / "base", device_map="cpu",
                                         quantization_config=BitsAndBytesConfig(load_in_8bit=True)).eval()
    x = token_ids()
    with torch.no_grad():
        qerr = (q(x).logits - tiny_llama()(x).logits).abs().max().item()
    pm = get_peft_model(copy.deepcopy(q), tnpeft.TNPeftConfig(method="quantum_peft", target_modules=TARGETS, rank=4))
    assert all(quantization(layer.base_layer) == "int8" for _, layer in tn_layers(pm))
    perturb(pm, scale=0.05)
    pm.eval()
    with torch.no_grad():
        unmerged = pm(x).logits
        assert (unmerged - q(x).logits).abs().max() > 10 * qerr          # the adapter acts beyond the rounding
        merged = pm.merge_and_unload()
        assert not list(tn_layers(merged))
        assert (merged(x).logits - unmerged).abs().max().item() <= 3 * qerr + 1e-3
