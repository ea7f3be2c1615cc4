"""Quantum-PEFT, AdaLoRA and the orthogonal adapter on a tiny GPT-2, side by side.

Run:  .venv/bin/python examples/quantum_adapters.py
"""

import copy

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import tnpeft
from tnpeft.adapters import AdaLoRAController

torch.manual_seed(0)
base = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64,
                                  bos_token_id=0, eos_token_id=0))
ids = torch.randint(0, 128, (8, 32))
targets = ["c_attn", "c_proj", "c_fc"]
STEPS = 40

configs = {
    "lora r=4": tnpeft.AdapterConfig("lora", targets, r=4),
    "quantum_peft pauli": tnpeft.AdapterConfig("quantum_peft", targets, rank=4, layers=2),
    "quantum_peft givens 4-bit": tnpeft.AdapterConfig("quantum_peft", targets, rank=4, param="givens", bits=4),
    "adalora 8→4": tnpeft.AdapterConfig("adalora", targets, r=8, target_r=4, total_step=STEPS, tinit=5, tfinal=10),
    "oft butterfly": tnpeft.AdapterConfig("oft", targets, block_size=16, butterfly=True),
}

print(f"{'adapter':28}{'trainable':>11}{'loss start':>12}{'loss end':>10}")
for name, cfg in configs.items():
    model = tnpeft.inject(copy.deepcopy(base), cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ctl = AdaLoRAController(model).attach(opt) if cfg.method == "adalora" else None
    losses = []
    for _ in range(STEPS):
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    count = tnpeft.trainable_parameters(model).trainable
    print(f"{name:28}{count:>11,}{losses[0]:>12.3f}{losses[-1]:>10.3f}"
          + (f"   ranks {sorted(set(ctl.rank_pattern().values()))}" if ctl else ""))
    model.eval()
    y = model(ids).logits
    tnpeft.merge(model)
    assert (model(ids).logits - y).abs().max() < 1e-3, name  # every one of them merges exactly
