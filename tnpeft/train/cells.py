"""One cell of a comparison (:mod:`tnpeft.train.comparison`): an adapter spec at one learning
rate and seed, trained with the recipe of :func:`tnpeft.train.fit`, measured, saved, and later
evaluated on the test split.

Adapter specs are ``NAME[:key=value,...]``: a registered method (``lora:r=8``), a builder of your
own (``mypkg.topos:ttlora:r=4``), a graph ``.json`` file, or one of peft's own tuners on the same
target modules as a reference row: ``peft_lora[:r=8,alpha=16]``, ``peft_loha``, ``peft_lokr``,
``peft_vera`` (peft's config + ``get_peft_model``).
"""

from __future__ import annotations

import ctypes
import gc
import math
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tnpeft.errors import AdapterFileError, ConfigError
from tnpeft.fileio import atomic_write_bytes, read_safetensors, tensors_to_bytes
from tnpeft.nn import AdapterConfig, inject, load_adapter, save_adapter
from tnpeft.nn.model import find_targets
from tnpeft.train.compare_setup import AdapterSpec, Context
from tnpeft.train.datasets import load_model
from tnpeft.train.evaluation import evaluate, make_batch, model_device
from tnpeft.train.loop import method_hooks
from tnpeft.train.train_config import effective_warmup


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


try:
    import resource

    _PAGE = resource.getpagesize()
except ImportError:  # pragma: no cover - not on Linux
    _PAGE = 4096


def _trim() -> None:
    """Hand freed heap memory back to the system, so that the RSS is a fair starting point."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


class PeakRSS:
    """The process's resident memory, sampled every ``interval`` s in a thread: ``peak - start``
    in bytes (None where ``/proc/self/statm`` cannot be read)."""

    start: int | None
    peak: int | None

    def __init__(self, interval: float = 0.01):
        self.interval, self.start, self.peak = interval, None, None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            r = _rss()
            if r is not None and self.peak is not None:
                self.peak = max(self.peak, r)

    def __enter__(self) -> PeakRSS:
        _trim()
        self.start = self.peak = _rss()
        if self.start is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            r = _rss()
            if r is not None and self.peak is not None:
                self.peak = max(self.peak, r)

    @property
    def above_start(self) -> int | None:
        return None if self.start is None or self.peak is None else self.peak - self.start


class PeakCUDA:
    """The CUDA allocator's peak while the block runs, above what was allocated when it began."""

    start: int | None
    peak: int | None

    def __init__(self, device: str):
        self.device, self.start, self.peak = torch.device(device), None, None

    def __enter__(self) -> PeakCUDA:
        torch.cuda.synchronize(self.device)
        self.start = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device)

    @property
    def above_start(self) -> int | None:
        return None if self.start is None or self.peak is None else self.peak - self.start


def peft_config(spec: AdapterSpec, target_modules: list[str], modules_to_save: list[str]) -> Any:
    """peft's config of a reference row (``peft_lora``, ``peft_loha``, ``peft_lokr``, ``peft_vera``)
    on ``target_modules``, the head in ``modules_to_save``; the tuners' dropouts at peft's default
    (off), ``peft_lora``'s as its spec says."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig, VeraConfig

    hp = spec.hparams
    common: dict[str, Any] = {"target_modules": target_modules, "modules_to_save": modules_to_save or None}
    if spec.name == "peft_lora":
        return LoraConfig(r=hp["r"], lora_alpha=hp["alpha"], lora_dropout=hp["dropout"], **common)
    if spec.name == "peft_loha":
        return LoHaConfig(r=hp["r"], alpha=hp["alpha"], **common)
    if spec.name == "peft_lokr":
        return LoKrConfig(r=hp["r"], alpha=hp["alpha"], decompose_both=hp["decompose_both"],
                          decompose_factor=hp["decompose_factor"], **common)
    if spec.name == "peft_vera":
        return VeraConfig(r=hp["r"], d_initial=hp["d_initial"], **common)
    raise ConfigError(f"adapter spec {spec.label!r}: no peft reference named {spec.name!r}", field="adapters")


def build_model(ctx: Context, spec: AdapterSpec, seed: int) -> tuple[nn.Module, Any, list[str]]:
    """``(model, tokenizer, modules_to_save)``: the frozen model with ``spec``'s adapter, fresh for ``seed``."""
    loaded = load_model(ctx.model, ctx.task, num_labels=ctx.num_labels, seed=seed)
    targets = ctx.target_modules or loaded.target_modules
    excl = ctx.exclude_modules if ctx.exclude_modules is not None else loaded.exclude_modules
    torch.manual_seed(seed)         # the adapter's initial values: a function of the seed
    if spec.is_peft:
        from peft import get_peft_model

        names = find_targets(loaded.model, AdapterConfig("lora", targets, exclude_modules=excl))
        config = peft_config(spec, names, loaded.modules_to_save)
        try:
            wrapped = get_peft_model(loaded.model, config)
        except (TypeError, ValueError) as e:     # e.g. LoHa and LoKr refuse GPT-2's Conv1D
            raise ConfigError(f"adapter spec {spec.label!r}: peft refused it on {ctx.model}'s "
                              f"{', '.join(names[:3])}{', …' if len(names) > 3 else ''}: {e}", field="adapters") from None
        return wrapped.to(ctx.device), loaded.tokenizer, loaded.modules_to_save
    cfg = AdapterConfig(spec.method, targets, exclude_modules=excl, modules_to_save=loaded.modules_to_save,
                        **spec.hparams)
    return inject(loaded.model, cfg).to(ctx.device), loaded.tokenizer, loaded.modules_to_save


