"""Compare adapters fairly with ``tnpeft.train.compare``: two adapters (tnpeft's LoRA and peft's
own) and a topology of Quantum-PEFT × two learning rates × two seeds, the rate chosen on a
validation split, the figures on a separate test split — on a tiny BERT and a made-up sentiment
CSV, so that it runs in a few minutes on two cores. For the real study see docs/compare.md.

Run:  .venv/bin/python examples/compare_adapters.py [OUT]     (default OUT: runs/compare_example)
"""

import csv
import random
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from tnpeft.train import compare
from tnpeft.train.offline_assets import minilm_path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/compare_example")
work = out / "inputs"
if not (work / "model" / "config.json").exists():      # a tiny BERT with MiniLM's tokenizer
    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    rng = random.Random(0)
    pos, neg, filler = "good great lovely happy".split(), "bad awful sad poor".split(), "the a day it was".split()
    with open(work / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(600):
            y = rng.random() < 0.5
            words = [rng.choice(pos if y else neg)] + [rng.choice(filler) for _ in range(5)]
            rng.shuffle(words)
            w.writerow([" ".join(words), "positive" if y else "negative"])

res = compare(["lora:r=4,alpha=8", "peft_lora:r=4,alpha=8", "quantum_peft:rank=4,layers=1"],
              model=str(work / "model"), data=str(work / "data.csv"), lrs=[3e-3, 3e-2],
              lr_grid={"quantum_peft": [3e-2, 1e-1]}, seeds=[0, 1], steps=30, val_size=100, test_size=100,
              batch_size=16, max_length=16, protocol="grid", out=out)
best = max(res["summary"], key=lambda r: r["test_accuracy_mean"] or 0)
print(f"\nbest on test (chosen on validation): {best['adapter']} at lr {best['lr']:g}; see {out}/pareto.png")
