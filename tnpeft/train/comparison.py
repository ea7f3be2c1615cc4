"""``tnpeft compare``: adapters × a learning-rate grid × seeds under one training budget, the
learning rate of each adapter chosen on a validation split, the figures reported on a separate
test split.

Protocols (A adapters, L learning rates, S seeds):

* ``grid`` — every learning rate with every seed: A·L·S training cells; the learning rate of the
  best validation mean over the seeds is selected.
* ``tune-then-seeds`` — the grid on the first seed only, selected on validation, then the other
  seeds at the selected rate: A·(L + S − 1) cells.

The test split is evaluated only for the selected learning rate (every seed of it), from the
adapters saved by the cells — so nothing is ever selected on the test set. Every cell writes
``cell.json`` (config hash, validation metrics, timings, losses) when it is done and
``test.json`` once tested; a rerun skips both, a half-finished cell starts over.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tnpeft.errors import ConfigError
from tnpeft.fileio import atomic_write_json, ensure_dir, read_json
from tnpeft.train.cells import AdapterSpec, evaluate_test, parse_adapter_spec, train_cell, warm_up
from tnpeft.train.datasets import ClassificationData, LMData, infer_task, load_classification, load_lm, load_model
from tnpeft.train.evaluation import resolve_device
from tnpeft.train.loop import TrainingInterrupted
from tnpeft.train.pareto import format_table, plot_compare_curves, plot_pareto
from tnpeft.train.train_config import MAX_LR, MAX_SEED

PROTOCOLS = ("grid", "tune-then-seeds")
#: the centre of the default learning-rate grid of a method ``lr_centres`` does not name
DEFAULT_LR = 2e-3


def default_lrs(spec: AdapterSpec, centres: dict[str, float] | None = None) -> list[float]:
    """The default grid of a spec: its method's centre (``centres[name]``, else :data:`DEFAULT_LR`)
    ÷ 3, × 1, × 3 (two significant digits)."""
    c = (centres or {}).get(spec.name, DEFAULT_LR)
    return [float(f"{c / 3:.2g}"), c, float(f"{c * 3:.2g}")]


def _check_lrs(lrs: Any, where: str) -> list[float]:
    if not isinstance(lrs, (list, tuple)) or not lrs:
        raise ConfigError(f"{where}: the learning-rate grid is empty; give at least one rate, e.g. 1e-3",
                          field="lrs")
    for v in lrs:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= MAX_LR:
            raise ConfigError(f"{where}: learning rate {v!r} must be a positive finite number up to {MAX_LR:g}",
                              field="lrs")
    return sorted({float(v) for v in lrs})


def parse_lr_grid(items: list[str]) -> dict[str, list[float]]:
    """``["quantum_peft=1e-3,3e-3", "lora:r=1=1e-3"]`` → ``{key: rates}`` (the key: an adapter's
    spec text or its method name; the rates follow the last ``=``)."""
    out: dict[str, list[float]] = {}
    for item in items:
        key, eq, vals = item.rpartition("=")
        try:
            rates = [float(v) for v in vals.split(",") if v.strip()]
        except ValueError:
            rates = None
        if not eq or not key or rates is None:
            raise ConfigError(f"--lr-grid {item!r}: expected ADAPTER=LR,LR,... (e.g. quantum_peft=1e-3,3e-3)",
                              field="lr_grid")
        out[key] = _check_lrs(rates, f"--lr-grid {item!r}")
    return out


@dataclass
class Context:
    """What every cell shares: the model, the splits, the budget (read by :mod:`tnpeft.train.cells`)."""

    model: str
    task: str
    train: Any
    val: Any
    test: Any
    num_labels: int
    steps: int | None
    epochs: int
    batch_size: int
    max_length: int
    target_modules: Any = None
    exclude_modules: list[str] | None = None
    warmup_steps: int = 20
    weight_decay: float = 0.0
    eval_batch_size: int = 128
    progress: bool = True
    device: str = "cpu"
    fingerprint: dict[str, Any] = field(default_factory=dict)


def select_lr(val_by_lr: dict[float, list[float | None]], maximize: bool) -> float | None:
    """The learning rate of the best validation mean (a rate with a diverged seed, ``None``, is not
    selectable); ties go to the smaller rate. ``None`` when every rate diverged."""
    ok = {lr: statistics.fmean(v) for lr, v in val_by_lr.items() if v and all(x is not None for x in v)}
    if not ok:
        return None
    return min(ok, key=lambda lr: ((-ok[lr] if maximize else ok[lr]), lr))


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value; None for none)."""
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _load_splits(data: str, task: str, model: str, train_size: int | None, val_size: int, test_size: int,
                 max_length: int, text_column: str, label_column: str) -> tuple[Any, Any, Any, int]:
    """Train / validation / test, disjoint and the same for every cell: the held-out rows of a fixed
    shuffle (or the last blocks of a text) are cut into validation then test."""
    held = val_size + test_size
    if task == "classification":
        tr, ho = load_classification(data, text_column=text_column, label_column=label_column,
                                     train_size=train_size, test_size=held, seed=0)
        if len(ho) < held:
            raise ConfigError(f"{data}: {len(ho)} held-out rows, fewer than --val-size + --test-size = {held}",
                              field="test_size")
        cut = lambda a, b: ClassificationData(ho.texts[a:b], ho.labels[a:b], ho.label_names)  # noqa: E731
        return tr, cut(0, val_size), cut(val_size, held), len(tr.label_names)
    tok = load_model(model, task).tokenizer
    tr, ho = load_lm(data, tok, block=max_length, text_column=text_column, train_size=train_size, test_size=held)
    if len(ho) < held or len(tr) == 0:
        raise ConfigError(f"{data}: the text makes {len(tr) + len(ho)} blocks of {max_length} tokens, too few for "
                          f"--val-size + --test-size = {held} held-out blocks and a training set", field="test_size")
    return tr, LMData(ho.blocks[:val_size]), LMData(ho.blocks[val_size:held]), 0