def parameter_counts(model: nn.Module, modules_to_save: list[str]) -> tuple[int, int]:
    """``(adapter, head)`` trainable parameters: the head is what ``modules_to_save`` names."""
    head = adapter = 0
    for n, p in model.named_parameters():
        if p.requires_grad:
            if any(n.startswith(s + ".") or f".{s}." in n for s in modules_to_save):
                head += p.numel()
            else:
                adapter += p.numel()
    return adapter, head


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def save_trained(model: nn.Module, spec: AdapterSpec, d: Path) -> None:
    """The trained adapter (and head) of a cell: ``adapter/`` (tnpeft) or ``peft_trainable.safetensors``."""
    if spec.is_peft:
        atomic_write_bytes(d / "peft_trainable.safetensors", tensors_to_bytes(_trainable(model)))
    else:
        save_adapter(model, d / "adapter")


def load_trained(ctx: Context, spec: AdapterSpec, seed: int, d: Path) -> tuple[nn.Module, Any]:
    """A fresh model with the cell's trained adapter (and head) loaded back (safetensors only)."""
    if not spec.is_peft:
        loaded = load_model(ctx.model, ctx.task, num_labels=ctx.num_labels, seed=seed + 1)  # head values from file
        return load_adapter(loaded.model.to(ctx.device), d / "adapter"), loaded.tokenizer
    model, tok, _ = build_model(ctx, spec, seed + 1)
    path = d / "peft_trainable.safetensors"
    saved, own = read_safetensors(path, None), _trainable(model)
    if set(saved) != set(own) or any(saved[k].shape != own[k].shape for k in own):
        raise AdapterFileError(f"{path}: its tensors do not fit the model of this cell ({len(saved)} tensors, the "
                               f"model trains {len(own)})")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in saved:
                p.copy_(saved[n])
    return model, tok


def train_cell(ctx: Context, spec: AdapterSpec, lr: float, seed: int, d: Path, desc: str = "cell") -> dict[str, Any]:
    """Train one cell with :func:`tnpeft.train.fit`'s recipe (AdamW, linear warm-up and decay, the data
    order and random state of every step a function of the seed and step), evaluate it on the
    validation split, save the adapter into ``d`` and return its record (without test metrics).

    With ``ctx.eval_every`` the validation split is also evaluated every that many steps (the record's
    ``val_curve``); with ``ctx.patience`` as well, training stops once that many evaluations in a row
    brought no improvement, and the cell keeps the values of its best evaluation (early stopping)."""
    model, tok, to_save = build_model(ctx, spec, seed)
    adapter_params, head_params = parameter_counts(model, to_save)
    run = _CellRun(ctx, spec, model, tok, lr, seed)
    with (PeakCUDA(ctx.device) if str(ctx.device).startswith("cuda") else PeakRSS()) as mem:
        run.train(desc)
    record: dict[str, Any] = {
        "adapter": spec.label, "name": spec.name, "hparams": spec.hparams, "lr": lr, "seed": seed, "steps": run.total,
        "warmup_steps": run.warmup, "steps_run": len(run.losses), "stopped_early_at": run.stopped_at,
        "adapter_parameters": adapter_params, "head_parameters": head_params,
        "trainable_parameters": adapter_params + head_params,
        "step_seconds_median": statistics.median(run.times) if run.times else None,
        "train_seconds": sum(run.times), "peak_memory_mb": None if mem.above_start is None else mem.above_start / 2**20,
        "train_loss": run.losses, "diverged_at_step": run.diverged, "val": None, "val_curve": run.curve}
    if run.diverged is None:
        t0 = time.perf_counter()
        if run.best is not None:              # early stopping: the best evaluation's values
            run.restore_best()
            record["best_step"] = run.best[0]
        record["val"] = evaluate(model, tok, ctx.val, ctx.task, ctx.eval_batch_size, ctx.max_length,
                                 progress=False)
        record["val_eval_seconds"] = time.perf_counter() - t0
        if ctx.eval_every and (not run.curve or run.curve[-1]["step"] != len(run.losses)):
            run.curve.append({"step": len(run.losses), **record["val"]})    # the curve ends where the run did
        save_trained(model, spec, d)
    del model, run
    _trim()
    return record


