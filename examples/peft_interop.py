"""Move LoRA checkpoints between peft and tnpeft without any numerical change.

Run:  .venv/bin/python examples/peft_interop.py
"""

import copy
import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

import tnpeft

torch.manual_seed(0)
base = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0)).eval()
ids = torch.randint(0, 128, (2, 16))

with tempfile.TemporaryDirectory() as d:
    # peft → tnpeft
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                        fan_in_fan_out=True, init_lora_weights=False))
    pm.save_pretrained(f"{d}/from_peft")
    tm = tnpeft.import_peft(copy.deepcopy(base), f"{d}/from_peft")
    print("peft → tnpeft, max |Δlogits| =", (tm(ids).logits - pm(ids).logits).abs().max().item())

    # tnpeft → peft
    tnpeft.export_peft(tm, f"{d}/to_peft")
    back = PeftModel.from_pretrained(copy.deepcopy(base), f"{d}/to_peft")
    print("tnpeft → peft, max |Δlogits| =", (back(ids).logits - tm(ids).logits).abs().max().item())
