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


def test_keep_records_leaves_out_the_copies_of_another_parts_records(tmp_path):
    keep = _script("keep_records").keep
    run, other = tmp_path / "run", tmp_path / "other"
    d = _cell(run, [1.0], [], {"perplexity": 3.0})                   # copied in from the other part
    rel = d.relative_to(run) / "cell.json"
    (other / rel).parent.mkdir(parents=True)
    (other / rel).write_bytes((d / "cell.json").read_bytes())
    (d / "test.json").write_text('{"new": 1}')                       # this part's own: kept
    (other / rel.parent / "test.json").write_text('{"old": 1}')       # same name, other content
    kept = keep(run, tmp_path / "kept", (other,))
    assert [p.relative_to(tmp_path / "kept") for p in kept] == [rel.parent / "test.json"]
    with pytest.raises(SystemExit, match="not a folder"):
        keep(run, tmp_path / "kept", (tmp_path / "nowhere",))


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


_BUDGET = {"model": "minilm", "data": "tweets", "task": "classification", "train_size": 80, "val_size": 20,
           "test_size": 40, "epochs": 3, "eval_every": 5}


def _tested(run: Path, label: str, lr: float, seed: int, acc: float, params: int = 100, **budget) -> Path:
    """A finished, tested cell's records as compare writes them."""
    import hashlib

    name, _, rest = label.partition(":")
    d = run / "cells" / f"{label.replace(':', '_')}-{hashlib.sha256(label.encode()).hexdigest()[:6]}" \
        / f"lr={lr:g}" / f"seed={seed}"
    d.mkdir(parents=True)
    h = hashlib.sha256(f"{label}{lr}{seed}{sorted(budget.items())}".encode()).hexdigest()[:16]
    rec = {"adapter": label, "name": name, "hparams": {k: json.loads(v) for k, v in (i.split("=") for i in rest.split(","))}, "lr": lr,
           "seed": seed, "adapter_parameters": params, "head_parameters": 3, "train_loss": [1.0, 0.9, 0.8],
           "val": {"accuracy": acc + 0.01, "macro_f1": acc}, "val_curve": [{"step": 2, "accuracy": acc}],
           "best_step": 3, "step_seconds_median": 0.5 + seed, "peak_memory_mb": 100.0 + seed,
           "config_hash": h, "config": {**_BUDGET, **budget, "lr": lr, "seed": seed}}
    (d / "cell.json").write_text(json.dumps(rec))
    (d / "test.json").write_text(json.dumps({"config_hash": h, "test": {"accuracy": acc, "macro_f1": acc - 0.02,
                                                                         "eval_seconds": 1.0}}))
    return d


def test_the_converged_table_pools_a_rows_seeds_across_parts_and_counts_a_copied_cell_once(tmp_path):
    conv = _script("converged")
    a, b = tmp_path / "part1", tmp_path / "part7"
    _tested(a, "lora:r=8,alpha=16", 0.002, 0, 0.70, params=800)
    _tested(a, "quantum_peft:rank=64,layers=1", 0.02, 0, 0.60, params=70)
    for seed, acc in ((0, 0.70), (1, 0.74), (2, 0.75)):            # seed 0 copied into part 7 from part 1
        _tested(b, "lora:r=8,alpha=16", 0.002, seed, acc, params=800)
    # a cell whose rate was not selected has no test.json and is not a row's
    (b / "cells" / "x" / "lr=0.1" / "seed=0").mkdir(parents=True)
    (b / "cells" / "x" / "lr=0.1" / "seed=0" / "cell.json").write_text("{}")
    table, cells, budget, moved = conv.rows([a, b])
    assert len(cells) == 4 and moved == [] and budget["epochs"] == 3
    lora, qp = table                                                  # most parameters first
    assert (lora["adapter"], lora["seeds"], qp["seeds"]) == ("lora:r=8,alpha=16", 3, 1)
    assert lora["test_accuracy_mean"] == pytest.approx(statistics.fmean([0.70, 0.74, 0.75]))
    assert lora["test_accuracy_std"] == pytest.approx(statistics.stdev([0.70, 0.74, 0.75]))
    assert lora["step_seconds"] == pytest.approx(1.5) and lora["peak_memory_mb"] == 102.0
    # one seed: no spread over seeds, the binomial standard error of 40 test examples instead
    assert qp["test_accuracy_std"] is None
    assert qp["test_accuracy_se"] == pytest.approx((0.6 * 0.4 / 40) ** 0.5)
    assert qp["params_vs_lora_r8"] == pytest.approx(70 / 800)
    md = conv.markdown(table)
    assert "0.7300 ± 0.0265" in md and "0.6000 (± 0.0775 SE)" in md


