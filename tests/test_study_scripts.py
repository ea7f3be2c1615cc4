"""The study's helper scripts (benchmarks/study): keeping a run's records and the loss table."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "study" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cell(run: Path, losses: list[float], curve: list[dict], val: dict, stopped: int | None = None) -> Path:
    d = run / "cells" / "lora_r=2-abc123" / "lr=0.002" / "seed=0"
    d.mkdir(parents=True)
    rec = {"adapter": "lora:r=2", "lr": 0.002, "train_loss": losses, "val_curve": curve, "val": val,
           "stopped_early_at": stopped, "config": {"task": "causal_lm"}}
    (d / "cell.json").write_text(json.dumps(rec))
    return d


def test_keep_records_copies_the_json_records_and_never_the_weights(tmp_path):
    keep = _script("keep_records").keep
    run = tmp_path / "run"
    d = _cell(run, [1.0], [], {"perplexity": 3.0})
    (d / "test.json").write_text("{}")
    (d / "adapter").mkdir()
    (d / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    for name in ("results.json", "base.json"):
        (run / name).write_text("{}")
    (run / "pareto.png").write_bytes(b"png")
    kept = keep(run, tmp_path / "kept")
    got = sorted(str(p.relative_to(tmp_path / "kept")) for p in kept)
    assert got == sorted(["base.json", "results.json", str(d.relative_to(run) / "cell.json"),
                          str(d.relative_to(run) / "test.json")])


def test_the_loss_table_averages_each_stretch_between_validations(tmp_path):
    rows = _script("loss_table").rows
    losses = [float(i) for i in range(10)]
    curve = [{"step": 4, "perplexity": 9.0}, {"step": 8, "perplexity": 8.0}]
    _cell(tmp_path, losses, curve, {"perplexity": 7.5})
    ((adapter, lr, stretch),) = rows(tmp_path)
    assert (adapter, lr) == ("lora:r=2", 0.002)
    # steps 1–4, 5–8, then the end of the run (9–10) with the final validation
    assert stretch == [(4, statistics.fmean(losses[:4]), 9.0), (8, statistics.fmean(losses[4:8]), 8.0),
                       (10, statistics.fmean(losses[8:]), 7.5)]


def test_the_plot_range_leaves_out_a_cell_that_blew_up_and_only_that():
    axis_range = _script("loss_table").axis_range
    steady = [4.0 + 0.01 * i for i in range(100)]
    assert axis_range(steady) is None                                  # nothing to leave out
    assert axis_range(steady + [7.0]) is None                          # a warm-up start is kept (< 2 × median)
    lo, hi = axis_range(steady + [68.0, 5e21, float("nan")])
    assert lo < min(steady) and max(steady) < hi < 68.0


def test_the_plot_draws_every_cell_and_flags_the_one_off_the_axis(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    loss_table = _script("loss_table")
    for name, spike in (("a", 0.0), ("b", 1e4)):
        d = tmp_path / "cells" / f"lora_r=2-{name}" / "lr=0.002" / "seed=0"
        d.mkdir(parents=True)
        losses = [4.0 - 0.01 * i for i in range(40)]
        losses[10] += spike
        rec = {"adapter": f"lora:{name}", "adapter_parameters": 10, "lr": 0.002, "train_loss": losses,
               "val_curve": [{"step": 20, "perplexity": 80.0 + spike}, {"step": 40, "perplexity": 75.0}],
               "val": {"perplexity": 75.0}, "stopped_early_at": None, "config": {"task": "causal_lm"}}
        (d / "cell.json").write_text(json.dumps(rec))
    import matplotlib.pyplot as plt

    shown = {}
    orig = plt.Figure.savefig

    def capture(fig, *a, **k):
        shown["labels"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        shown["ylim"] = [ax.get_ylim() for ax in fig.axes]
        return orig(fig, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", capture)
    loss_table.plot(tmp_path, tmp_path / "steps.png")
    assert (tmp_path / "steps.png").stat().st_size > 0
    assert [lbl.endswith("leaves the axis") for lbl in shown["labels"]] == [False, True]
    assert all(top < 1e3 for _, top in shown["ylim"])


class _Reached(Exception):
    pass


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks" / "study").glob("*.sh")))
def test_every_study_script_passes_compares_checks(script, tmp_path, monkeypatch):
    # each script's `tnpeft compare` line, parsed and checked by the CLI up to loading the data
    # (adapter specs, grids, budget), so that a committed script cannot rot into a usage error
    import shlex

    import tnpeft.train.comparison as comparison
    from tnpeft.cli import main

    text = (ROOT / "benchmarks" / "study" / script).read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if "tnpeft compare" in ln)
    argv = shlex.split(line.split("tnpeft", 1)[1].replace('"$OUT"', str(tmp_path / "out")))

    def reached(*a, **k):
        raise _Reached

    monkeypatch.setattr(comparison, "load_splits", reached)
    with pytest.raises(_Reached):
        main(argv)
