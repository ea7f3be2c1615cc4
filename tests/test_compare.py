"""``tnpeft compare`` on a tiny BERT: the learning rate is chosen on validation only, test metrics
exist only for the selected cells, the statistics follow from the cell files, the JSON and the
PNGs are written, a rerun trains nothing, and bad input is a one-line error before any work."""

from __future__ import annotations

import csv
import json
import math
import random
import statistics
import struct
from pathlib import Path

import pytest
import torch

import tnpeft.train.comparison as comparison
from tnpeft.errors import ConfigError
from tnpeft.train.compare_setup import parse_adapter_spec
from tnpeft.train.comparison import compare, default_lrs, parse_lr_grid, select_lr
from tnpeft.train.pareto import pareto_front

ADAPTERS = ["lora:r=2,alpha=4", "peft_lora:r=2,alpha=4"]
LRS = [1e-3, 5e-2]
SEEDS = [0, 1]


def _tiny_bert(path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tnpeft.train.offline_assets import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _csv(path: Path, n: int = 240) -> Path:
    rng = random.Random(0)
    pos, neg, filler = "good great lovely happy".split(), "bad awful sad poor".split(), "the a day it was".split()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(n):
            y = rng.random() < 0.5
            words = [rng.choice(pos if y else neg)] + [rng.choice(filler) for _ in range(4)]
            rng.shuffle(words)
            w.writerow([" ".join(words), "pos" if y else "neg"])
    return path


def _args(root: Path, out: Path, **over) -> list[str]:
    a = {"--model": str(root / "model"), "--data": str(root / "data.csv"), "--steps": "4", "--val-size": "40",
         "--test-size": "40", "--batch-size": "16", "--max-length": "16", "--out": str(out)}
    a.update(over)
    return ["compare", "--adapters", *ADAPTERS, "--lrs", *map(str, LRS), "--seeds", *map(str, SEEDS),
            *[x for kv in a.items() for x in kv], "--json"]


class Counter:
    """Wraps a function of :mod:`tnpeft.train.comparison` and records its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kw):
        self.calls.append(args[1:4])
        return self.fn(*args, **kw)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    from tnpeft.cli import main

    root = tmp_path_factory.mktemp("compare")
    _tiny_bert(root / "model")
    _csv(root / "data.csv")
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        trains, tests = Counter(comparison.train_cell), Counter(comparison.evaluate_test)
        mp.setattr(comparison, "train_cell", trains)
        mp.setattr(comparison, "evaluate_test", tests)
        assert main(_args(root, out)) == 0
        first = (len(trains.calls), len(tests.calls))
        assert main(_args(root, out)) == 0          # the rerun: every cell is done
        second = (len(trains.calls) - first[0], len(tests.calls) - first[1])
    return root, out, json.loads((out / "results.json").read_text()), first, second


def _cell_files(out: Path) -> list[tuple[dict, dict | None]]:
    found = []
    for p in sorted(out.glob("cells/*/lr=*/seed=*/cell.json")):
        t = p.parent / "test.json"
        found.append((json.loads(p.read_text()), json.loads(t.read_text())["test"] if t.exists() else None))
    return found


def test_every_cell_trains_once_and_a_rerun_trains_nothing(grid_run):
    _, _, res, first, second = grid_run
    assert first == (len(ADAPTERS) * len(LRS) * len(SEEDS), len(ADAPTERS) * len(SEEDS))
    assert second == (0, 0)
    assert res["protocol"] == "grid" and res["protocol_cells"] == 8 and len(res["cells"]) == 8


def test_the_rate_is_chosen_on_validation_and_only_its_cells_are_tested(grid_run):
    _, out, res, _, _ = grid_run
    files = _cell_files(out)
    assert len(files) == 8
    for label in ADAPTERS:
        mine = [(c, t) for c, t in files if c["adapter"] == label]
        by_lr: dict[float, list[float]] = {}
        for c, _ in mine:
            by_lr.setdefault(c["lr"], []).append(c["val"]["accuracy"])
        want = select_lr(by_lr, maximize=True)
        best = max(statistics.fmean(v) for v in by_lr.values())
        assert statistics.fmean(by_lr[want]) == best
        assert res["selection"][label]["lr"] == want
        for c, t in mine:     # test metrics exist exactly for the selected rate's cells
            assert (t is not None) == (c["lr"] == want)
            assert "test" not in c                      # a cell file holds validation metrics only
    for c in res["cells"]:
        assert ("test" in c) == c["selected"]
        assert c["val"] is not None and set(c["val"]) == {"accuracy", "macro_f1"}


def test_select_lr_follows_validation_even_where_test_disagrees():
    val = {1e-3: [0.70, 0.72], 1e-2: [0.60, 0.61]}
    test = {1e-3: [0.50, 0.50], 1e-2: [0.90, 0.90]}     # the test set would pick the other rate
    assert select_lr(val, maximize=True) == 1e-3 != select_lr(test, maximize=True)
    assert select_lr({1e-3: [0.5], 3e-3: [0.5]}, True) == 1e-3           # ties: the smaller rate
    assert select_lr({1e-3: [3.0], 3e-3: [2.0]}, maximize=False) == 3e-3  # perplexity: the lowest
    assert select_lr({1e-3: [0.4, None], 3e-3: [0.3, 0.3]}, True) == 3e-3  # a diverged seed: not selectable
    assert select_lr({1e-3: [None]}, True) is None


def test_summary_statistics_follow_from_the_cell_files(grid_run):
    _, out, res, _, _ = grid_run
    files = _cell_files(out)
    for row in res["summary"]:
        tested = [(c, t) for c, t in files if c["adapter"] == row["adapter"] and t is not None]
        assert row["seeds"] == len(tested) == len(SEEDS)
        for m in ("accuracy", "macro_f1"):
            xs = [t[m] for _, t in tested]
            assert row[f"test_{m}_mean"] == pytest.approx(statistics.fmean(xs))
            assert row[f"test_{m}_std"] == pytest.approx(statistics.stdev(xs))
        assert row["step_seconds"] == pytest.approx(statistics.median(c["step_seconds_median"] for c, _ in tested))
        assert row["adapter_parameters"] > 0 and row["head_parameters"] == 16 * 2 + 2
    lora, peft = res["summary"]
    assert lora["adapter_parameters"] == peft["adapter_parameters"]   # the same LoRA, counted the same


def test_results_json_records_the_protocol_machine_and_every_cell(grid_run):
    _, _, res, _, _ = grid_run
    for k in ("version", "metric", "maximize", "cells", "selection", "summary", "protocol", "protocol_cells",
              "config", "lr_grid", "seeds", "machine", "memory", "wall_seconds"):
        assert k in res, k
    assert res["metric"] == "accuracy" and res["maximize"] is True and res["seeds"] == SEEDS
    assert res["lr_grid"] == {a: LRS for a in ADAPTERS}
    assert {"cpu_count", "torch", "device"} <= set(res["machine"])
    assert res["config"]["val_size"] == 40 and res["config"]["test_size"] == 40
    for c in res["cells"]:
        assert c["steps"] == 4 and c["step_seconds_median"] > 0 and c["diverged_at_step"] is None
        assert c["peak_memory_mb"] is None or c["peak_memory_mb"] >= 0


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_pareto_plot_and_the_curves_are_pngs(grid_run):
    _, out, _, _, _ = grid_run
    w, h = _png_size(out / "pareto.png")
    assert w >= 800 and h >= 500
    w, h = _png_size(out / "curves.png")
    assert w >= 400 and h >= 300


def test_pareto_front():
    pts = [(10, 0.7), (100, 0.8), (50, 0.6), (1000, 0.8), (5, 0.5)]
    assert pareto_front(pts) == [0, 1, 4]
    assert pareto_front([(10, 3.0), (100, 2.0), (50, 4.0)], maximize=False) == [0, 1]


def test_pareto_labels_stay_off_the_front_line(tmp_path, monkeypatch):
    """Dominated points just under the front's step line: their labels' nearest place (up and right)
    would sit on the line, so each must be written elsewhere."""
    import tnpeft.train.pareto as pareto

    figs = []
    monkeypatch.setattr(pareto, "save_png", lambda fig, path: figs.append(fig))
    rows = [{"adapter": a, "adapter_parameters": n, "test_accuracy_mean": y, "test_accuracy_std": None,
             "test_accuracy_se": 0.0002} for a, n, y in
            [("A", 1_000, 0.70), ("B", 100_000, 0.80), ("under-1", 3_000, 0.696), ("under-2", 20_000, 0.696),
             ("beside", 95_000, 0.75)]]
    pareto.plot_pareto(rows, tmp_path / "p.png")
    fig, = figs
    ax = fig.axes[0]
    r = fig.canvas.get_renderer()
    pix = ax.transData.transform
    (x0, y0), (x1, _), (_, y1) = pix((1_000, 0.70)), pix((100_000, 0.70)), pix((100_000, 0.80))
    line_boxes = [(x0, y0 - 0.5, x1, y0 + 0.5), (x1 - 0.5, y0, x1 + 0.5, y1)]   # along, then up
    texts = {t.get_text(): t.get_window_extent(r) for t in ax.texts}
    assert set(texts) == {"A", "B", "under-1", "under-2", "beside"}
    for name, bb in texts.items():
        for bx0, by0, bx1, by1 in line_boxes:
            assert not (bb.x0 < bx1 and bx0 < bb.x1 and bb.y0 < by1 and by0 < bb.y1), (name, bb)


def test_a_label_with_nowhere_free_goes_where_it_covers_least():
    from tnpeft.train.pareto import _choose

    bar = (10.0, 0.0, 12.0, 100.0)                  # a tall error bar
    line = (0.0, 50.0, 100.0, 50.0)                 # a zero-height line still counts
    first = ((5.0, 40.0, 30.0, 60.0), True)         # across the bar and the line
    small = ((11.5, 70.0, 40.0, 80.0), True)        # half a pixel of the bar's width
    outside = ((50.0, 90.0, 80.0, 99.0), False)     # free, but out of the axes
    assert _choose([first, small, outside], [bar, line]) == 1
    free = ((20.0, 60.0, 40.0, 70.0), True)
    assert _choose([first, small, free], [bar, line]) == 2          # the first free place wins outright
    assert _choose([first, ((5.0, 45.0, 30.0, 55.0), True)], [line]) == 0   # equal cover: the earlier one
    assert _choose([outside, ((0.0, 0.0, 1.0, 1.0), False)], [(0.0, 0.0, 1.0, 1.0)]) == 0  # none inside: least cover


def test_an_error_mid_run_is_printed_on_its_own_line_under_the_bar(grid_run, capsys):
    from tnpeft.cli import main

    root, _, _, _, _ = grid_run
    args = [a for a in _args(root, root / "bad-target", **{"--target-modules": "nonexistent"}) if a != "--json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "compare:" in err                   # the bar was drawn, then ended its line
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("tnpeft: error: target_modules 'nonexistent' matched no module"), last


def test_the_docs_default_grid_table_is_the_code_s():
    """docs/compare.md's table of default grids: every method it names gets exactly that grid."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "compare.md").read_text()
    table = text.split("| method | default grid |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    seen = set()
    for line in table.splitlines():
        names, grid = (c.strip() for c in line.strip("|").split("|"))
        rates = [float(x) for x in grid.split(",")]
        for name in names.replace("and any other (", "").replace(")", "").replace("yours", "").split(","):
            name = name.strip()
            if name:
                seen.add(name)
                assert default_lrs(parse_adapter_spec(name)) == pytest.approx(rates), (name, line)
    assert {"lora", "quantum_peft", "vera", "adalora", "mpo"} <= seen


def test_the_lora_r8_ratio_column_only_with_a_lora_r8_row(grid_run):
    import copy

    from tnpeft.cli.tables import compare_table

    _, _, res, _, _ = grid_run
    assert all(r["params_vs_lora_r8"] is None for r in res["summary"])     # no LoRA r=8 among ADAPTERS
    assert "×LoRA8" not in compare_table(res)
    with_ref = copy.deepcopy(res)
    with_ref["summary"][0]["params_vs_lora_r8"] = 0.25
    header, *_ = compare_table(with_ref).split("\n")
    assert header.split() == ["adapter", "params", "head", "×LoRA8", "lr", "test", "acc", "%", "macro-F1", "%",
                              "step", "s", "peak", "MB"]
    assert "0.25" in compare_table(with_ref).split("\n")[1]


def test_tune_then_seeds_runs_the_grid_on_the_first_seed_only(grid_run, monkeypatch):
    root, _, _, _, _ = grid_run
    trains = Counter(comparison.train_cell)
    monkeypatch.setattr(comparison, "train_cell", trains)
    res = compare(["lora:r=2,alpha=4"], model=str(root / "model"), data=str(root / "data.csv"), lrs=LRS,
                  seeds=[0, 1, 2], steps=3, val_size=40, test_size=40, batch_size=16, max_length=16,
                  protocol="tune-then-seeds", out=root / "tts", progress=False)
    chosen = res["selection"]["lora:r=2,alpha=4"]["lr"]
    assert [(lr, s) for _, lr, s in trains.calls] == [(LRS[0], 0), (LRS[1], 0), (chosen, 1), (chosen, 2)]
    assert res["protocol_cells"] == 4 and res["summary"][0]["seeds"] == 3
    assert all(v["seeds"] == 1 for v in res["selection"]["lora:r=2,alpha=4"]["by_lr"].values())


def test_a_changed_setting_in_the_same_folder_is_an_error(grid_run, capsys):
    from tnpeft.cli import main

    root, out, _, _, _ = grid_run
    assert main(_args(root, out, **{"--train-size": "50"})) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other settings" in err and "--out" in err


def test_adapter_specs():
    s = parse_adapter_spec("qpa:preset=reference,hidden=[16,16],r=4")
    assert (s.name, s.hparams) == ("qpa", {"preset": "reference", "hidden": [16, 16], "r": 4})
    s = parse_adapter_spec("mypkg.topos:ttlora:cores=2")
    assert s.name == "mypkg.topos:ttlora" and s.hparams == {"cores": 2} and callable(s.method)
    assert parse_adapter_spec("peft_lora").hparams == {"r": 8, "alpha": 16, "dropout": 0.0}
    assert parse_lr_grid(["lora:r=1=1e-3,3e-3"]) == {"lora:r=1": [1e-3, 3e-3]}


@pytest.mark.parametrize("args, words", [
    (["--adapters", "nosuch:r=2"], ["nosuch", "unknown adapter"]),
    (["--adapters", "lora:rank=2"], ["lora:rank=2", "rank"]),
    (["--adapters", "peft_lora:rank=2"], ["peft_lora", "rank"]),
    (["--adapters", "lora:r"], ["key=value"]),
    (["--adapters", "lora", "--protocol", "best-of"], ["--protocol", "tune-then-seeds"]),
    (["--adapters", "lora", "--lrs", "0"], ["learning rate", "0"]),
    (["--adapters", "lora", "--lr-grid", "qpa=1e-3"], ["--lr-grid", "qpa"]),
    (["--adapters", "lora", "--lr-grid", "lora=x"], ["--lr-grid", "lora=x"]),
    (["--adapters", "lora", "--seeds", "0", "0"], ["--seeds"]),
    (["--adapters", "lora", "lora"], ["twice"]),
    (["--adapters", "lora", "--epochs", "1"], ["--steps", "--epochs"]),
    (["--adapters", "lora", "--val-size", "0"], ["--val-size"]),
])
def test_bad_input_is_one_line_before_any_work(args, words, tmp_path, capsys, monkeypatch):
    from tnpeft.cli import main

    monkeypatch.setattr(comparison, "load_splits", lambda *a, **k: pytest.fail("data loaded before the check"))
    argv = ["compare", *args, "--out", str(tmp_path / "o"), "--steps", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tnpeft: error:") and "\n" not in err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "o").exists()


def test_default_grids_centre_on_the_registered_rates_from_python_and_the_shell(tmp_path):
    from tnpeft.adapters.methods import METHODS
    from tnpeft.cli.demo import DEMO_ADAPTERS
    from tnpeft.train.comparison import default_lrs

    assert {name: lr for name, _, lr in DEMO_ADAPTERS} == {name: METHODS[name].learning_rate for name, _, _ in DEMO_ADAPTERS}
    assert default_lrs(parse_adapter_spec("quantum_peft:rank=4")) == [6.7e-3, 2e-2, 6e-2]
    assert default_lrs(parse_adapter_spec("peft_lora")) == [6.7e-4, 2e-3, 6e-3]
    assert default_lrs(parse_adapter_spec("mpo:r=4")) == [6.7e-4, 2e-3, 6e-3]


def test_an_empty_learning_rate_grid_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        compare(["lora"], lrs=[], steps=1, out=tmp_path / "o")


def test_demo_pareto_plot_on_made_up_results(tmp_path):
    from tnpeft.cli.demo import STUDY_COMMAND, plot_demo_pareto

    res = [{"adapter": "lora", "adapter_parameters": 160_000, "accuracy": 0.71},
           {"adapter": "quantum_peft", "adapter_parameters": 9_000, "accuracy": 0.69},
           {"adapter": "qpa", "adapter_parameters": 30_000, "accuracy": 0.66}]
    plot_demo_pareto(res, 1000, tmp_path / "pareto.png")
    assert _png_size(tmp_path / "pareto.png")[0] >= 800
    assert STUDY_COMMAND.startswith("tnpeft compare ") and "--protocol tune-then-seeds" in STUDY_COMMAND


def test_edge_rates_are_flagged_in_the_json_and_the_table(grid_run):
    from tnpeft.cli.tables import compare_table

    _, _, res, _, _ = grid_run
    for r in res["summary"]:    # a two-point grid: whatever is selected is at one of its edges
        assert r["lr_at_edge"] == ("lowest" if r["lr"] == min(LRS) else "highest")
        assert res["selection"][r["adapter"]]["edge"] == r["lr_at_edge"]
        assert any(n.startswith(r["adapter"] + ":") and "of its grid" in n and "widen" in n for n in res["notes"])
    table = compare_table(res)
    assert all(f"{r['lr']:g}*" in table for r in res["summary"])
    assert "note: " in table and "± " in table and "SE" not in table.split("\n")[1]   # two seeds: a std


def test_one_seed_reports_the_binomial_error_and_short_data_is_said(grid_run):
    from tnpeft.cli.tables import compare_table

    root, _, _, _, _ = grid_run
    res = compare(["lora:r=2,alpha=4"], model=str(root / "model"), data=str(root / "data.csv"), lrs=[1e-3, 3e-3, 5e-2],
                  seeds=[0], steps=2, train_size=500, val_size=40, test_size=40, batch_size=16, max_length=16,
                  out=root / "one", progress=False, warmup_steps=20)
    row = res["summary"][0]
    p = row["test_accuracy_mean"]
    assert row["test_accuracy_std"] is None and row["test_accuracy_se"] == pytest.approx((p * (1 - p) / 40) ** 0.5)
    assert any("one seed" in n for n in res["notes"])
    assert any("--train-size 500" in n and "160 training rows" in n for n in res["notes"])
    table = compare_table(res)
    assert f"{100 * p:.2f} ± {100 * row['test_accuracy_se']:.2f} SE" in table and "± 0.00" not in table
    assert all(c["warmup_steps"] == 1 for c in res["cells"])     # 20 asked, clipped to 0.1 of a 2-step run


def test_warmup_is_clipped_to_its_fraction_of_the_run():
    from tnpeft.train.train_config import effective_warmup

    assert effective_warmup(20, 1000) == 20 and effective_warmup(20, 100) == 10 and effective_warmup(20, 5) == 1
    assert effective_warmup(0, 100) == 0 and effective_warmup(20, 100, fraction=0.5) == 20


def test_early_stopping_keeps_the_best_values_and_records_the_curve(grid_run):
    root, _, _, _, _ = grid_run
    res = compare(["lora:r=2,alpha=4"], model=str(root / "model"), data=str(root / "data.csv"), lrs=[3e-1],
                  seeds=[0], steps=12, val_size=40, test_size=40, batch_size=16, max_length=16, out=root / "es",
                  progress=False, eval_every=2, patience=2)
    (cell,) = res["cells"]
    curve = cell["val_curve"]
    assert [c["step"] for c in curve] == list(range(2, 2 * len(curve) + 1, 2)) and curve
    assert curve[-1]["step"] == cell["steps_run"]              # the end of the run is on the curve
    best = max(c["accuracy"] for c in curve)
    assert cell["val"]["accuracy"] == best                     # the kept values are the best of the curve
    assert cell["best_step"] == min(c["step"] for c in curve if c["accuracy"] == best) or \
        curve[-1]["accuracy"] == best                          # ties: an earlier step, or the end (kept as is)
    if cell["stopped_early_at"] is not None:                   # two evaluations in a row without improvement
        accs = [c["accuracy"] for c in curve]
        assert max(accs[-2:]) <= max(accs[:-2]) and cell["steps_run"] == cell["stopped_early_at"] < 12
    with pytest.raises(ConfigError, match="--eval-every"):
        compare(["lora"], steps=1, patience=2, out=root / "bad")


def test_without_early_stopping_the_curve_ends_with_the_final_values(grid_run):
    root, _, _, _, _ = grid_run
    res = compare(["lora:r=2,alpha=4"], model=str(root / "model"), data=str(root / "data.csv"), lrs=[3e-2],
                  seeds=[0], steps=5, val_size=40, test_size=40, batch_size=16, max_length=16, out=root / "noes",
                  progress=False, eval_every=2)
    (cell,) = res["cells"]
    assert [c["step"] for c in cell["val_curve"]] == [2, 4, 5] and cell["steps_run"] == 5
    assert cell["val_curve"][-1]["accuracy"] == cell["val"]["accuracy"]      # the kept values are the last


NEW_METHODS = ["loha:r=2", "lokr:r=2", "vera:r=4", "ia3", "oft:block_size=4,param=cayley_neumann", "boft",
               "hra:r=2", "fourierft:n_frequency=8", "quanta:n_axes=2", "ttlora:r=2", "tensor_ring:r=2",
               "loretta_rep:r=2,tt_rank=2", "loretta_adp:bottleneck=4,tt_rank=2", "metatt:r=2", "lortta:r=2,heads=2"]


def _quick_cells(tmp_path: Path, monkeypatch) -> None:
    """A tiny BERT and 120 rows in ``tmp_path``; the figures and the memory trimming between cells
    skipped (tested elsewhere), for time."""
    import tnpeft.train.cells as cells

    monkeypatch.setattr(comparison, "plot_pareto", lambda *a, **k: None)
    monkeypatch.setattr(comparison, "plot_compare_curves", lambda *a, **k: None)
    monkeypatch.setattr(cells, "_trim", lambda: None)
    _tiny_bert(tmp_path / "model")
    _csv(tmp_path / "data.csv", n=120)


def test_compare_runs_the_tensor_network_methods(tmp_path, monkeypatch):
    # peft's tuners, the literature and the model-wide methods, one tiny cell each (the figures are
    # tested above: skipped here, and so is the memory trimming between cells, for time)
    _quick_cells(tmp_path, monkeypatch)
    res = compare(NEW_METHODS, model=str(tmp_path / "model"), data=str(tmp_path / "data.csv"), lrs=[1e-2], seeds=[0],
                  steps=2, val_size=16, test_size=16, batch_size=8, max_length=8, target_modules=["query", "value"],
                  out=tmp_path / "out", progress=False)
    done = {c["adapter"]: c for c in res["cells"]}
    assert sorted(done) == sorted(NEW_METHODS)
    for label, c in done.items():
        assert c["val"] is not None and 0.0 <= c["val"]["accuracy"] <= 1.0, label
        assert c["adapter_parameters"] > 0 and c["steps"] == 2, label


def test_a_long_pareto_title_is_wrapped_inside_the_figure(tmp_path, monkeypatch):
    import tnpeft.train.pareto as pareto

    seen = {}
    monkeypatch.setattr(pareto, "save_png", lambda fig, path: seen.setdefault("fig", fig))
    rows = [{"adapter": f"quantum_peft:rank={k},layers=1", "adapter_parameters": 5000 + 30 * k,
             "test_accuracy_mean": 0.74 + k / 10_000, "test_accuracy_se": 0.01} for k in (8, 32, 64, 128)]
    title = ("minilm on tweets: test accuracy vs adapter parameters\none seed: bars are the binomial standard error "
             "over 2,000 test examples, learning rate chosen on validation, protocol tune-then-seeds")
    pareto.plot_pareto(rows, tmp_path / "p.png", title=title)
    fig = seen["fig"]
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1     # every character on the page
    assert fig.axes[0].get_title().count("\n") >= 2                            # the long line was wrapped


def test_a_causal_lm_with_one_seed_shows_no_made_up_spread(tmp_path, monkeypatch):
    # a perplexity has no binomial error: one seed prints "(1 seed)", never "± 0.00", and says so
    from test_train import _tiny_folder

    from tnpeft.cli.tables import compare_table
    from tnpeft.train.offline_assets import hamlet

    monkeypatch.setattr(comparison, "plot_compare_curves", lambda *a, **k: None)
    text = tmp_path / "text.txt"
    text.write_text(hamlet()[:4000])
    res = compare(["lora:r=2"], model=str(_tiny_folder(tmp_path / "model")), data=str(text), lrs=[1e-2],
                  seeds=[0], steps=2, val_size=2, test_size=2, batch_size=4, max_length=16, out=tmp_path / "out",
                  progress=False)
    (row,) = res["summary"]
    assert row["test_perplexity_mean"] > 1 and row["test_perplexity_std"] is None and row["test_loss_std"] is None
    table = compare_table(res)
    assert "(1 seed)" in table and "± 0.00" not in table and "binomial" not in table.split("note:")[0]
    assert "blocks of 16 tokens" in table
    assert any("no binomial error" in n for n in res["notes"])
    # the model without an adapter: its figures beside the rows, equal to evaluating it directly
    from tnpeft.train.datasets import load_model
    from tnpeft.train.evaluation import evaluate

    base = res["base_model"]
    loaded = load_model(str(tmp_path / "model"), "causal_lm")
    ctx_test = comparison.load_splits(str(text), "causal_lm", str(tmp_path / "model"), 2000, 2, 2, 16, "text",
                                      "label")[2]
    direct = evaluate(loaded.model.eval(), loaded.tokenizer, ctx_test, "causal_lm", 128, 16, progress=False)
    assert base["test"]["perplexity"] == pytest.approx(direct["perplexity"], rel=1e-5)
    assert f"test {direct['perplexity']:.2f}" in table and "without an adapter" in table
    assert (tmp_path / "out" / "base.json").exists()


def test_the_pareto_x_axis_says_what_else_every_row_trains():
    from tnpeft.train.pareto import _x_label

    rows = [{"adapter": "lora", "adapter_parameters": 10, "head_parameters": 0},
            {"adapter": "qpa", "adapter_parameters": 5, "head_parameters": 0}]
    assert "head" not in _x_label(rows)                                  # a causal LM's lm_head study: no head
    with_head = [dict(r, head_parameters=1155) for r in rows]
    assert "task head, 1,155" in _x_label(with_head)
    assert "not counted" in _x_label([rows[0], with_head[1]])


@pytest.mark.parametrize("ref, drawn", [(44.5, True), (100.0, False)])
def test_the_model_without_an_adapter_is_a_line_unless_it_would_flatten_the_rows(tmp_path, monkeypatch, ref, drawn):
    import tnpeft.train.pareto as pareto

    seen = {}
    monkeypatch.setattr(pareto, "save_png", lambda fig, path: seen.setdefault("fig", fig))
    rows = [{"adapter": a, "adapter_parameters": n, "head_parameters": 0, "test_perplexity_mean": v,
             "test_perplexity_std": None} for a, n, v in (("lora", 460_800, 42.3), ("qwthn", 125_340, 43.3))]
    pareto.plot_pareto(rows, tmp_path / "p.png", "perplexity", False, reference=("without an adapter", ref))
    ax = seen["fig"].axes[0]
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"without an adapter: {ref:g}" in t for t in labels)                 # named either way
    assert bool(lo <= ref <= hi) is drawn                                            # on the axis only when near
    assert hi - lo < 5                                                               # the rows stay apart


PEFT_PAIRS = [("loha:r=2,alpha=4", "peft_loha:r=2,alpha=4", 2 * (2 * 2 * (16 + 16))),
              ("lokr:r=2", "peft_lokr:r=2", 2 * (4 * 4 + 4 * 4)),
              ("vera:r=4", "peft_vera:r=4", 2 * (16 + 4))]


def test_peft_reference_rows_train_beside_their_tnpeft_twins(tmp_path, monkeypatch):
    # each of peft's LoHa, LoKr and VeRA as a row beside tnpeft's method: the same count (closed
    # form, query and value of a 16-wide layer), trained, reloaded from its file for the test split
    _quick_cells(tmp_path, monkeypatch)
    specs = [s for a, b, _ in PEFT_PAIRS for s in (a, b)]
    res = compare(specs, model=str(tmp_path / "model"), data=str(tmp_path / "data.csv"), lrs=[1e-2], seeds=[0],
                  steps=2, val_size=16, test_size=16, batch_size=8, max_length=8, target_modules=["query", "value"],
                  out=tmp_path / "out", progress=False)
    done = {c["adapter"]: c for c in res["cells"]}
    for ours, theirs, count in PEFT_PAIRS:
        assert done[ours]["adapter_parameters"] == done[theirs]["adapter_parameters"] == count, (ours, theirs)
        assert done[theirs]["name"] == theirs.split(":")[0] and done[theirs]["test"]["accuracy"] >= 0
        assert done[theirs]["val"] is not None and math.isfinite(done[theirs]["test"]["macro_f1"])
    assert {r["adapter"] for r in res["summary"]} == set(specs)


def test_peft_reference_rows_take_peft_hyper_parameters(tmp_path):
    from tnpeft.train.cells import peft_config

    vera = parse_adapter_spec("peft_vera:r=4,d_initial=0.5")
    assert vera.hparams == {"r": 4, "d_initial": 0.5} and vera.is_peft and vera.method_name == "vera"
    assert default_lrs(vera) == [3.3e-3, 1e-2, 3e-2]
    cfg = peft_config(vera, ["query"], ["classifier"])
    assert (cfg.r, cfg.d_initial, set(cfg.target_modules), list(cfg.modules_to_save)) == (4, 0.5, {"query"}, ["classifier"])
    lokr = peft_config(parse_adapter_spec("peft_lokr:decompose_both=true,decompose_factor=4"), ["value"], [])
    assert (lokr.r, lokr.alpha, lokr.decompose_both, lokr.decompose_factor) == (8, 8.0, True, 4)
    assert parse_adapter_spec("peft_loha").hparams == {"r": 8, "alpha": 8.0}


@pytest.mark.parametrize("spec, words", [
    ("peft_loha:rank=2", ["peft_loha", "rank", "alpha"]),
    ("peft_vera:d_initial=nan", ["peft_vera's d_initial", "finite"]),
    ("peft_lokr:decompose_factor=0", ["peft_lokr's decompose_factor", "-1 or a positive integer"]),
    ("peft_lokr:decompose_both=1", ["decompose_both", "true or false"]),
    ("peft_vera:r=0", ["peft_vera's r", "positive integer"]),
])
def test_a_bad_peft_reference_row_is_one_line_before_any_work(spec, words, tmp_path, capsys, monkeypatch):
    from tnpeft.cli import main

    monkeypatch.setattr(comparison, "load_splits", lambda *a, **k: pytest.fail("data loaded before the check"))
    assert main(["compare", "--adapters", spec, "--out", str(tmp_path / "o"), "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tnpeft: error:") and "\n" not in err
    for w in words:
        assert w in err, (w, err)


def test_a_peft_row_peft_refuses_is_a_one_line_error(tmp_path, capsys):
    # peft's LoHa refuses GPT-2's Conv1D layers: said with the spec and the modules, no traceback
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tnpeft.cli import main
    from tnpeft.train.offline_assets import hamlet, minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=tok.vocab_size, n_positions=64)
                    ).save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    (tmp_path / "text.txt").write_text(hamlet()[:6000])
    argv = ["compare", "--model", str(tmp_path / "gpt2"), "--data", str(tmp_path / "text.txt"), "--adapters",
            "peft_loha:r=2", "--lrs", "1e-3", "--seeds", "0", "--steps", "2", "--max-length", "32", "--batch-size",
            "4", "--val-size", "4", "--test-size", "4", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(lines) == 1 and "Traceback" not in lines[0]
    err = lines[0][lines[0].index("tnpeft: error:"):]
    assert err.startswith("tnpeft: error: adapter spec 'peft_loha:r=2': peft refused it") and "c_attn" in err
    assert "Conv1D" in err and not list((tmp_path / "o").glob("cells/*/*/*/cell.json"))


def test_a_selected_cell_kept_without_weights_is_trained_again_for_its_test(tmp_path, monkeypatch):
    # the study keeps records, not weights: resuming from them, a selected cell whose test figure
    # is missing is retrained (same seed, same data order) and its validation matches the record
    _quick_cells(tmp_path, monkeypatch)
    kw = dict(model=str(tmp_path / "model"), data=str(tmp_path / "data.csv"), lrs=[1e-2], seeds=[0], steps=3,
              val_size=16, test_size=16, batch_size=8, max_length=8, target_modules=["query", "value"],
              out=tmp_path / "out", progress=False)
    specs = ["lora:r=2", "peft_lora:r=2"]
    first = compare(specs, **kw)
    import shutil

    for f in (tmp_path / "out").glob("cells/*/*/seed=0"):
        (f / "test.json").unlink()
        shutil.rmtree(f / "adapter", ignore_errors=True)
        (f / "peft_trainable.safetensors").unlink(missing_ok=True)
    trains = Counter(comparison.train_cell)
    monkeypatch.setattr(comparison, "train_cell", trains)
    again = compare(specs, **kw)
    assert len(trains.calls) == 2
    for a, b in zip(first["cells"], again["cells"]):
        drop = {"eval_seconds"}
        assert a["adapter"] == b["adapter"], a["adapter"]
        assert {k: v for k, v in a["test"].items() if k not in drop} == {k: v for k, v in b["test"].items()
                                                                          if k not in drop}
    for f in (tmp_path / "out").glob("cells/*/*/seed=0/test.json"):
        got = json.loads(f.read_text())
        assert got["retrained_val"]["val"] == got["retrained_val"]["recorded_val"]
    assert not any("retrained" in n for n in again["notes"])
