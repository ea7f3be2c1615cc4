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

import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Sequence, cast

import torch
from tqdm.auto import tqdm

from tnpeft.errors import ConfigError
from tnpeft.fileio import atomic_write_json, ensure_dir
from tnpeft.train.cells import evaluate_base, evaluate_test, train_cell, warm_up
from tnpeft.train.compare_setup import (
    AdapterSpec,
    Context,
    cell_dir,
    check_lrs,
    check_positive,
    config_hash,
    default_lrs,
    learning_rate_grid,
    load_splits,
    lr_centre,
    mean_std,
    parse_adapter_spec,
    parse_lr_grid,
    read_done,
    select_lr,
)
from tnpeft.train.datasets import infer_task
from tnpeft.train.evaluation import resolve_device
from tnpeft.train.loop import TrainingInterrupted
from tnpeft.train.pareto import plot_compare_curves, plot_pareto
from tnpeft.train.train_config import MAX_SEED

PROTOCOLS = ("grid", "tune-then-seeds")
__all__ = ["compare", "summarize", "PROTOCOLS", "default_lrs", "lr_centre", "parse_lr_grid", "select_lr",
           "check_lrs", "Context"]


def compare(adapters: list[str], *, model: str = "minilm", data: str = "tweets", lrs: list[float] | None = None,
            lr_grid: dict[str, list[float]] | None = None, lr_centres: dict[str, float] | None = None,
            seeds: Sequence[int] = (0, 1, 2), steps: int | None = None, epochs: int | None = None,
            train_size: int | None = 2000, val_size: int = 500, test_size: int = 500,
            batch_size: int = 32, max_length: int = 48, protocol: str = "grid", out: str | Path = "runs/compare",
            task: str | None = None, target_modules: Any = None, exclude_modules: list[str] | None = None,
            text_column: str = "text", label_column: str = "label", warmup_steps: int = 20,
            warmup_fraction: float = 0.1, eval_every: int = 0, patience: int = 0, progress: bool = True,
            device: str | None = None) -> dict[str, Any]:
    """Compare ``adapters`` (spec texts, see :func:`tnpeft.train.compare_setup.parse_adapter_spec`) on
    ``data`` with ``model``; write ``results.json``, ``pareto.png`` and ``curves.png`` into ``out``
    and return the results. Rerunning with the same arguments resumes (finished cells are skipped).

    Without ``lrs`` or an ``lr_grid`` entry an adapter's grid is centred on ``lr_centres[method]``,
    else on the method's registered learning rate (:func:`tnpeft.train.compare_setup.lr_centre`).
    Every cell warms up linearly over ``warmup_steps``, at most ``warmup_fraction`` of its run. With
    ``eval_every`` each cell records a validation curve; with ``patience`` as well it stops once that
    many evaluations in a row brought no improvement and keeps its best values (the same patience
    for every row).
    ``result["notes"]`` says where the data fell short of the sizes asked for, which adapters chose
    a rate at the edge of their grid, and whether one seed makes the spread a binomial error;
    ``tnpeft.cli.tables.compare_table(result)`` lays the result out as the command line's table."""
    specs, seeds = _check_arguments(adapters, protocol, seeds, steps, epochs, train_size, val_size, test_size,
                                    batch_size, max_length)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ConfigError(f"--warmup-steps must be a non-negative integer, got {warmup_steps!r}", field="warmup_steps")
    if isinstance(warmup_fraction, bool) or not isinstance(warmup_fraction, (int, float)) or \
            not 0 < warmup_fraction <= 1:
        raise ConfigError(f"--warmup-fraction must be in (0, 1], got {warmup_fraction!r}", field="warmup_fraction")
    for name, v in (("eval_every", eval_every), ("patience", patience)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a non-negative integer, got {v!r}", field=name)
    if patience and not eval_every:
        raise ConfigError("--patience needs --eval-every: early stopping watches the validation curve",
                          field="patience")
    dev = resolve_device(device)
    grid = learning_rate_grid(specs, lrs, lr_grid, lr_centres)
    out = ensure_dir(out, "--out folder")
    task = task or infer_task(data)
    t_all = time.perf_counter()
    train, val, test, num_labels = load_splits(data, task, model, train_size, val_size, test_size, max_length,
                                               text_column, label_column)
    fp = {"model": model, "data": str(data), "task": task, "train_size": len(train), "val_size": val_size,
          "test_size": test_size, "steps": steps, "epochs": epochs, "batch_size": batch_size,
          "max_length": max_length, "target_modules": target_modules, "exclude_modules": exclude_modules,
          "text_column": text_column, "label_column": label_column, "warmup_steps": warmup_steps,
          "warmup_fraction": warmup_fraction, "eval_every": eval_every, "patience": patience}
    ctx = Context(model, task, train, val, test, num_labels, steps, epochs or 1, batch_size, max_length,
                  target_modules, exclude_modules, warmup_steps, warmup_fraction, eval_every, patience,
                  progress=progress, fingerprint=fp)
    ctx.device = str(dev)
    runner = _Cells(ctx, specs, grid, seeds, protocol, out)
    runner.run()
    notes = [] if train_size is None or len(train) >= train_size else [
        f"--train-size {train_size:,}: the data holds {len(train):,} training rows after the {val_size + test_size:,} "
        "held out (rows with an empty text or label are skipped); every cell trained on those"]
    return _results(runner, model, data, t_all, notes)


def _check_arguments(adapters: list[str], protocol: str, seeds: Any, steps: Any, epochs: Any, train_size: Any,
                     val_size: Any, test_size: Any, batch_size: Any, max_length: Any) -> tuple[list[AdapterSpec],
                                                                                              list[int]]:
    """The specs and seeds, every argument checked before anything is loaded."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}", field="protocol")
    if not adapters:
        raise ConfigError("--adapters: give at least one adapter spec, e.g. lora:r=8", field="adapters")
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
        check_positive(name, v, opt)
    return specs, seeds


class _Cells:
    """The training cells of a comparison: each trained once (or read back from its ``cell.json``),
    the learning rate selected on validation, then the test split of the selected cells."""

    def __init__(self, ctx: Context, specs: list[AdapterSpec], grid: dict[str, list[float]], seeds: list[int],
                 protocol: str, out: Path):
        self.ctx, self.specs, self.grid, self.seeds, self.protocol, self.out = ctx, specs, grid, seeds, protocol, out
        self.maximize = ctx.task == "classification"
        self.key = "accuracy" if self.maximize else "perplexity"
        self.metrics = ("accuracy", "macro_f1") if self.maximize else ("perplexity", "loss")
        self.first = {s.label: [(lr, sd) for lr in grid[s.label] for sd in (seeds if protocol == "grid" else seeds[:1])]
                      for s in specs}
        self.n_cells = sum(len(v) for v in self.first.values()) + (
            len(specs) * (len(seeds) - 1) if protocol != "grid" else 0)
        self.cells: dict[tuple[str, float, int], dict[str, Any]] = {}
        self.selection: dict[str, dict[str, Any]] = {}
        self.done = 0
        self.warm = False
        self.retrained: list[str] = []
        self.bar: Any = None

    def run(self) -> None:
        self.bar = tqdm(total=self.n_cells + len(self.specs) * len(self.seeds), desc="compare", unit="cell",
                        disable=not self.ctx.progress)
        try:
            for spec in self.specs:
                self._tune(spec)
                # the test split: only the selected rate's cells, once the selection is made — so a long
                # comparison finishes its rows one by one, each row's records complete
                self._test(spec)
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"interrupted after {self.done} of {self.n_cells} cells; finished cells are "
                                      f"saved in {self.out} — run the same command again to resume",
                                      self.done) from None
        finally:    # whatever stops the run, the bar ends its line before an error is printed under it
            self.bar.close()

    def base_model(self) -> dict[str, Any] | None:
        """A causal LM's validation and test figures without an adapter (``base.json``, kept like a
        cell's records); ``None`` for a classifier, whose new head is untrained."""
        if self.maximize:
            return None
        h, path = config_hash({**self.ctx.fingerprint, "adapter": None}), self.out / "base.json"
        got = read_done(path, h, self.metrics, base=True)
        if got is None:
            got = {"config_hash": h, **evaluate_base(self.ctx)}
            atomic_write_json(path, got)
        return {k: got[k] for k in ("val", "test")}

    def _cell(self, spec: AdapterSpec, lr: float, seed: int) -> None:
        d = cell_dir(self.out, spec, lr, seed)
        fp = self.ctx.fingerprint
        h = config_hash({**fp, "adapter": spec.label, "hparams": spec.hparams, "lr": lr, "seed": seed})
        rec = read_done(d / "cell.json", h, self.metrics)
        if rec is None:
            self.bar.set_postfix_str(f"{spec.label} lr={lr:g} seed={seed}")
            if not self.warm:
                warm_up(self.ctx, spec)
                self.warm = True
            rec = train_cell(self.ctx, spec, lr, seed, d, desc=f"{spec.label} lr={lr:g} s{seed}")
            rec.update(config_hash=h, config={**fp, "lr": lr, "seed": seed})
            atomic_write_json(d / "cell.json", rec)
        rec["dir"] = str(d)
        self.cells[(spec.label, lr, seed)] = rec
        self.done += 1
        self.bar.update()

    def _tune(self, spec: AdapterSpec) -> None:
        for lr, seed in self.first[spec.label]:
            self._cell(spec, lr, seed)
        self.selection[spec.label] = self._choose(spec)
        if self.protocol != "grid" and self.selection[spec.label]["lr"] is not None:
            for seed in self.seeds[1:]:
                self._cell(spec, self.selection[spec.label]["lr"], seed)
        elif self.protocol != "grid":
            self.bar.update(len(self.seeds) - 1)

    def _choose(self, spec: AdapterSpec) -> dict[str, Any]:
        by_lr: dict[float, list[float | None]] = {}
        for (label, lr, _), rec in self.cells.items():
            if label == spec.label:
                by_lr.setdefault(lr, []).append(rec["val"][self.key] if rec["val"] else None)
        chosen = select_lr(by_lr, self.maximize)
        rates = sorted(by_lr)
        edge = None if chosen is None or len(rates) < 2 else "lowest" if chosen == rates[0] else \
            "highest" if chosen == rates[-1] else None
        return {"lr": chosen, "metric": f"val_{self.key}", "maximize": self.maximize, "edge": edge,
                "by_lr": {f"{r:g}": {"val_mean": (statistics.fmean(cast(list[float], v)) if all(x is not None for x in v) else None),
                                     "seeds": len(v)} for r, v in sorted(by_lr.items())}}

    def _test(self, spec: AdapterSpec) -> None:
        lr = self.selection[spec.label]["lr"]
        for seed in self.seeds:
            rec = self.cells.get((spec.label, lr, seed)) if lr is not None else None
            if rec is not None and rec["val"] is not None:
                d = Path(rec["dir"])
                got = read_done(d / "test.json", rec["config_hash"], self.metrics)
                if got is None:
                    retrained = None if has_weights(spec, d) else self._retrain(spec, lr, seed, d, rec)
                    self.bar.set_postfix_str(f"test {spec.label} seed={seed}")
                    got = {"config_hash": rec["config_hash"], "test": evaluate_test(self.ctx, spec, seed, d)}
                    if retrained is not None:
                        got["retrained_val"] = retrained
                    atomic_write_json(d / "test.json", got)
                rec["test"] = got["test"]
            self.bar.update()

    def _retrain(self, spec: AdapterSpec, lr: float, seed: int, d: Path, rec: dict[str, Any]) -> dict[str, Any]:
        """A selected cell whose adapter is gone (its records were kept without weights) is trained
        again — its data order and random state are functions of its seed — and its new validation
        figures are returned beside the recorded ones (``retrained_val`` in ``test.json``)."""
        self.bar.set_postfix_str(f"{spec.label} lr={lr:g} seed={seed} (retrained: no saved adapter)")
        again = train_cell(self.ctx, spec, lr, seed, d, desc=f"{spec.label} lr={lr:g} s{seed} again")
        if again["val"] is None:
            raise ConfigError(f"{d}: its adapter was not kept and training it again diverged at step "
                              f"{again['diverged_at_step']} (the record has validation {rec['val']}); "
                              "delete its cell.json to redo the cell", field="out")
        if again["val"] != rec["val"]:
            self.retrained.append(f"{spec.label} lr={lr:g} seed={seed}: retrained (its adapter was not kept); "
                                  f"validation {again['val']} against the recorded {rec['val']}")
        return {"val": again["val"], "recorded_val": rec["val"]}


def has_weights(spec: AdapterSpec, d: Path) -> bool:
    """Whether a finished cell's trained adapter is still in its folder."""
    return (d / "peft_trainable.safetensors").is_file() if spec.is_peft else (d / "adapter").is_dir()


def _results(runner: _Cells, model: str, data: str, t_all: float, notes: list[str]) -> dict[str, Any]:
    """The summary, the notes, the machine, the plots and ``results.json``."""
    ctx, out, key, seeds = runner.ctx, runner.out, runner.key, runner.seeds
    result = summarize(runner.specs, runner.cells, runner.selection, seeds, key, runner.maximize, len(ctx.test))
    result["base_model"] = runner.base_model()
    for r in result["summary"]:
        if r["lr_at_edge"]:
            notes.append(f"{r['adapter']}: the selected rate {r['lr']:g} is the {r['lr_at_edge']} of its grid "
                         f"{[float(f'{v:g}') for v in runner.grid[r['adapter']]]} — the best rate may lie beyond it; "
                         "widen the grid (--lr-grid)")
    if len(seeds) == 1:
        notes.append("one seed: there is no spread over seeds; " + (
            f"the ± of the accuracy is the test set's binomial standard error (n = {len(ctx.test):,}), which says "
            "nothing of seed-to-seed variation" if runner.maximize else
            "a perplexity has no binomial error, so each figure is one run's, without an error bar"))
    result["notes"] = notes + runner.retrained
    result.update(protocol=runner.protocol, protocol_cells=runner.n_cells, config=ctx.fingerprint,
                  lr_grid=runner.grid, seeds=seeds,
                  machine={"cpu_count": os.cpu_count(), "torch": torch.__version__, "device": ctx.device,
                           "platform": platform.platform(), "python": platform.python_version(),
                           "torch_threads": torch.get_num_threads()},
                  memory="peak resident memory (sampled every 10 ms) above the cell's starting RSS, after freed "
                         "memory is returned to the system; the frozen model is loaded before the start",
                  wall_seconds=time.perf_counter() - t_all, out=str(out))
    result["pareto_plot"] = str(out / "pareto.png")
    result["curves_plot"] = str(out / "curves.png")
    spread = f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else \
        (f"one seed: bars are the binomial standard error over {len(ctx.test):,} test examples" if runner.maximize
         else "one seed: no error bars")
    base = result["base_model"]
    plot_pareto(result["summary"], out / "pareto.png", key, runner.maximize,
                reference=None if base is None else ("the model without an adapter", base["test"][key]), title=f"{Path(model).name} on "
                f"{Path(str(data)).name}: test {key} vs adapter parameters\n({spread}, "
                f"learning rate chosen on validation, protocol {runner.protocol})")
    plot_compare_curves(result["summary"], runner.cells, out / "curves.png")
    atomic_write_json(out / "results.json", result)
    return result


def summarize(specs: list[AdapterSpec], cells: dict[tuple[str, float, int], dict[str, Any]],
              selection: dict[str, dict[str, Any]], seeds: list[int], key: str, maximize: bool,
              n_test: int | None = None) -> dict[str, Any]:
    """Every cell (test metrics only on the selected ones), the selection, and per adapter the mean ±
    std over seeds of the test metrics at the selected rate — and, for accuracies, the test set's
    binomial standard error ``√(p(1−p)/n)`` (the only spread one seed has)."""
    rows = []
    for spec in specs:
        lr = selection[spec.label]["lr"]
        sel = [cells[(spec.label, lr, s)] for s in seeds if (spec.label, lr, s) in cells] if lr is not None else []
        any_cell = next(r for (lab, _, _), r in cells.items() if lab == spec.label)
        tested = [r["test"] for r in sel if r.get("test")]
        row: dict[str, Any] = {"adapter": spec.label, "name": spec.name, "hparams": spec.hparams, "lr": lr,
                               "lr_at_edge": selection[spec.label].get("edge"),
                               "seeds": len(tested), "adapter_parameters": any_cell["adapter_parameters"],
                               "head_parameters": any_cell["head_parameters"],
                               "diverged_seeds": sum(r["val"] is None for r in sel)}
        metrics = ("accuracy", "macro_f1") if maximize else ("perplexity", "loss")
        for m in metrics:
            row[f"test_{m}_mean"], row[f"test_{m}_std"] = mean_std([t[m] for t in tested])
            row[f"val_{m}_mean"], _ = mean_std([r["val"][m] for r in sel if r["val"]])
        if maximize:
            p = row["test_accuracy_mean"]
            row["test_accuracy_se"] = None if p is None or not n_test else math.sqrt(p * (1 - p) / n_test)
        if row["seeds"] == 1:
            for m in metrics:
                row[f"test_{m}_std"] = None             # one seed has no spread over seeds (not "± 0")
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