def _pos_int(name: str, v: Any, allow_none: bool = False) -> None:
    if allow_none and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}", field=name)


def _cell_dir(out: Path, spec: AdapterSpec, lr: float, seed: int) -> Path:
    slug = re.sub(r"[^\w.=,+-]+", "_", spec.label)[:60]
    tag = hashlib.sha256(spec.label.encode()).hexdigest()[:6]
    return out / "cells" / f"{slug}-{tag}" / f"lr={lr:g}" / f"seed={seed}"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_done(path: Path, want: str, metrics: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A finished cell's record (``cell.json``, or ``test.json`` with its ``test`` metrics), or
    ``None``; every field the comparison reads is checked (a :class:`ConfigError` names the field)."""
    if not path.exists():
        return None
    rec = read_json(path, "comparison cell", error=lambda m: ConfigError(m, field="out"))
    if not isinstance(rec, dict) or rec.get("config_hash") != want:
        raise ConfigError(f"{path} belongs to a comparison with other settings (model, data, split, budget or "
                          "adapter); use another --out or delete that folder", field="out")
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    scores = lambda v, more=(): isinstance(v, dict) and all(num(v.get(m)) for m in (*metrics, *more))  # noqa: E731
    fields = {"test": (lambda v: scores(v, ("eval_seconds",)), f"an object of numbers {[*metrics, 'eval_seconds']}")} \
        if path.name == "test.json" else {
        "val": (lambda v: v is None or scores(v), f"null or an object of numbers {list(metrics)}"),
        "adapter_parameters": (lambda v: num(v) and v >= 0 and int(v) == v, "a non-negative integer"),
        "head_parameters": (lambda v: num(v) and v >= 0 and int(v) == v, "a non-negative integer"),
        "step_seconds_median": (lambda v: v is None or num(v), "null or a number"),
        "peak_memory_mb": (lambda v: v is None or num(v), "null or a number"),
        "train_loss": (lambda v: isinstance(v, list) and all(num(x) for x in v), "a list of numbers")}
    for name, (ok, want_text) in fields.items():
        if name not in rec or not ok(rec[name]):
            raise ConfigError(f"{path}: field {name!r} is {rec.get(name, '(missing)')!r}; expected {want_text} — the "
                              "file was edited or is corrupt: delete it and run the same command to redo the cell",
                              field="out")
    return rec


def compare(adapters: list[str], *, model: str = "minilm", data: str = "tweets", lrs: list[float] | None = None,
            lr_grid: dict[str, list[float]] | None = None, lr_centres: dict[str, float] | None = None, seeds: list[int] = (0, 1, 2), steps: int | None = None,
            epochs: int | None = None, train_size: int | None = None, val_size: int = 2000, test_size: int = 2000,
            batch_size: int = 32, max_length: int = 48, protocol: str = "grid", out: str | Path = "runs/compare",
            task: str | None = None, target_modules: Any = None, exclude_modules: list[str] | None = None,
            text_column: str = "text", label_column: str = "label", warmup_steps: int = 20,
            progress: bool = True, quiet: bool = False, device: str | None = None) -> dict[str, Any]:
    """Compare ``adapters`` (spec texts, see :func:`tnpeft.train.cells.parse_adapter_spec`) on
    ``data`` with ``model``; write ``results.json``, ``pareto.png`` and ``curves.png`` into ``out``
    and return the results. Rerunning with the same arguments resumes (finished cells are skipped).

    Without ``lrs`` or an ``lr_grid`` entry an adapter's grid is centred on ``lr_centres[method]``
    (``tnpeft compare`` passes the demo's rates, :data:`tnpeft.demo.DEMO_LR_CENTRES`)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}", field="protocol")
    if not adapters:
        raise ConfigError("--adapters: give at least one adapter spec, e.g. lora:r=8", field="adapters")
    dev = resolve_device(device)
    specs = [parse_adapter_spec(a) for a in adapters]
    dup = sorted({s.label for s in specs if [t.label for t in specs].count(s.label) > 1})
    if dup:
        raise ConfigError(f"--adapters names {dup} twice", field="adapters")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in seeds) or \
            len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {seeds!r}: expected distinct integers from 0 to {MAX_SEED:,}", field="seeds")
    if (steps is None) == (epochs is None):
        raise ConfigError("give one training budget for every cell: --steps N or --epochs E", field="steps")
    for name, v, opt in (("steps", steps, True), ("epochs", epochs, True), ("train_size", train_size, True),
                         ("val_size", val_size, False), ("test_size", test_size, False),
                         ("batch_size", batch_size, False), ("max_length", max_length, False)):
        _pos_int(name, v, opt)
    grid = {s.label: default_lrs(s, lr_centres) for s in specs}
    if lrs is not None:
        lrs = _check_lrs(lrs, "--lrs")
        grid = {k: list(lrs) for k in grid}
    for key, rates in (lr_grid or {}).items():
        hit = [s for s in specs if key in (s.label, s.name)]
        if not hit:
            raise ConfigError(f"--lr-grid {key!r} names no adapter of --adapters ({', '.join(grid)})", field="lr_grid")
        for s in hit:
            if key == s.label or not any(k == s.label for k in lr_grid or {}):
                grid[s.label] = _check_lrs(rates, f"--lr-grid {key!r}")
    out = ensure_dir(out, "--out folder")
    task = task or infer_task(data)
    t_all = time.perf_counter()
    train, val, test, num_labels = _load_splits(data, task, model, train_size, val_size, test_size, max_length,
                                                text_column, label_column)
    fp = {"model": model, "data": str(data), "task": task, "train_size": len(train), "val_size": val_size,
          "test_size": test_size, "steps": steps, "epochs": epochs, "batch_size": batch_size,
          "max_length": max_length, "target_modules": target_modules, "exclude_modules": exclude_modules,
          "text_column": text_column, "label_column": label_column, "warmup_steps": warmup_steps}
    ctx = Context(model, task, train, val, test, num_labels, steps, epochs or 1, batch_size, max_length,
                  target_modules, exclude_modules, warmup_steps, progress=progress, fingerprint=fp)
    ctx.device = str(dev)
    maximize = task == "classification"
    key = "accuracy" if maximize else "perplexity"
    metrics = ("accuracy", "macro_f1") if maximize else ("perplexity", "loss")
    first = {s.label: [(lr, sd) for lr in grid[s.label] for sd in (seeds if protocol == "grid" else seeds[:1])]
             for s in specs}
    n_cells = sum(len(v) for v in first.values()) + (len(specs) * (len(seeds) - 1) if protocol != "grid" else 0)
    bar = tqdm(total=n_cells + len(specs) * len(seeds), desc="compare", unit="cell", disable=not progress)
    cells: dict[tuple[str, float, int], dict[str, Any]] = {}
    done = 0
    warm = [False]

    def run(spec: AdapterSpec, lr: float, seed: int) -> None:
        nonlocal done
        d = _cell_dir(out, spec, lr, seed)
        h = _hash({**fp, "adapter": spec.label, "hparams": spec.hparams, "lr": lr, "seed": seed})
        rec = _read_done(d / "cell.json", h, metrics)
        if rec is None:
            bar.set_postfix_str(f"{spec.label} lr={lr:g} seed={seed}")
            if not warm[0]:
                warm_up(ctx, spec)
                warm[0] = True
            rec = train_cell(ctx, spec, lr, seed, d, desc=f"{spec.label} lr={lr:g} s{seed}")
            rec.update(config_hash=h, config={**fp, "lr": lr, "seed": seed})
            atomic_write_json(d / "cell.json", rec)
        rec["dir"] = str(d)
        cells[(spec.label, lr, seed)] = rec
        done += 1
        bar.update()

    def choose(spec: AdapterSpec) -> dict[str, Any]:
        by_lr: dict[float, list[float | None]] = {}
        for (label, lr, _), rec in cells.items():
            if label == spec.label:
                by_lr.setdefault(lr, []).append(rec["val"][key] if rec["val"] else None)
        lr = select_lr(by_lr, maximize)
        return {"lr": lr, "metric": f"val_{key}", "maximize": maximize,
                "by_lr": {f"{r:g}": {"val_mean": (statistics.fmean(v) if all(x is not None for x in v) else None),
                                     "seeds": len(v)} for r, v in sorted(by_lr.items())}}

    selection: dict[str, dict[str, Any]] = {}
    try:
        for spec in specs:
            for lr, seed in first[spec.label]:
                run(spec, lr, seed)
            selection[spec.label] = choose(spec)
            if protocol != "grid" and selection[spec.label]["lr"] is not None:
                for seed in seeds[1:]:
                    run(spec, selection[spec.label]["lr"], seed)
            elif protocol != "grid":
                bar.update(len(seeds) - 1)
        for spec in specs:   # the test split: only the selected rate's cells, after every selection
            lr = selection[spec.label]["lr"]
            for seed in seeds:
                rec = cells.get((spec.label, lr, seed)) if lr is not None else None
                if rec is not None and rec["val"] is not None:
                    d = Path(rec["dir"])
                    got = _read_done(d / "test.json", rec["config_hash"], metrics)
                    if got is None:
                        bar.set_postfix_str(f"test {spec.label} seed={seed}")
                        got = {"config_hash": rec["config_hash"], "test": evaluate_test(ctx, spec, seed, d)}
                        atomic_write_json(d / "test.json", got)
                    rec["test"] = got["test"]
                bar.update()
    except KeyboardInterrupt:
        bar.close()
        raise TrainingInterrupted(f"interrupted after {done} of {n_cells} cells; finished cells are saved in {out} — "
                                  "run the same command again to resume", done) from None
    bar.close()
    result = summarize(specs, cells, selection, seeds, key, maximize)
    result.update(protocol=protocol, protocol_cells=n_cells, config=fp, lr_grid=grid, seeds=seeds,
                  machine={"cpu_count": os.cpu_count(), "torch": torch.__version__, "device": ctx.device,
                           "platform": platform.platform(), "python": platform.python_version(),
                           "torch_threads": torch.get_num_threads()},
                  memory="peak resident memory (sampled every 10 ms) above the cell's starting RSS, after freed "
                         "memory is returned to the system; the frozen model is loaded before the start",
                  wall_seconds=time.perf_counter() - t_all, out=str(out))
    result["pareto_plot"] = str(out / "pareto.png")
    result["curves_plot"] = str(out / "curves.png")
    plot_pareto(result["summary"], out / "pareto.png", key, maximize, title=f"{Path(model).name} on "
                f"{Path(str(data)).name}: test {key} vs adapter parameters\n(mean ± std over {len(seeds)} seed(s), "
                f"learning rate chosen on validation, protocol {protocol})")
    plot_compare_curves(result["summary"], cells, out / "curves.png")
    atomic_write_json(out / "results.json", result)
    if not quiet:
        print(format_table(result))
    return result


def summarize(specs: list[AdapterSpec], cells: dict[tuple[str, float, int], dict[str, Any]],
              selection: dict[str, dict[str, Any]], seeds: list[int], key: str, maximize: bool) -> dict[str, Any]:
    """Every cell (test metrics only on the selected ones), the selection, and per adapter the mean ±
    std over seeds of the test metrics at the selected rate."""
    rows = []
    for spec in specs:
        lr = selection[spec.label]["lr"]
        sel = [cells[(spec.label, lr, s)] for s in seeds if (spec.label, lr, s) in cells] if lr is not None else []
        any_cell = next(r for (lab, _, _), r in cells.items() if lab == spec.label)
        tested = [r["test"] for r in sel if r.get("test")]
        row: dict[str, Any] = {"adapter": spec.label, "name": spec.name, "hparams": spec.hparams, "lr": lr,
                               "seeds": len(tested), "adapter_parameters": any_cell["adapter_parameters"],
                               "head_parameters": any_cell["head_parameters"],
                               "diverged_seeds": sum(r["val"] is None for r in sel)}
        metrics = ("accuracy", "macro_f1") if maximize else ("perplexity", "loss")
        for m in metrics:
            row[f"test_{m}_mean"], row[f"test_{m}_std"] = mean_std([t[m] for t in tested])
            row[f"val_{m}_mean"], _ = mean_std([r["val"][m] for r in sel if r["val"]])
        steps = [r["step_seconds_median"] for r in sel if r["step_seconds_median"] is not None]
        mem = [r["peak_memory_mb"] for r in sel if r["peak_memory_mb"] is not None]
        row["step_seconds"] = statistics.median(steps) if steps else None
        row["peak_memory_mb"] = max(mem) if mem else None
        row["test_eval_seconds"] = statistics.fmean([t["eval_seconds"] for t in tested]) if tested else None
        rows.append(row)
    ref = next((r for r in rows if r["name"] == "lora" and r["hparams"].get("r") == 8), None)
    for r in rows:
        r["params_vs_lora_r8"] = r["adapter_parameters"] / ref["adapter_parameters"] if ref else None
    listed = []
    for (label, lr, _), rec in sorted(cells.items(), key=lambda kv: kv[0]):
        c = {k: v for k, v in rec.items() if k not in ("train_loss", "config")}
        c["selected"] = lr == selection[label]["lr"]
        listed.append(c)
    return {"version": 1, "metric": key, "maximize": maximize, "cells": listed, "selection": selection,
            "summary": rows}
