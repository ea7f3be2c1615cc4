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
from types import FrameType
from typing import Any, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from tnpeft.adapters import METHODS, TrainingHook
from tnpeft.errors import ConfigError, TNPeftError
from tnpeft.fileio import atomic_write_json, ensure_dir
from tnpeft.nn import adapter_config, adapter_method, save_adapter, tn_layers, trainable_parameters
from tnpeft.nn.model import active_adapter_names
from tnpeft.train.checkpoint import Checkpoint
from tnpeft.train.datasets import ClassificationData, LMData
from tnpeft.train.evaluation import evaluate, macro_f1, make_batch, model_device
from tnpeft.train.plots import moving_average, plot_curves, save_png
from tnpeft.train.train_config import TASKS, TrainConfig, effective_warmup

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

    def _handler(self, signum: int, frame: FrameType | None) -> None:
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

    def __exit__(self, *exc: object) -> None:
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


def fit(model: nn.Module, tokenizer: Any, train: Any, test: Any, config: TrainConfig, out_dir: str | Path, *,
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
    run = _Run(model, tokenizer, train, test, config, out_dir, desc, progress, run_info)
    start = run.restore(resume)
    with DeferredInterrupt() as guard:     # a Ctrl-C never splits an update from its record
        bar = tqdm(total=run.total, initial=start, desc=desc, disable=not progress, unit="step")
        try:
            run.train_steps(start, guard, bar, stop_after)
            bar.close()
            run.finish()
        except KeyboardInterrupt:
            done = len(run.history["train_loss"])
            bar.close()
            with guard.critical(raise_after=False):    # a second Ctrl-C waits for this checkpoint
                run.save(done)
            raise TrainingInterrupted(f"interrupted after step {done} of {run.total}; checkpoint written to "
                                      f"{run.ckpt.dir} — run the same command again to resume", done) from None
        return run.metrics()


class _Run:
    """One training run of :func:`fit`: its checks, optimizer, hooks and checkpoint, its steps and
    its record (``history``: the training losses, the held-out evaluations, the seconds spent)."""

    def __init__(self, model: nn.Module, tokenizer: Any, train: Any, test: Any, config: TrainConfig, out_dir: str | Path,
                 desc: str, progress: bool, run_info: dict[str, Any] | None):
        config.check()
        self.out = ensure_dir(out_dir, "output folder")
        if len(train) == 0:
            raise ConfigError("the training set is empty", field="train")
        self.model, self.tokenizer, self.train, self.test, self.config = model, tokenizer, train, test, config
        self.desc, self.progress, self.run_info = desc, progress, run_info or {}
        self.spe = math.ceil(len(train) / config.batch_size)
        self.total = config.max_steps or config.epochs * self.spe
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ConfigError("the model has no trainable parameter; inject an adapter first", field="model")
        merged = sorted({n for _, layer in tn_layers(model) for n in layer.merged_adapters
                         if n in layer.active_adapters})
        if merged:   # a merged adapter's forward is the frozen weight: it would get no gradient
            raise ConfigError(f"adapter(s) {merged} are merged into the base weights and cannot be trained; unmerge "
                              "them first (tnpeft.unmerge)", field="model")
        self.names = [n for n, _ in named]
        self.device = model_device(model)      # batches follow the model (CPU or GPU)
        self.opt = torch.optim.AdamW([p for _, p in named], lr=config.lr, weight_decay=config.weight_decay)
        self.hooks = method_hooks(model, self.total)
        for hook in self.hooks.values():
            hook.attach(self.opt)
        self.fingerprint = {"config": asdict(config), "train_size": len(train), "test_size": len(test),
                            "trainable": sum(p.numel() for _, p in named), "run": self.run_info}
        self.ckpt = Checkpoint(self.out)
        self.history: dict[str, Any] = {"train_loss": [], "eval": [], "seconds": 0.0}
        # a warm-up longer than its fraction of the run is clipped to it
        self.warmup = effective_warmup(config.warmup_steps, self.total, config.warmup_fraction)

    def restore(self, resume: bool) -> int:
        """Continue from this run's checkpoint (``resume``) or discard an old one; the first step."""
        start = 0
        found = self.ckpt.find() if resume else None
        if found is not None:
            state = self.ckpt.read_state(found, self.total)
            if state["fingerprint"] != json.loads(json.dumps(self.fingerprint)):
                raise ConfigError(f"{self.out} holds a checkpoint of a different run (other data, model or settings); "
                                  "use another output directory, or resume=False / --no-resume to start over",
                                  field="out")
            state = self.ckpt.load(found, self.model, self.opt, self.names, self.hooks, self.total)
            start, self.history = state["step"], state["history"]
            if self.progress:
                tqdm.write(f"resuming {self.desc} from step {start} of {self.total} ({found})")
        elif not resume and self.ckpt.find() is not None:
            for d in (self.ckpt.dir, self.ckpt.old):
                if d.exists():
                    shutil.rmtree(d)
        if self.warmup < self.config.warmup_steps and self.progress and start == 0:
            tqdm.write(f"note: a warm-up of {self.config.warmup_steps} steps is more than {self.config.warmup_fraction:g} "
                       f"of the run ({self.total} steps); warming up over {self.warmup} step(s) "
                       "(--warmup-steps, --warmup-fraction)")
        return start

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        return self.config.lr * warm * max(0.0, 1.0 - step / self.total)

    def save(self, step: int) -> None:
        self.ckpt.save(self.model, self.opt, self.names, self.hooks,
                       {"step": step, "total": self.total, "history": self.history, "fingerprint": self.fingerprint})

    def evaluate(self, step: int) -> dict[str, float]:
        c = self.config
        m = evaluate(self.model, self.tokenizer, self.test, c.task, c.eval_batch_size, c.max_length,
                     desc=f"eval @ {step}", progress=self.progress)
        self.history["eval"].append({"step": step, **m})
        return m

    def step_loss(self, step: int) -> torch.Tensor:
        """The loss of optimizer step ``step``: its batch (a function of the seed and the epoch) and its
        random state (a function of the step), so that a resumed run repeats it exactly."""
        c = self.config
        epoch, i = divmod(step, self.spe)
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(c.seed * 7919 + epoch))
        idx = order[i * c.batch_size:(i + 1) * c.batch_size].tolist()
        torch.manual_seed(c.seed * 1_000_003 + step)       # dropout etc.: a function of the step
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        loss: torch.Tensor = self.model(**make_batch(c.task, self.train, idx, self.tokenizer, c.max_length,
                                                     self.device))["loss"]
        if not torch.isfinite(loss):
            raise ConfigError(f"the training loss became {loss.item()} at step {step + 1}; lower the learning "
                              f"rate (lr={c.lr})", field="lr")
        return loss

    def train_steps(self, start: int, guard: DeferredInterrupt, bar: Any, stop_after: int | None) -> None:
        c, history, total = self.config, self.history, self.total
        t0 = time.perf_counter()
        evaluated = {e["step"] for e in history["eval"]}
        if c.eval_every and start % c.eval_every == 0 and start < total and start not in evaluated:
            self.evaluate(start)       # the starting point of the held-out curve (or one an interrupt cut short)
        self.model.train()
        for step in range(start, total):
            loss = self.step_loss(step)
            loss.backward()
            with guard.critical():             # the update and its record are one unit
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                history["train_loss"].append(loss.item())
            recent = history["train_loss"][-20:]
            bar.set_postfix({SMOOTHED: f"{sum(recent) / len(recent):.3f}"})
            bar.update()
            done = step + 1
            if c.eval_every and done % c.eval_every == 0 and done < total:
                m = self.evaluate(done)
                bar.set_postfix({SMOOTHED: f"{sum(recent) / len(recent):.3f}",
                                 **{f"eval_{k}": f"{v:.3f}" for k, v in m.items()}})
            history["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if stop_after is not None and done == stop_after and done < total:
                self.save(done)
                raise TrainingInterrupted(f"stopped after step {done} of {total}; run again to resume", done)
            if c.checkpoint_every and done % c.checkpoint_every == 0 and done < total:
                self.save(done)

    def finish(self) -> None:
        """The last evaluation, the final checkpoint and the adapter (which records the task and token
        length it was trained with, so that evaluations default to them)."""
        if not self.history["eval"] or self.history["eval"][-1]["step"] != self.total:
            self.evaluate(self.total)
        self.save(self.total)
        for name in active_adapter_names(self.model):
            record = adapter_config(self.model, name)
            if record is not None:
                record["training"] = {"task": self.config.task, "max_length": self.config.max_length}
        save_adapter(self.model, self.out / "adapter")

    def metrics(self) -> dict[str, Any]:
        """The run's metrics (also written to ``metrics.json``, with the curves in ``curves.png``)."""
        c, out, history = self.config, self.out, self.history
        counts = trainable_parameters(self.model)
        losses = history["train_loss"]
        metrics = {"task": c.task, "steps": self.total, "epochs": c.epochs, "train_size": len(self.train),
                   "test_size": len(self.test), "trainable_parameters": counts.trainable,
                   "total_parameters": counts.total, "train_seconds": round(history["seconds"], 1),
                   "first_loss": losses[0] if losses else None,
                   "last_loss_avg20": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
                   "final": history["eval"][-1], "eval_history": history["eval"], "config": asdict(c),
                   "adapter_dir": str(out / "adapter"), **self.run_info}
        atomic_write_json(out / "metrics.json", metrics)
        plot_curves(history, out / "curves.png", title=self.desc)
        return metrics
