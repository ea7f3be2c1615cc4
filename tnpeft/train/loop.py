"""A small, resumable training loop for adapted transformers models.

:func:`fit` trains the trainable parameters of a model (its active tnpeft adapters and any
``modules_to_save``) on a sequence-classification or causal-LM task, with a tqdm progress bar,
periodic evaluation, checkpoints, a final save, a JSON metrics file and PNG curves.

Resuming is exact: the data order of every epoch and the random state of every step are functions
of the seed and the step number, and a checkpoint (:mod:`tnpeft.train.checkpoint`) holds the
adapter, the optimizer's state and the state of every training hook the adapters' methods declare
(as safetensors + JSON, never pickle). Running the same command again after an interruption
(Ctrl-C, a killed process, a crash) continues from the last checkpoint and ends with the same
weights as an uninterrupted run, bit for bit.

A Ctrl-C may land anywhere. The optimizer's update and the recording of the step are one unit:
while they run, SIGINT is deferred (:class:`DeferredInterrupt`) and acted on as soon as the step
is recorded, so a checkpoint's step always counts exactly the updates its weights hold. A Ctrl-C
anywhere else (forward, backward, evaluation, a checkpoint being written) leaves the last complete
step as the state to checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from tnpeft.adapters import METHODS, TrainingHook
from tnpeft.errors import ConfigError, TNPeftError
from tnpeft.fileio import atomic_write_json, ensure_dir
from tnpeft.nn import adapter_method, save_adapter, tn_layers, trainable_parameters
from tnpeft.nn.model import active_adapter_names
from tnpeft.train.checkpoint import Checkpoint
from tnpeft.train.datasets import ClassificationData, LMData
from tnpeft.train.evaluation import evaluate, macro_f1, make_batch, model_device
from tnpeft.train.plots import moving_average, plot_curves, save_png
from tnpeft.train.train_config import TASKS, TrainConfig

__all__ = ["fit", "method_hooks", "TrainingInterrupted", "DeferredInterrupt", "TrainConfig", "TASKS", "ClassificationData", "LMData",
           "evaluate", "macro_f1", "moving_average", "plot_curves", "save_png"]


class TrainingInterrupted(TNPeftError):
    """Training stopped before the last step; a checkpoint was written. Run again to resume."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class DeferredInterrupt:
    """SIGINT handling for a training run: outside :meth:`critical` sections a SIGINT raises
    ``KeyboardInterrupt`` at once, as Python's default handler does; inside one it is remembered and
    raised when the section ends, so that the section (an optimizer step and its recording) runs
    whole. Installed only in the main thread (signal handlers live there); elsewhere it does nothing."""

    def __init__(self) -> None:
        self.pending = False
        self._depth = 0
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum, frame) -> None:
        if self._depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    @contextmanager
    def critical(self, raise_after: bool = True) -> Iterator[None]:
        """A section a SIGINT does not cut: it is raised (as ``KeyboardInterrupt``) after the section,
        or dropped with ``raise_after=False`` (the section already answers an interrupt)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self.pending and not self._depth:
            self.pending = False
            if raise_after:
                raise KeyboardInterrupt


def method_hooks(model: nn.Module, total_step: int) -> dict[str, TrainingHook]:
    """The training hooks of the model's active adapters whose methods declare one (e.g. a budget
    schedule), by adapter name — built for a run of ``total_step`` optimizer steps."""
    hooks: dict[str, TrainingHook] = {}
    for name in active_adapter_names(model):
        method = adapter_method(model, name)
        entry = METHODS.get(method) if method else None
        if entry is not None and entry.training_hook is not None:
            hooks[name] = entry.training_hook(model, adapter_name=name, total_step=total_step)
    return hooks


#: the progress bar's label of the training loss: its mean over the last 20 steps
SMOOTHED = "loss (mean of last 20)"


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
    out = ensure_dir(out_dir, "output folder")
    if len(train) == 0:
        raise ConfigError("the training set is empty", field="train")
    spe = math.ceil(len(train) / config.batch_size)
    total = config.max_steps or config.epochs * spe
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("the model has no trainable parameter; inject an adapter first", field="model")
    merged = sorted({n for _, layer in tn_layers(model) for n in layer.merged_adapters if n in layer.active_adapters})
    if merged:   # a merged adapter's forward is the frozen weight: it would get no gradient
        raise ConfigError(f"adapter(s) {merged} are merged into the base weights and cannot be trained; unmerge them "
                          "first (tnpeft.unmerge)", field="model")
    names = [n for n, _ in named]
    device = model_device(model)      # batches follow the model (CPU or GPU)
    opt = torch.optim.AdamW([p for _, p in named], lr=config.lr, weight_decay=config.weight_decay)
    hooks = method_hooks(model, total)
    for hook in hooks.values():
        hook.attach(opt)
    fingerprint = {"config": asdict(config), "train_size": len(train), "test_size": len(test),
                   "trainable": sum(p.numel() for _, p in named), "run": run_info or {}}
    ckpt = Checkpoint(out)
    history: dict[str, Any] = {"train_loss": [], "eval": [], "seconds": 0.0}
    start = 0
    found = ckpt.find() if resume else None
    if found is not None:
        state = ckpt.read_state(found, total)
        if state["fingerprint"] != json.loads(json.dumps(fingerprint)):
            raise ConfigError(f"{out} holds a checkpoint of a different run (other data, model or settings); use "
                              "another output directory, or resume=False / --no-resume to start over",
                              field="out")
        state = ckpt.load(found, model, opt, names, hooks, total)
        start, history = state["step"], state["history"]
        if progress:
            tqdm.write(f"resuming {desc} from step {start} of {total} ({found})")
    elif not resume and ckpt.find() is not None:
        for d in (ckpt.dir, ckpt.old):
            if d.exists():
                shutil.rmtree(d)

    warmup = min(config.warmup_steps, total)       # a warmup longer than the run is clipped to it
    if config.warmup_steps > total and progress and start == 0:
        tqdm.write(f"note: --warmup-steps {config.warmup_steps} is longer than the run ({total} steps); warming up "
                   f"over all {total} steps")

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return config.lr * warm * max(0.0, 1.0 - step / total)

    def save_ckpt(step: int) -> None:
        ckpt.save(model, opt, names, hooks, {"step": step, "total": total, "history": history,
                                                    "fingerprint": fingerprint})

    def run_eval(step: int) -> dict[str, float]:
        m = evaluate(model, tokenizer, test, config.task, config.eval_batch_size, config.max_length,
                     desc=f"eval @ {step}", progress=progress)
        history["eval"].append({"step": step, **m})
        return m

    with DeferredInterrupt() as guard:     # a Ctrl-C never splits an update from its record
        bar = tqdm(total=total, initial=start, desc=desc, disable=not progress, unit="step")
        step = start
        t0 = time.perf_counter()
        try:
            evaluated = {e["step"] for e in history["eval"]}
            if config.eval_every and start % config.eval_every == 0 and start < total and start not in evaluated:
                run_eval(start)       # the starting point of the held-out curve (or one an interrupt cut short)
            model.train()
            for step in range(start, total):
                epoch, i = divmod(step, spe)
                order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
                idx = order[i * config.batch_size:(i + 1) * config.batch_size].tolist()
                torch.manual_seed(config.seed * 1_000_003 + step)       # dropout etc.: a function of the step
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                loss = model(**make_batch(config.task, train, idx, tokenizer, config.max_length, device))["loss"]
                if not torch.isfinite(loss):
                    raise ConfigError(f"the training loss became {loss.item()} at step {step + 1}; lower the learning "
                                      f"rate (lr={config.lr})", field="lr")
                loss.backward()
                with guard.critical():             # the update and its record are one unit
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    history["train_loss"].append(loss.item())
                recent = history["train_loss"][-20:]
                bar.set_postfix({SMOOTHED: f"{sum(recent) / len(recent):.3f}"})
                bar.update()
                done = step + 1
                if config.eval_every and done % config.eval_every == 0 and done < total:
                    m = run_eval(done)
                    bar.set_postfix({SMOOTHED: f"{sum(recent) / len(recent):.3f}",
                                     **{f"eval_{k}": f"{v:.3f}" for k, v in m.items()}})
                history["seconds"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                if stop_after is not None and done == stop_after and done < total:
                    save_ckpt(done)
                    raise TrainingInterrupted(f"stopped after step {done} of {total}; run again to resume", done)
                if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total:
                    save_ckpt(done)
            bar.close()
            if not history["eval"] or history["eval"][-1]["step"] != total:
                run_eval(total)
            save_ckpt(total)
            save_adapter(model, out / "adapter")
        except KeyboardInterrupt:
            done = len(history["train_loss"])
            bar.close()
            with guard.critical(raise_after=False):    # a second Ctrl-C waits for this checkpoint
                save_ckpt(done)
            raise TrainingInterrupted(f"interrupted after step {done} of {total}; checkpoint written to "
                                      f"{ckpt.dir} — run the same command again to resume", done) from None
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
