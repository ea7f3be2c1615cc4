"""Train a Quantum-PEFT adapter in tnpeft, then serve it where LoRA runs: export it as a peft LoRA
checkpoint (exact: ΔW = U Λ Vᵀ is a rank-K LoRA with B = U Λ s, A = Vᵀ) and load it with
``peft.PeftModel.from_pretrained``. Also: task arithmetic with ``add_weighted_adapter``.

Run:  .venv/bin/python examples/deploy_quantum_peft.py
"""

import copy
import tempfile

import torch
from peft import PeftModel
from transformers import GPT2Config, GPT2LMHeadModel

import tnpeft

torch.manual_seed(0)
base = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64, bos_token_id=0,
                                  eos_token_id=0)).eval()
ids = torch.randint(0, 128, (4, 32))

# train Quantum-PEFT (r means the rank for every built-in adapter)
model = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("quantum_peft", ["c_attn", "c_fc"], r=4))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
for _ in range(30):
    loss = model(ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
print(f"trained: loss {loss.item():.3f}")
model.eval()

with tempfile.TemporaryDirectory() as d, torch.no_grad():
    export = tnpeft.export_peft(model, f"{d}/peft")          # or: tnpeft convert --adapter-dir … --to peft-lora
    print(export.summary())
    served = PeftModel.from_pretrained(copy.deepcopy(base), f"{d}/peft").eval()
    print("peft vs tnpeft, max |Δlogits| =", (served(ids).logits - model(ids).logits).abs().max().item())

    # compressed to rank 2: the error of each update is measured
    small = tnpeft.export_peft(model, f"{d}/peft2", max_rank=2)
    print(f"rank 2: largest relative error of an update {small.max_error:.3f}")

    # task arithmetic: the trained adapter minus half of another, exactly ("cat": direct sum of the bonds)
    tnpeft.inject(model, tnpeft.AdapterConfig("lora", ["c_attn", "c_fc"], r=4, init_b="normal"), adapter_name="other")
    report = tnpeft.add_weighted_adapter(model, ["default", "other"], [1.0, -0.5], "combined", combination_type="cat")
    print(f"cat: exact={report.exact}, ranks {sorted({m['rank'] for m in report.modules.values()})}")
    tnpeft.set_adapter(model, "combined")
    tnpeft.export_peft(model, f"{d}/combined", adapter_name="combined")
    served = PeftModel.from_pretrained(copy.deepcopy(base), f"{d}/combined").eval()
    print("combined: peft vs tnpeft, max |Δlogits| =", (served(ids).logits - model(ids).logits).abs().max().item())
