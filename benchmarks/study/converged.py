"""The converged classification study in one table and two pictures: every cell of the study's
parts whose test figure was read (their records, kept in docs/study), grouped by adapter at the
rate its part selected — test accuracy and macro-F1 as mean ± std over the seeds that ran, or ± the
test set's binomial standard error where one seed did — with the Pareto plot (test accuracy
against adapter parameters) and each row's curves.

    python benchmarks/study/converged.py FOLDER... [--markdown] [--pareto PNG] [--curves PNG]

Every folder must hold records of one training budget (model, data, splits, epochs, validation
schedule): parts run under another budget are refused, naming the file and the fields that differ.
The same cell copied into two parts (part 7 starts from the others' seed-0 records) counts once.

A row is one rate. A folder's ``results.json`` names the rate its grid selected for each adapter; a
test figure at another rate there is an earlier, narrower grid's choice and is left out. Where
folders selected different rates for one adapter — a later part widened its grid — the last folder
(in the order given) that holds a tested cell of it wins, and the rows that moved are said on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tnpeft.train.compare_setup import AdapterSpec
from tnpeft.train.comparison import summarize

_PER_CELL = ("lr", "seed")


def _selected(folder: Path) -> dict[str, float]:
    """The rate ``folder``'s own run selected for each adapter (its ``results.json``; none recorded
    where the run has not finished)."""
    f = folder / "results.json"
    if not f.is_file():
        return {}
    try:
        sel = json.loads(f.read_text())["selection"]
        return {label: float(s["lr"]) for label, s in sel.items() if s.get("lr") is not None}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SystemExit(f"{f}: not a compare run's results (its 'selection' maps each adapter to "
                         f"{{'lr': rate, ...}}): {e}") from None


def collect(folders: list[Path]) -> tuple[list[AdapterSpec], dict[tuple[str, float, int], dict[str, Any]],
                                          dict[str, dict[str, Any]], list[int], dict[str, Any], list[str]]:
    """The tested cells of ``folders``: (specs, cells keyed by (adapter, lr, seed), the selection
    — each adapter's tested rate —, the seeds, the shared budget, a line for each row whose rate a
    later folder moved)."""
    cells: dict[tuple[str, float, int], dict[str, Any]] = {}
    origin: dict[tuple[str, float, int], Path] = {}
    found: dict[str, dict[float, list[Path]]] = {}      # adapter → rate → folders holding its tested cells
    last: dict[str, tuple[float, Path]] = {}             # adapter → the latest folder's rate
    budget: dict[str, Any] | None = None
    budget_file: Path | None = None
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"{folder} is not a folder of compare records")
        chosen = _selected(folder)
        here_rates: dict[str, set[float]] = {}
        for f in sorted(folder.glob("cells/*/*/seed=*/cell.json")):
            if not (f.parent / "test.json").is_file():
                continue                      # a cell whose rate was not selected: no test figure
            rec = json.loads(f.read_text())
            if rec["adapter"] in chosen and float(rec["lr"]) != chosen[rec["adapter"]]:
                continue                      # tested under an earlier grid; this folder's run chose another rate
            test = json.loads((f.parent / "test.json").read_text())
            if test.get("config_hash") != rec["config_hash"]:
                raise SystemExit(f"{f.parent / 'test.json'}: its config_hash is not its cell.json's")
            here = {k: v for k, v in rec["config"].items() if k not in _PER_CELL}
            if budget is None:
                budget, budget_file = here, f
            elif here != budget:
                diff = sorted(k for k in set(here) | set(budget) if here.get(k) != budget.get(k))
                raise SystemExit(f"{f}: a different budget from {budget_file} in {', '.join(diff)} "
                                 f"({', '.join(f'{k}={here.get(k)!r} against {budget.get(k)!r}' for k in diff)})")
            key = (rec["adapter"], float(rec["lr"]), int(rec["seed"]))
            here_rates.setdefault(key[0], set()).add(key[1])
            if folder not in found.setdefault(key[0], {}).setdefault(key[1], []):
                found[key[0]][key[1]].append(folder)
            if key in cells:
                if cells[key]["config_hash"] != rec["config_hash"]:
                    raise SystemExit(f"{f} and {origin[key]}: the same cell {key} with different records")
                continue
            rec["test"] = test["test"]
            rec["dir"] = str(f.parent)
            cells[key], origin[key] = rec, f
        for label, lrs in here_rates.items():
            if len(lrs) > 1:
                raise SystemExit(f"{folder}: {label} has test figures at several rates {sorted(lrs)} and no "
                                 "results.json selection for it; a row is one selected rate")
            last[label] = (lrs.pop(), folder)
    if budget is None:
        raise SystemExit(f"no tested cells under {', '.join(map(str, folders))}")
    moved = []
    for label, (lr, _) in sorted(last.items()):
        older = {r: fs for r, fs in found[label].items() if r != lr}
        if older:
            moved.append(f"{label}: lr {lr:g} ({', '.join(map(str, found[label][lr]))}) replaces " + "; ".join(
                f"lr {r:g} ({', '.join(map(str, fs))})" for r, fs in sorted(older.items())))
    cells = {k: v for k, v in cells.items() if k[1] == last[k[0]][0]}
    first = {label: next(r for (lab, _, _), r in cells.items() if lab == label) for label in last}
    specs = sorted((AdapterSpec(label, r["name"], r["hparams"]) for label, r in first.items()),
                   key=lambda s: (-first[s.label]["adapter_parameters"], s.label))
    selection = {label: {"lr": lr, "edge": None} for label, (lr, _) in last.items()}
    seeds = sorted({s for _, _, s in cells})
    return specs, cells, selection, seeds, budget, moved


def rows(folders: list[Path]) -> tuple[list[dict[str, Any]], dict[tuple[str, float, int], dict[str, Any]],
                                       dict[str, Any], list[str]]:
    """``summarize``'s rows for the tested cells of ``folders``, the cells, the shared budget, and a
    line for each row a later folder moved to another rate."""
    specs, cells, selection, seeds, budget, moved = collect(folders)
    summary = summarize(specs, cells, selection, seeds, "accuracy", True, budget["test_size"])
    return summary["summary"], cells, budget, moved


_NAMES = {"lora": "LoRA", "quantum_peft": "QP", "mpo": "MPO", "loha": "LoHa", "lokr": "LoKr", "vera": "VeRA",
          "qwthn": "QWTHN", "qpa": "QPA"}


def short(label: str) -> str:
    """A row's name for a crowded plot: ``peft_lokr:r=8,alpha=8`` → ``peft LoKr r=8``,
    ``quantum_peft:rank=64,layers=1`` → ``QP K=64 L=1`` (alpha and presets left out)."""
    name, _, rest = label.partition(":")
    if rest and "=" not in rest:
        return label                                # module:function, or a graph file
    peft = name.startswith("peft_")
    base = name.removeprefix("peft_")
    hp = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
    if base == "quantum_peft":
        size = f"K={hp.get('rank', '?')} L={hp.get('layers', '?')}"
    else:
        size = f"r={hp['r']}" if "r" in hp else ""
    return " ".join(x for x in ("peft" if peft else "", _NAMES.get(base, base), size) if x)


def _pm(mean: float | None, std: float | None, se: float | None = None) -> str:
    if mean is None:
        return "—"
    if std is not None:
        return f"{mean:.4f} ± {std:.4f}"
    return f"{mean:.4f} (± {se:.4f} SE)" if se is not None else f"{mean:.4f}"


def markdown(table: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (± std over seeds; one seed: ± the binomial SE, marked)."""
    out = ["| adapter | adapter params | × LoRA r=8 | lr | seeds | test accuracy | test macro-F1 | "
           "val accuracy | step s | peak MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        ratio = r["params_vs_lora_r8"]
        cols = [r["adapter"], f"{r['adapter_parameters']:,}", "—" if ratio is None else f"{ratio:.3g}",
                f"{r['lr']:g}", str(r["seeds"]),
                _pm(r["test_accuracy_mean"], r["test_accuracy_std"], r["test_accuracy_se"]),
                _pm(r["test_macro_f1_mean"], r["test_macro_f1_std"]), _pm(r["val_accuracy_mean"], None),
                "—" if r["step_seconds"] is None else f"{r['step_seconds']:.2f}",
                "—" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"]
        out.append("| " + " | ".join(cols) + " |")
    return "\n".join(out)


def validation_points(rec: dict[str, Any]) -> list[tuple[int, float]]:
    """A cell's validation accuracy by step — its curve, plus its best value at ``best_step`` where
    the curve (in records written before the run's last evaluation joined it) does not hold it."""
    pts = {p["step"]: p["accuracy"] for p in rec.get("val_curve") or []}
    if rec.get("val") and rec.get("best_step") is not None and rec["best_step"] not in pts:
        pts[rec["best_step"]] = rec["val"]["accuracy"]
    return sorted(pts.items())


def plot_curves(table: list[dict[str, Any]], cells: dict[tuple[str, float, int], dict[str, Any]], path: Path) -> None:
    """One panel per row on shared axes: each seed's training loss (moving average over ~5 % of the
    steps) and its validation accuracy (dashed, right axis, one range for every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tnpeft.train.plots import moving_average, save_png

    cols = min(4, len(table))
    nrows = -(-len(table) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.7 * nrows + 0.9), sharex=True, sharey=True,
                             squeeze=False)
    vals = [v for (lab, lr, _), rec in cells.items() for _, v in validation_points(rec)]
    lo, hi = min(vals), max(vals)
    pad = 0.05 * (hi - lo or 1.0)
    twins = []
    for ax, r in zip(axes.flat, table):
        twin = ax.twinx()
        twin.set_ylim(lo - pad, hi + pad)
        twins.append(twin)
        for (label, lr, seed), rec in sorted(cells.items(), key=lambda kv: kv[0][2]):
            if label != r["adapter"] or lr != r["lr"]:
                continue
            losses = rec["train_loss"]
            line, = ax.plot(range(1, len(losses) + 1), moving_average(losses, max(1, len(losses) // 20)), lw=1.0,
                            label=f"seed {seed}")
            pts = validation_points(rec)
            twin.plot([s for s, _ in pts], [v for _, v in pts], ls="--", marker=".", ms=4, lw=1.0,
                      color=line.get_color())
        ax.set_title(f"{short(r['adapter'])} ({r['adapter_parameters']:,}, lr {r['lr']:g})", fontsize=9)
        ax.tick_params(labelsize=7)
        twin.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    most = max(axes.flat[:len(table)], key=lambda a: len(a.lines))
    fig.legend(*most.get_legend_handles_labels(), loc="upper right", fontsize=8, ncol=len(most.lines),
               title="each seed's colour, in every panel", title_fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss", fontsize=8)
    for i, ax in enumerate(axes.flat[:len(table)]):
        if i + cols >= len(table):                  # no panel below it: its own step axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("step", fontsize=8)
    for i, twin in enumerate(twins):
        if i % cols != cols - 1 and i != len(twins) - 1:
            twin.set_yticklabels([])
        else:
            twin.set_ylabel("validation accuracy (dashed)", fontsize=8)
    for ax in list(axes.flat)[len(table):]:
        ax.axis("off")
    fig.suptitle("training loss (solid, left axis) and validation accuracy (dashed, right axis) at each row's "
                 "selected rate;\nevery panel on the same scales", fontsize=10, x=0.4, y=0.99)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (2.7 * nrows + 0.9)))
    save_png(fig, path)


def main(argv: list[str]) -> None:
    args, opts = [], {"--pareto": None, "--curves": None}
    md, it = False, iter(argv)
    for a in it:
        if a == "--markdown":
            md = True
        elif a in opts:
            opts[a] = next(it, None)
            if opts[a] is None:
                raise SystemExit(f"{a} needs a file name")
        else:
            args.append(Path(a))
    if not args:
        raise SystemExit(__doc__)
    table, cells, budget, moved = rows(args)
    for line in moved:
        print(line, file=sys.stderr)
    if md:
        print(markdown(table))
    else:
        for r in table:
            print(f"{r['adapter']:40s} {r['adapter_parameters']:>9,}  seeds {r['seeds']}  "
                  f"test {_pm(r['test_accuracy_mean'], r['test_accuracy_std'], r['test_accuracy_se'])}")
    if opts["--pareto"] or opts["--curves"]:
        from tnpeft.train.pareto import plot_pareto

        if opts["--pareto"]:
            many = sorted({r["seeds"] for r in table})
            plot_pareto([{**r, "adapter": short(r["adapter"])} for r in table], Path(opts["--pareto"]), "accuracy", True, title=(
                f"{Path(str(budget['model'])).name} on {budget['data']}, {budget['epochs']} epochs of "
                f"{budget['train_size']:,} tweets: test accuracy vs adapter parameters\n(bars: " + (
                    f"std over the seeds of a row with {max(many)}; " if max(many) > 1 else "") +
                "the binomial standard error of a one-seed row; rates chosen on validation; QP = Quantum-PEFT)"))
        if opts["--curves"]:
            plot_curves(table, cells, Path(opts["--curves"]))


if __name__ == "__main__":
    main(sys.argv[1:])
