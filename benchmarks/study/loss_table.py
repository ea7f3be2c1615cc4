"""The training loss and validation figure of every cell of a compare run at the same steps: the
mean training loss over each stretch between two validations (``--eval-every``) and the
validation figure at its end, one row per cell — for comparing adapters "over the same steps".

    python benchmarks/study/loss_table.py RUN_FOLDER [--markdown] [--plot PNG]

``--plot`` draws every cell on shared axes: the training loss (trailing mean over 5 % of the run)
and the validation figure against the step. A cell that blows up does not flatten the others: an
axis leaves out the values above both twice the median and the median plus ten median absolute
deviations of what it draws, and a cell with a value left out says so in its legend entry.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path


def rows(run: Path) -> list[tuple[str, float, list[tuple[int, float, float | None]]]]:
    """(adapter, lr, [(end step, mean training loss over the stretch, validation figure at it)])."""
    out = []
    for f in sorted(run.glob("cells/*/*/seed=*/cell.json")):
        rec = json.loads(f.read_text())
        losses, curve = rec["train_loss"], rec.get("val_curve") or []
        key = "accuracy" if rec["config"]["task"] == "classification" else "perplexity"
        val = {p["step"]: p[key] for p in curve}
        if rec.get("val") and len(losses) not in val and not rec.get("stopped_early_at"):
            val[len(losses)] = rec["val"][key]            # the end of the run (evaluated, not on the curve)
        ends = sorted(val) or [len(losses)]
        start, stretch = 0, []
        for end in ends:
            if end > start:
                stretch.append((end, statistics.fmean(losses[start:end]), val.get(end)))
            start = end
        out.append((rec["adapter"], rec["lr"], stretch))
    return out


def axis_range(values: list[float]) -> tuple[float, float] | None:
    """The range an axis drawing ``values`` should show so that a cell that blew up does not flatten
    the rest, or ``None`` when nothing needs leaving out. A value is left out when it is not finite or
    above both twice the median and the median plus ten median absolute deviations (robust with the
    few points of a validation curve, where quartiles are not)."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    median = statistics.median(finite)
    mad = statistics.median(abs(v - median) for v in finite)
    cut = max(median + 10 * mad, 2 * median)
    kept = [v for v in finite if v <= cut]
    if len(kept) == len(values):
        return None
    pad = 0.05 * ((kept[-1] - kept[0]) or abs(kept[-1]) or 1.0)
    return kept[0] - pad, kept[-1] + pad


def plot(run: Path, path: Path) -> None:
    """Training loss and validation figure of every cell of ``run`` on shared axes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tnpeft.train.plots import moving_average, save_png

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    key = "validation figure"
    cells = []
    for f in sorted(run.glob("cells/*/*/seed=*/cell.json")):
        rec = json.loads(f.read_text())
        losses = rec["train_loss"]
        smooth = moving_average(losses, max(1, len(losses) // 20))
        key = "accuracy" if rec["config"]["task"] == "classification" else "perplexity"
        pts = {p["step"]: p[key] for p in rec.get("val_curve") or []}
        if rec.get("val") and len(losses) not in pts and not rec.get("stopped_early_at"):
            pts[len(losses)] = rec["val"][key]
        cells.append((rec, smooth, pts))
    ranges = [axis_range([v for _, smooth, _ in cells for v in smooth]),
              axis_range([v for _, _, pts in cells for v in pts.values()])]
    for i, (rec, smooth, pts) in enumerate(cells):
        color = plt.get_cmap("tab10")(i % 10)
        label = f"{rec['adapter']} ({rec['adapter_parameters']:,} params, lr {rec['lr']:g})"
        drawn = [list(smooth), list(pts.values())]
        if any(r is not None and not all(r[0] <= v <= r[1] for v in vals) for r, vals in zip(ranges, drawn)):
            label += " — leaves the axis"
        left.plot(range(1, len(smooth) + 1), smooth, color=color, lw=1.2, label=label)
        steps = sorted(pts)
        right.plot(steps, [pts[s] for s in steps], "o-", color=color, ms=4, lw=1.2, label=label)
    left.set(xlabel="step", ylabel="training loss (trailing mean over 5 % of the run)")
    right.set(xlabel="step", ylabel=f"validation {key}")
    for ax, r in zip((left, right), ranges):
        ax.grid(True, alpha=0.3)
        if r is not None:
            ax.set_ylim(*r)
    left.legend(fontsize=8)
    fig.suptitle(f"{run.name}: every cell over the same steps", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str]) -> int:
    if not argv or not Path(argv[0]).is_dir():
        print(__doc__)
        return 2
    md = "--markdown" in argv
    if "--plot" in argv:
        i = argv.index("--plot")
        if i + 1 >= len(argv):
            print("--plot needs a file name (a .png)")
            return 2
        plot(Path(argv[0]), Path(argv[i + 1]))
        print(f"wrote {argv[i + 1]}")
    for adapter, lr, stretch in rows(Path(argv[0])):
        cells = [f"{loss:.3f}" + ("" if v is None else f" / {v:.4g}") for _, loss, v in stretch]
        steps = ", ".join(str(e) for e, _, _ in stretch)
        if md:
            print(f"| {adapter} | {lr:g} | " + " | ".join(cells) + " |")
        else:
            print(f"{adapter}  lr={lr:g}  steps {steps}:  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
