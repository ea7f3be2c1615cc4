"""One cell of a comparison (:mod:`tnpeft.train.comparison`): an adapter spec at one learning
rate and seed, trained with the recipe of :func:`tnpeft.train.fit`, measured, saved, and later
evaluated on the test split.

Adapter specs are ``NAME[:key=value,...]``: a registered method (``lora:r=8``), a builder of your
own (``mypkg.topos:ttlora:r=4``), a graph ``.json`` file, or ``peft_lora[:r=8,alpha=16]`` — peft's own
``LoraConfig`` + ``get_peft_model`` on the same target modules, as a reference row.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tnpeft.adapters import METHODS, check_hparams
from tnpeft.adapters.specs import train_method
from tnpeft.errors import AdapterFileError, ConfigError
from tnpeft.fileio import atomic_write_bytes, read_safetensors, tensors_to_bytes
from tnpeft.nn import AdapterConfig, inject, load_adapter, save_adapter
from tnpeft.nn.model import find_targets
from tnpeft.train.datasets import load_model
from tnpeft.train.evaluation import evaluate, make_batch, model_device
from tnpeft.train.loop import method_hooks

PEFT_LORA = "peft_lora"
PEFT_LORA_HPARAMS = {"r": 8, "alpha": 16, "dropout": 0.0}
_BUILDER = re.compile(r"[A-Za-z_][\w.]*")
_IDENT = re.compile(r"[A-Za-z_]\w*")


@dataclass
class AdapterSpec:
    """A row of a comparison: ``label`` (the spec text), ``name`` (a method, ``module:function``, a
    graph file or ``peft_lora``), its ``hparams`` and what :func:`inject` takes (``method``)."""

    label: str
    name: str
    hparams: dict[str, Any] = field(default_factory=dict)
    method: Any = None

    @property
    def is_peft(self) -> bool:
        return self.name == PEFT_LORA


def _split_items(text: str) -> list[str]:
    """``a=1,b=[2,3]`` → ``["a=1", "b=[2,3]"]`` (commas inside brackets or quotes stay)."""
    items, depth, cur, quote = [], 0, "", False
    for ch in text:
        if ch == '"':
            quote = not quote
        elif not quote and ch in "[{":
            depth += 1
        elif not quote and ch in "]}":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i for i in items if i.strip()]


def parse_adapter_spec(text: Any) -> AdapterSpec:
    """``NAME[:key=value,...]`` as an :class:`AdapterSpec`, checked (unknown adapters and
    hyper-parameters are a :class:`ConfigError` naming the spec)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"adapter spec {text!r}: expected NAME[:key=value,...], e.g. lora:r=8", field="adapters")
    parts = text.split(":")
    if (len(parts) >= 2 and parts[0] not in METHODS and parts[0] != PEFT_LORA and _BUILDER.fullmatch(parts[0])
            and _IDENT.fullmatch(parts[1])):
        name, rest = f"{parts[0]}:{parts[1]}", ":".join(parts[2:])
    else:
        name, rest = parts[0], ":".join(parts[1:])
    hparams: dict[str, Any] = {}
    for item in _split_items(rest):
        k, eq, v = item.partition("=")
        if not eq or not _IDENT.fullmatch(k.strip()):
            raise ConfigError(f"adapter spec {text!r}: hyper-parameter {item!r} must be written key=value "
                              "(e.g. lora:r=8,alpha=16)", field="adapters")
        try:
            hparams[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            hparams[k.strip()] = v
    if name == PEFT_LORA:
        bad = sorted(set(hparams) - set(PEFT_LORA_HPARAMS))
        if bad:
            raise ConfigError(f"adapter spec {text!r}: peft_lora takes {sorted(PEFT_LORA_HPARAMS)}, not {bad}",
                              field="adapters")
        hp = {**PEFT_LORA_HPARAMS, **hparams}
        for key, ok, want in (("r", lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 20,
                               "a positive integer"),
                              ("alpha", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                               and math.isfinite(v) and v > 0, "a positive finite number"),
                              ("dropout", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                               and 0 <= v < 1, "a number in [0, 1)")):
            if not ok(hp[key]):
                raise ConfigError(f"adapter spec {text!r}: peft_lora's {key} is {hp[key]!r}; expected {want}",
                                  field="adapters")
        return AdapterSpec(text, name, hp, PEFT_LORA)
    try:
        method = train_method(name, hparams)
        check_hparams(method, hparams)
    except ConfigError as e:
        raise ConfigError(f"adapter spec {text!r}: {e}", field="adapters") from None
    return AdapterSpec(text, name, hparams, method)


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

    def __exit__(self, *exc) -> None:
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

    def __init__(self, device: str):
        self.device, self.start, self.peak = torch.device(device), None, None

    def __enter__(self) -> PeakCUDA:
        torch.cuda.synchronize(self.device)
        self.start = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device)

    @property
    def above_start(self) -> int | None:
        return None if self.start is None or self.peak is None else self.peak - self.start


