"""A small, resumable training loop for adapted transformers models.

:func:`fit` trains the trainable parameters of a model (its active tnpeft adapters and any
``modules_to_save``) on a sequence-classification or causal-LM task, with a tqdm progress bar,
periodic evaluation, checkpoints, a final save, a JSON metrics file and PNG curves.

Resuming is exact: the data order of every epoch and the random state of every step are functions
of the seed and the step number, and a checkpoint holds the adapter, the optimizer's state (as
safetensors + JSON, never pickle) and AdaLoRA's controller state. Running the same command again
after an interruption (Ctrl-C, a killed process, a crash) continues from the last checkpoint and
ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tnpeft.errors import ConfigError, TNPeftError
from tnpeft.fileio import atomic_write_bytes, atomic_write_json, read_json, read_safetensors, tensors_to_bytes

TASKS = ("classification", "causal_lm")


class TrainingInterrupted(TNPeftError):
    """Training stopped before the last step; a checkpoint was written. Run again to resume."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit` (all JSON-ready; a checkpoint records them and refuses to
    resume under different ones)."""

    task: str = "classification"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_length: int = 48
    eval_every: int = 0           # evaluate every N steps (and before the first); 0: only at the end
    checkpoint_every: int = 25
    seed: int = 0
    eval_batch_size: int = 128

    def check(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}", field="task")
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}", field=name)
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {v!r}", field=name)
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ConfigError(f"max_steps must be a positive integer, got {self.max_steps!r}", field="max_steps")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}", field="lr")


@dataclass
class ClassificationData:
    """Texts with integer labels; ``label_names[i]`` names label ``i``."""

    texts: list[str]
    labels: list[int]
    label_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class LMData:
    """Token blocks for causal-LM training, shape ``(n, length)``."""

    blocks: torch.Tensor

    def __len__(self) -> int:
        return int(self.blocks.shape[0])


# ------------------------------------------------------------------------------------- metrics
def macro_f1(pred: list[int], gold: list[int], n_classes: int) -> float:
    """Unweighted mean of the per-class F1 scores."""
    f1s = []
    for c in range(n_classes):
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        fp = sum(p == c and g != c for p, g in zip(pred, gold))
        fn = sum(p != c and g == c for p, g in zip(pred, gold))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / n_classes


def _batch(task: str, data, idx: list[int], tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    if task == "classification":
        enc = tokenizer([data.texts[j] for j in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        return {**enc, "labels": torch.tensor([data.labels[j] for j in idx])}
    ids = data.blocks[idx]
    return {"input_ids": ids, "labels": ids}


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer, data, task: str = "classification", batch_size: int = 128,
             max_length: int = 48, desc: str = "eval", progress: bool = True) -> dict[str, float]:
    """Classification: ``accuracy`` and ``macro_f1``; causal LM: ``loss`` and ``perplexity``."""
    was_training = model.training
    model.eval()
    preds: list[int] = []
    losses: list[tuple[float, int]] = []
    for i in tqdm(range(0, len(data), batch_size), desc=desc, leave=False, disable=not progress):
        idx = list(range(i, min(len(data), i + batch_size)))
        batch = _batch(task, data, idx, tokenizer, max_length)
        out = model(**batch)
        if task == "classification":
            preds.extend(out["logits"].argmax(-1).tolist())
        else:
            losses.append((float(out["loss"]), len(idx)))
    model.train(was_training)
    if task == "classification":
        n_classes = max(len(data.label_names), max(data.labels) + 1)
        acc = sum(p == g for p, g in zip(preds, data.labels)) / len(data)
        return {"accuracy": acc, "macro_f1": macro_f1(preds, data.labels, n_classes)}
    loss = sum(x * n for x, n in losses) / sum(n for _, n in losses)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


# ------------------------------------------------------------------------------------- checkpoints
def _optimizer_to_files(opt: torch.optim.Optimizer, names: list[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"param_names": names, "param_groups": groups, "scalars": scalars}, tensors


def _optimizer_from_files(opt: torch.optim.Optimizer, names: list[str], meta: dict, tensors: dict[str, torch.Tensor],
                          source: str) -> None:
    if meta.get("param_names") != names:
        raise ConfigError(f"{source}: the checkpoint's optimizer covers other parameters than this model's trainable "
                          "ones; was it written by another run? Use another output directory or --no-resume",
                          field="checkpoint")
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, _, k = key.partition(".")
        state.setdefault(int(idx), {})[k] = v
    for idx, sc in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def _controller(model: nn.Module, total: int):
    from tnpeft.nn.model import tn_layers

    for _, layer in tn_layers(model):
        for name in layer.active_adapters:
            if layer.tn_adapters[name].graph.meta.get("adapter") == "adalora":
                from tnpeft.adapters.adalora import AdaLoRAController

                return AdaLoRAController(model, name, total_step=total)
    return None


class _Checkpoint:
    """``<out>/checkpoint/``: ``adapter/`` + ``optimizer.safetensors`` + ``trainer_state.json``.

    Written into ``checkpoint.tmp`` and swapped in by renames, keeping the previous checkpoint as
    ``checkpoint.old`` until the new one is in place, so a kill at any moment leaves one complete
    checkpoint."""

    def __init__(self, out: Path):
        self.dir, self.tmp, self.old = out / "checkpoint", out / "checkpoint.tmp", out / "checkpoint.old"

    def find(self) -> Path | None:
        for d in (self.dir, self.old):
            if (d / "trainer_state.json").exists():
                return d
        return None

    def save(self, model, opt, names, controller, state: dict[str, Any]) -> None:
        from tnpeft.nn.io import save_adapter

        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        save_adapter(model, self.tmp / "adapter")
        meta, tensors = _optimizer_to_files(opt, names)
        if controller is not None:
            c_scalars, c_tensors = controller.state_dict()
            meta["adalora"] = c_scalars
            tensors.update({f"adalora.{k}": v for k, v in c_tensors.items()})
        atomic_write_bytes(self.tmp / "optimizer.safetensors", tensors_to_bytes(tensors))
        atomic_write_json(self.tmp / "optimizer.json", meta)
        atomic_write_json(self.tmp / "trainer_state.json", state)
        if self.dir.exists():
            if self.old.exists():
                shutil.rmtree(self.old)
            self.dir.rename(self.old)
        self.tmp.rename(self.dir)
        if self.old.exists():
            shutil.rmtree(self.old)

    def load(self, d: Path, model, opt, names, controller) -> dict[str, Any]:
        from tnpeft.nn.io import load_adapter

        state = read_json(d / "trainer_state.json", "checkpoint state")
        load_adapter(model, d / "adapter", is_trainable=True)
        meta = read_json(d / "optimizer.json", "checkpoint optimizer state")
        tensors = read_safetensors(d / "optimizer.safetensors", None)
        opt_t = {k: v for k, v in tensors.items() if not k.startswith("adalora.")}
        _optimizer_from_files(opt, names, meta, opt_t, f"checkpoint {str(d)!r}")
        if controller is not None and "adalora" in meta:
            controller.load_state_dict(meta["adalora"], {k[8:]: v for k, v in tensors.items() if k.startswith("adalora.")})
        return state


# ------------------------------------------------------------------------------------- curves
def moving_average(xs: list[float], k: int) -> list[float]:
    """Trailing means over up to ``k`` values."""
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def save_png(fig, path: Path) -> None:
    """Write a matplotlib figure as a PNG atomically and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: dict[str, Any], path: Path, title: str = "") -> None:
    """Training loss (with a moving average) and the evaluation metric against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    losses = history["train_loss"]
    evals = history["eval"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = list(range(1, len(losses) + 1))
    axes[0].plot(steps, losses, color="#BBBBBB", lw=0.8, label="loss")
    k = max(1, len(losses) // 20)
    axes[0].plot(steps, moving_average(losses, k), color="#4C72B0", lw=1.6, label=f"moving average ({k})")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=8)
    if evals:
        keys = [m for m in ("accuracy", "macro_f1", "loss") if m in evals[0]]
        for m in keys:
            axes[1].plot([e["step"] for e in evals], [e[m] for e in evals], marker="o", label=m)
        axes[1].set_ylabel("held-out metric")
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


# ------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, tokenizer, train, test, config: TrainConfig, out_dir: str | Path, *,
        resume: bool = True, desc: str = "training", progress: bool = True, stop_after: int | None = None,
        run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model``'s trainable parameters on ``train`` and evaluate on ``test``.

    Writes into ``out_dir``: ``checkpoint/`` (every ``checkpoint_every`` steps, on Ctrl-C and at the
    end), ``adapter/`` (the final adapter, loadable with :func:`tnpeft.load_adapter`),
    ``metrics.json`` and ``curves.png``. With ``resume`` (default) an existing checkpoint of the same
    run is continued; one of a different run is refused. ``stop_after=k`` stops after step ``k``
    as an interruption would (for tests). Returns the metrics.

    Raises :class:`TrainingInterrupted` when stopped early (after writing a checkpoint).
    """
    config.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(train) == 0:
        raise ConfigError("the training set is empty", field="train")
    spe = math.ceil(len(train) / config.batch_size)
    total = config.max_steps or config.epochs * spe
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("the model has no trainable parameter; inject an adapter first", field="model")
    names = [n for n, _ in named]
    opt = torch.optim.AdamW([p for _, p in named], lr=config.lr, weight_decay=config.weight_decay)
    controller = _controller(model, total)
    if controller is not None:
        controller.attach(opt)
    fingerprint = {"config": asdict(config), "train_size": len(train), "test_size": len(test),
                   "trainable": sum(p.numel() for _, p in named), "run": run_info or {}}
    ckpt = _Checkpoint(out)
    history: dict[str, Any] = {"train_loss": [], "eval": [], "seconds": 0.0}
    start = 0
    found = ckpt.find() if resume else None
    if found is not None:
        state = read_json(found / "trainer_state.json", "checkpoint state")
        if state.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            raise ConfigError(f"{out} holds a checkpoint of a different run (other data, model or settings); use "
                              "another output directory, or resume=False / --no-resume to start over",
                              field="out")
        state = ckpt.load(found, model, opt, names, controller)
        start, history = int(state["step"]), state["history"]
        if progress:
            tqdm.write(f"resuming {desc} from step {start} of {total} ({found})")
    elif not resume and ckpt.find() is not None:
        for d in (ckpt.dir, ckpt.old):
            if d.exists():
                shutil.rmtree(d)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        return config.lr * warm * max(0.0, 1.0 - step / total)

    def save_ckpt(step: int) -> None:
        ckpt.save(model, opt, names, controller, {"step": step, "total": total, "history": history,
                                                    "fingerprint": fingerprint})

    def run_eval(step: int) -> dict[str, float]:
        m = evaluate(model, tokenizer, test, config.task, config.eval_batch_size, config.max_length,
                     desc=f"eval @ {step}", progress=progress)
        history["eval"].append({"step": step, **m})
        return m

    if config.eval_every and start == 0 and not history["eval"]:
        run_eval(0)                                    # the starting point of the held-out curve
    model.train()
    bar = tqdm(total=total, initial=start, desc=desc, disable=not progress, unit="step")
    step = start
    t0 = time.perf_counter()
    try:
        for step in range(start, total):
            epoch, i = divmod(step, spe)
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
            idx = order[i * config.batch_size:(i + 1) * config.batch_size].tolist()
            torch.manual_seed(config.seed * 1_000_003 + step)       # dropout etc.: a function of the step
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = model(**_batch(config.task, train, idx, tokenizer, config.max_length))["loss"]
            if not torch.isfinite(loss):
                raise ConfigError(f"the training loss became {loss.item()} at step {step + 1}; lower the learning "
                                  f"rate (lr={config.lr})", field="lr")
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            history["train_loss"].append(loss.item())
            recent = history["train_loss"][-20:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
            bar.update()
            done = step + 1
            if config.eval_every and done % config.eval_every == 0 and done < total:
                m = run_eval(done)
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", **{f"eval_{k}": f"{v:.3f}" for k, v in m.items()})
            history["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if stop_after is not None and done == stop_after and done < total:
                save_ckpt(done)
                raise TrainingInterrupted(f"stopped after step {done} of {total}; run again to resume", done)
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total:
                save_ckpt(done)
    except KeyboardInterrupt:
        done = len(history["train_loss"])
        bar.close()
        save_ckpt(done)
        raise TrainingInterrupted(f"interrupted after step {done} of {total}; checkpoint written to "
                                  f"{ckpt.dir} — run the same command again to resume", done) from None
    bar.close()
    if not history["eval"] or history["eval"][-1]["step"] != total:
        run_eval(total)
    save_ckpt(total)
    from tnpeft.nn.io import save_adapter
    from tnpeft.nn.model import trainable_parameters

    save_adapter(model, out / "adapter")
    counts = trainable_parameters(model)
    losses = history["train_loss"]
    metrics = {"task": config.task, "steps": total, "epochs": config.epochs, "train_size": len(train),
               "test_size": len(test), "trainable_parameters": counts.trainable, "total_parameters": counts.total,
               "train_seconds": round(history["seconds"], 1), "first_loss": losses[0] if losses else None,
               "last_loss_avg20": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
               "final": history["eval"][-1], "eval_history": history["eval"], "config": asdict(config),
               "adapter_dir": str(out / "adapter"), **(run_info or {})}
    atomic_write_json(out / "metrics.json", metrics)
    plot_curves(history, out / "curves.png", title=desc)
    return metrics