def test_the_converged_table_refuses_another_budget(tmp_path):
    conv = _script("converged")
    a, b = tmp_path / "a", tmp_path / "b"
    _tested(a, "lora:r=1", 0.002, 0, 0.7)
    bad = _tested(b, "lora:r=2", 0.002, 0, 0.7, epochs=1)
    with pytest.raises(SystemExit, match=r"epochs=1 against 3") as e:
        conv.rows([a, b])
    assert str(bad / "cell.json") in str(e.value)
    with pytest.raises(SystemExit, match="no tested cells"):
        conv.rows([tmp_path / "a" / "cells"])


def _selection(run: Path, rates: dict[str, float]) -> None:
    """A finished run's results.json, as far as the converged table reads it."""
    (run / "results.json").write_text(json.dumps({"selection": {
        label: {"lr": lr, "edge": None} for label, lr in rates.items()}}))


def test_a_later_part_that_chose_another_rate_moves_the_row(tmp_path):
    conv = _script("converged")
    reg, grid, more = tmp_path / "registered", tmp_path / "grid", tmp_path / "more_seeds"
    for seed, acc in ((0, 0.70), (1, 0.71), (2, 0.72)):
        _tested(reg, "lora:r=1", 0.002, seed, acc)
    _tested(grid, "lora:r=1", 0.006, 0, 0.80)
    for seed, acc in ((1, 0.81), (2, 0.79)):
        _tested(more, "lora:r=1", 0.006, seed, acc)
    table, cells, _, moved = conv.rows([reg, grid, more])
    (row,) = table
    assert (row["lr"], row["seeds"]) == (0.006, 3)
    assert row["test_accuracy_mean"] == pytest.approx(0.80)
    assert sorted(cells) == [("lora:r=1", 0.006, s) for s in (0, 1, 2)]
    assert moved == [f"lora:r=1: lr 0.006 ({grid}, {more}) replaces lr 0.002 ({reg})"]
    # the order of the folders decides: the registered part given last keeps its rate
    table, _, _, moved = conv.rows([grid, more, reg])
    assert (table[0]["lr"], table[0]["seeds"], table[0]["test_accuracy_mean"]) == (0.002, 3, pytest.approx(0.71))
    assert moved[0].startswith("lora:r=1: lr 0.002")


def test_a_test_figure_at_a_rate_its_run_no_longer_selects_is_left_out(tmp_path):
    conv = _script("converged")
    run = tmp_path / "run"
    _tested(run, "vera:r=4", 0.03, 0, 0.77)         # chosen by a narrower grid, tested, then the grid grew
    _tested(run, "vera:r=4", 0.09, 0, 0.79)
    with pytest.raises(SystemExit, match=r"run: vera:r=4 has test figures at several rates \[0.03, 0.09\] and no results.json selection for it"):
        conv.rows([run])
    _selection(run, {"vera:r=4": 0.09})
    table, cells, _, moved = conv.rows([run])
    assert (table[0]["lr"], table[0]["test_accuracy_mean"], moved) == (0.09, pytest.approx(0.79), [])
    assert list(cells) == [("vera:r=4", 0.09, 0)]
    (run / "results.json").write_text('{"selection": [1, 2]}')
    with pytest.raises(SystemExit, match=r"results.json: not a compare run's results"):
        conv.rows([run])


def test_short_names_for_the_crowded_plot():
    short = _script("converged").short
    assert short("peft_lokr:r=8,alpha=8") == "peft LoKr r=8"
    assert short("quantum_peft:rank=64,layers=2") == "QP K=64 L=2"
    assert short("lora:r=1,alpha=2") == "LoRA r=1"
    assert short("mymod:build") == "mymod:build"                        # a module:function row as given


def test_the_converged_plots_are_drawn_from_the_records(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    conv = _script("converged")
    for seed in (0, 1):
        _tested(tmp_path, "lora:r=8,alpha=16", 0.002, seed, 0.7 + seed / 100, params=800)
    _tested(tmp_path, "vera:r=4", 0.01, 0, 0.65, params=20)
    drawn = []
    orig = plt.Figure.savefig

    def capture(fig, *a, **k):
        drawn.append(fig)
        return orig(fig, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", capture)
    conv.main([str(tmp_path), "--pareto", str(tmp_path / "p.png"), "--curves", str(tmp_path / "c.png")])
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "c.png").stat().st_size > 0
    pareto, curves = drawn
    assert {t.get_text() for t in pareto.axes[0].texts} >= {"LoRA r=8", "VeRA r=4"}
    loss_axes = [ax for ax in curves.axes if ax.get_ylabel() != "validation accuracy (dashed)" and ax.get_title()]
    twins = [ax for ax in curves.axes if ax not in loss_axes]
    # LoRA's panel draws both seeds, VeRA's one; every validation axis has the same range
    assert [len(ax.lines) for ax in loss_axes] == [2, 1]
    assert len({ax.get_ylim() for ax in twins}) == 1
    # each seed's validation points: its curve and its best value at best_step (step 3)
    assert [list(line.get_xdata()) for line in twins[0].lines] == [[2, 3], [2, 3]]