def build_model(ctx: Any, spec: AdapterSpec, seed: int) -> tuple[nn.Module, Any, list[str]]:
    """``(model, tokenizer, modules_to_save)``: the frozen model with ``spec``'s adapter, fresh for ``seed``."""
    loaded = load_model(ctx.model, ctx.task, num_labels=ctx.num_labels, seed=seed)
    targets = ctx.target_modules or loaded.target_modules
    excl = ctx.exclude_modules if ctx.exclude_modules is not None else loaded.exclude_modules
    torch.manual_seed(seed)         # the adapter's initial values: a function of the seed
    if spec.is_peft:
        from peft import LoraConfig, get_peft_model

        names = find_targets(loaded.model, AdapterConfig("lora", targets, exclude_modules=excl))
        hp = spec.hparams
        cfg = LoraConfig(r=hp["r"], lora_alpha=hp["alpha"], lora_dropout=hp["dropout"], target_modules=names,
                         modules_to_save=loaded.modules_to_save or None)
        return get_peft_model(loaded.model, cfg).to(ctx.device), loaded.tokenizer, loaded.modules_to_save
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


def load_trained(ctx: Any, spec: AdapterSpec, seed: int, d: Path) -> tuple[nn.Module, Any]:
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


def train_cell(ctx: Any, spec: AdapterSpec, lr: float, seed: int, d: Path, desc: str = "cell") -> dict[str, Any]:
    """Train one cell with :func:`tnpeft.train.fit`'s recipe (AdamW, linear warm-up and decay, the data
    order and random state of every step a function of the seed and step), evaluate it on the
    validation split, save the adapter into ``d`` and return its record (without test metrics)."""
    model, tok, to_save = build_model(ctx, spec, seed)
    adapter_params, head_params = parameter_counts(model, to_save)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=ctx.weight_decay)
    spe = math.ceil(len(ctx.train) / ctx.batch_size)
    total = ctx.steps or ctx.epochs * spe
    hooks = {} if spec.is_peft else method_hooks(model, total)
    for hook in hooks.values():
        hook.attach(opt)
    warm = ctx.warmup_steps
    losses: list[float] = []
    times: list[float] = []
    diverged = None
    model.train()
    bar = tqdm(total=total, desc=desc, leave=False, disable=not ctx.progress, unit="step")
    with (PeakCUDA(ctx.device) if str(ctx.device).startswith("cuda") else PeakRSS()) as mem:
        for step in range(total):
            t0 = time.perf_counter()
            epoch, i = divmod(step, spe)
            order = torch.randperm(len(ctx.train), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
            idx = order[i * ctx.batch_size:(i + 1) * ctx.batch_size].tolist()
            torch.manual_seed(seed * 1_000_003 + step)
            for g in opt.param_groups:
                g["lr"] = lr * (min(1.0, (step + 1) / warm) if warm else 1.0) * max(0.0, 1.0 - step / total)
            loss = model(**make_batch(ctx.task, ctx.train, idx, tok, ctx.max_length, model_device(model)))["loss"]
            if not torch.isfinite(loss):
                diverged = step + 1
                break
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            times.append(time.perf_counter() - t0)
            bar.update()
    bar.close()
    for hook in hooks.values():
        hook.detach()
    record: dict[str, Any] = {
        "adapter": spec.label, "name": spec.name, "hparams": spec.hparams, "lr": lr, "seed": seed, "steps": total,
        "adapter_parameters": adapter_params, "head_parameters": head_params,
        "trainable_parameters": adapter_params + head_params,
        "step_seconds_median": statistics.median(times) if times else None,
        "train_seconds": sum(times), "peak_memory_mb": None if mem.above_start is None else mem.above_start / 2**20,
        "train_loss": losses, "diverged_at_step": diverged, "val": None}
    if diverged is None:
        t0 = time.perf_counter()
        record["val"] = evaluate(model, tok, ctx.val, ctx.task, ctx.eval_batch_size, ctx.max_length,
                                 progress=False)
        record["val_eval_seconds"] = time.perf_counter() - t0
        save_trained(model, spec, d)
    del model, opt
    _trim()
    return record


def warm_up(ctx: Any, spec: AdapterSpec) -> None:
    """One forward and backward pass of ``spec`` on a training batch, thrown away: torch's one-time
    start-up allocations then fall before the first measured cell instead of inside it."""
    model, tok, _ = build_model(ctx, spec, 0)
    idx = list(range(min(ctx.batch_size, len(ctx.train))))
    model(**make_batch(ctx.task, ctx.train, idx, tok, ctx.max_length, model_device(model)))["loss"].backward()
    del model
    _trim()


def evaluate_test(ctx: Any, spec: AdapterSpec, seed: int, d: Path) -> dict[str, Any]:
    """The test metrics of a finished cell, from its saved adapter (after selection)."""
    model, tok = load_trained(ctx, spec, seed, d)
    t0 = time.perf_counter()
    m = evaluate(model, tok, ctx.test, ctx.task, ctx.eval_batch_size, ctx.max_length, progress=False)
    del model
    return {**m, "eval_seconds": time.perf_counter() - t0}