class _CellRun:
    """The training steps of one cell, its periodic validation and early stopping."""

    def __init__(self, ctx: Context, spec: AdapterSpec, model: nn.Module, tok: Any, lr: float, seed: int):
        self.ctx, self.model, self.tok, self.lr, self.seed = ctx, model, tok, lr, seed
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = named
        self.opt = torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=ctx.weight_decay)
        self.spe = math.ceil(len(ctx.train) / ctx.batch_size)
        self.total = ctx.steps or ctx.epochs * self.spe
        self.hooks = {} if spec.is_peft else method_hooks(model, self.total)
        for hook in self.hooks.values():
            hook.attach(self.opt)
        self.warmup = effective_warmup(ctx.warmup_steps, self.total, ctx.warmup_fraction)
        self.losses: list[float] = []
        self.times: list[float] = []
        self.curve: list[dict[str, Any]] = []
        self.diverged: int | None = None
        self.stopped_at: int | None = None
        self.best: tuple[int, float, dict[str, torch.Tensor]] | None = None
        self.since_best = 0

    def train(self, desc: str) -> None:
        ctx, model, opt, total = self.ctx, self.model, self.opt, self.total
        model.train()
        bar = tqdm(total=total, desc=desc, leave=False, disable=not ctx.progress, unit="step")
        for step in range(total):
            t0 = time.perf_counter()
            epoch, i = divmod(step, self.spe)
            order = torch.randperm(len(ctx.train), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            idx = order[i * ctx.batch_size:(i + 1) * ctx.batch_size].tolist()
            torch.manual_seed(self.seed * 1_000_003 + step)
            warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
            for g in opt.param_groups:
                g["lr"] = self.lr * warm * max(0.0, 1.0 - step / total)
            loss = model(**make_batch(ctx.task, ctx.train, idx, self.tok, ctx.max_length, model_device(model)))["loss"]
            if not torch.isfinite(loss):
                self.diverged = step + 1
                break
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.losses.append(loss.item())
            self.times.append(time.perf_counter() - t0)
            bar.update()
            done = step + 1
            if ctx.eval_every and done % ctx.eval_every == 0 and done < total and self._validate(done):
                self.stopped_at = done
                break
        bar.close()
        for hook in self.hooks.values():
            hook.detach()

    def _validate(self, step: int) -> bool:
        """Evaluate the validation split at ``step``; ``True`` when early stopping says stop."""
        ctx = self.ctx
        m = evaluate(self.model, self.tok, ctx.val, ctx.task, ctx.eval_batch_size, ctx.max_length, progress=False)
        self.curve.append({"step": step, **m})
        self.model.train()
        if not ctx.patience:
            return False
        key = "accuracy" if ctx.task == "classification" else "perplexity"
        score = m[key] if ctx.task == "classification" else -m[key]
        if self.best is None or score > self.best[1]:
            self.best = (step, score, {n: p.detach().clone() for n, p in self.params})
            self.since_best = 0
            return False
        self.since_best += 1
        return self.since_best >= ctx.patience

    def restore_best(self) -> None:
        """Put the values of the best evaluation back, unless the end of training is better: the
        last state is evaluated against it first."""
        assert self.best is not None
        ctx = self.ctx
        m = evaluate(self.model, self.tok, ctx.val, ctx.task, ctx.eval_batch_size, ctx.max_length, progress=False)
        if not self.curve or self.curve[-1]["step"] != len(self.losses):
            self.curve.append({"step": len(self.losses), **m})       # the end of the run belongs to the curve
        key = "accuracy" if ctx.task == "classification" else "perplexity"
        score = m[key] if ctx.task == "classification" else -m[key]
        if score >= self.best[1]:
            self.best = (len(self.losses), score, {})
            return
        with torch.no_grad():
            for n, p in self.params:
                p.copy_(self.best[2][n])


def warm_up(ctx: Context, spec: AdapterSpec) -> None:
    """One forward and backward pass of ``spec`` on a training batch, thrown away: torch's one-time
    start-up allocations then fall before the first measured cell instead of inside it."""
    model, tok, _ = build_model(ctx, spec, 0)
    idx = list(range(min(ctx.batch_size, len(ctx.train))))
    model(**make_batch(ctx.task, ctx.train, idx, tok, ctx.max_length, model_device(model)))["loss"].backward()
    del model
    _trim()


def evaluate_test(ctx: Context, spec: AdapterSpec, seed: int, d: Path) -> dict[str, Any]:
    """The test metrics of a finished cell, from its saved adapter (after selection)."""
    model, tok = load_trained(ctx, spec, seed, d)
    t0 = time.perf_counter()
    m = evaluate(model, tok, ctx.test, ctx.task, ctx.eval_batch_size, ctx.max_length, progress=False)
    del model
    return {**m, "eval_seconds": time.perf_counter() - t0}


def evaluate_base(ctx: Context) -> dict[str, Any]:
    """The frozen model without an adapter on the validation and test splits: the reference a causal
    LM's perplexities are read against (a classifier's new head is untrained, so it has none)."""
    loaded = load_model(ctx.model, ctx.task, num_labels=ctx.num_labels, seed=0)
    model = loaded.model.to(ctx.device).eval()
    t0 = time.perf_counter()
    got = {split: evaluate(model, loaded.tokenizer, data, ctx.task, ctx.eval_batch_size, ctx.max_length,
                           progress=False) for split, data in (("val", ctx.val), ("test", ctx.test))}
    del model
    return {**got, "eval_seconds": time.perf_counter() - t0}

