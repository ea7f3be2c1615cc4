"""The figures and the table of a comparison: the Pareto plot (test metric against trainable
parameters, log x, error bars, the front highlighted), the training curves of the selected cells,
and the printed table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnpeft.train.plots import moving_average, save_png

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: a label's or a mark's box on the canvas, pixels: x0, y0, x1, y1
_Box = tuple[float, float, float, float]

# label offsets tried in turn (points), nearest first: the first that overlaps no label, point or bar wins
_OFFSETS = [(7, 6), (7, -12), (-7, 6), (-7, -12), (7, 16), (7, -22), (-7, 16), (-7, -22), (0, 26), (0, -32),
            (14, 30), (14, -36), (-14, 30), (-14, -36)]


def pareto_front(points: list[tuple[float, float]], maximize: bool = True) -> list[int]:
    """Indices of the points no other point beats: fewer (or as many) parameters and a better (or
    equal) metric, one of the two strictly."""
    sign = 1 if maximize else -1
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and sign * y2 >= sign * y) and (x2 < x or sign * y2 > sign * y)
                   for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def _place_labels(ax: Axes, fig: Figure, xs: list[float], ys: list[float], es: list[float], labels: list[str],
                  colors: list[str],
                  segments: Sequence[tuple[tuple[float, float], tuple[float, float]]] = ()) -> None:
    """Write each label next to its point where it overlaps no point, error bar, line segment (data
    coordinates, e.g. the Pareto front's steps) or label written before (greedy)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # matplotlib: on the Agg canvas only
    taken = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    boxes = [(px - 5, py - 5, px + 5, py + 5) for px, py in taken]
    for x, y, e in zip(xs, ys, es):
        (x0, y0), (x1, y1) = ax.transData.transform((x, y - e)), ax.transData.transform((x, y + e))
        boxes.append((x0 - 4, y0, x1 + 4, y1))
    for a, b in segments:
        (x0, y0), (x1, y1) = ax.transData.transform(a), ax.transData.transform(b)
        boxes.append((min(x0, x1) - 1, min(y0, y1) - 1, max(x0, x1) + 1, max(y0, y1) + 1))
    axbox = ax.get_window_extent(r)
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i]))
    for i in order:
        tried: list[tuple[_Box, bool]] = []
        for dx, dy in _OFFSETS:
            t = _annotate(ax, labels[i], xs[i], ys[i], dx, dy, colors[i])
            bb = t.get_window_extent(r)
            t.remove()
            inside = bb.x0 >= axbox.x0 and bb.x1 <= axbox.x1 and bb.y0 >= axbox.y0 and bb.y1 <= axbox.y1
            tried.append(((bb.x0, bb.y0, bb.x1, bb.y1), inside))
            if inside and not any(_overlaps(tried[-1][0], b) for b in boxes):
                break
        k = _choose(tried, boxes)
        _annotate(ax, labels[i], xs[i], ys[i], *_OFFSETS[k], colors[i])
        boxes.append(tried[k][0])


def _annotate(ax: Axes, label: str, x: float, y: float, dx: float, dy: float, color: str) -> Any:
    return ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, color=color,
                       ha="left" if dx >= 0 else "right",
                       arrowprops=dict(arrowstyle="-", color="#999999", lw=0.5) if abs(dy) > 16 else None)


def _overlaps(a: _Box, b: _Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _choose(tried: list[tuple[_Box, bool]], boxes: list[_Box]) -> int:
    """Which of the label places ``tried`` (its box, whether it lies inside the axes) to use: the first
    inside one that overlaps nothing in ``boxes``; else the inside one (or, with none inside, any one)
    that covers the least of them, each box counted at least a pixel wide and high (an error bar of
    zero height still counts)."""
    for k, (box, inside) in enumerate(tried):
        if inside and not any(_overlaps(box, b) for b in boxes):
            return k

    def covered(box: _Box) -> float:
        area = 0.0
        for b in boxes:
            bx0, by0 = min(b[0], b[2] - 1), min(b[1], b[3] - 1)
            w = min(box[2], b[2]) - max(box[0], bx0)
            h = min(box[3], b[3]) - max(box[1], by0)
            area += max(0.0, w) * max(0.0, h)
        return area

    pool = [k for k, (_, inside) in enumerate(tried) if inside] or list(range(len(tried)))
    return min(pool, key=lambda k: (covered(tried[k][0]), k))


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` characters (a title wider than the figure is cut off)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) if line else line for line in text.split("\n"))


def _x_label(rows: list[dict[str, Any]]) -> str:
    """The x axis counts adapter parameters only; say what else every row trains, if anything."""
    heads = {int(r.get("head_parameters") or 0) for r in rows}
    if heads == {0}:
        return "trainable adapter parameters (log scale)"
    if len(heads) == 1:
        return f"trainable adapter parameters (log scale; every row also trains the task head, {heads.pop():,})"
    return "trainable adapter parameters (log scale; the rows' task heads are not counted)"


def plot_pareto(rows: list[dict[str, Any]], path: Path, metric: str = "accuracy", maximize: bool = True,
                title: str = "", caption: str | None = None, reference: tuple[str, float] | None = None) -> None:
    """Test ``metric`` (``test_<metric>_mean`` ± ``test_<metric>_std``, or ± the binomial standard
    error ``test_<metric>_se`` where one seed gives no spread) against ``adapter_parameters``
    for every row, log x; the Pareto front drawn as a step line, its points filled. ``reference``
    (label, value) is drawn as a dotted horizontal line (e.g. the model without an adapter)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get(f"test_{metric}_mean") is not None]
    fig, ax = plt.subplots(figsize=(8.5, 5.4))
    if not rows:
        ax.text(0.5, 0.5, "no adapter has test results (every learning rate diverged?)", ha="center",
                transform=ax.transAxes)
        save_png(fig, path)
        return
    xs = [max(1, r["adapter_parameters"]) for r in rows]
    ys = [r[f"test_{metric}_mean"] for r in rows]
    # the spread over seeds; with one seed, the test set's binomial standard error (accuracy)
    es = [r[f"test_{metric}_std"] if r.get(f"test_{metric}_std") is not None else r.get(f"test_{metric}_se") or 0.0
          for r in rows]
    front = set(pareto_front(list(zip(xs, ys)), maximize))
    cmap = plt.get_cmap("tab10")
    colors = [matplotlib.colors.to_hex(cmap(i % 10)) for i in range(len(rows))]
    for i in range(len(rows)):
        ax.errorbar(xs[i], ys[i], yerr=es[i], fmt="o" if i in front else "o", ms=7, capsize=3, color=colors[i],
                    mfc=colors[i] if i in front else "white", mew=1.6, zorder=3)
    f = sorted(front, key=lambda i: xs[i])
    # the step line's pieces: along from each front point to the next one's x, then up or down to it
    steps = [seg for a, b in zip(f, f[1:]) for seg in (((xs[a], ys[a]), (xs[b], ys[a])),
                                                       ((xs[b], ys[a]), (xs[b], ys[b])))]
    if len(f) > 1:
        ax.step([xs[i] for i in f], [ys[i] for i in f], where="post", color="#333333", lw=1, ls="--", zorder=2,
                label="Pareto front (filled points)")
    else:
        ax.plot([], [], ls="--", color="#333333", label="Pareto front (filled points)")
    ax.set_xscale("log")
    lo, hi = min(xs), max(xs)
    ax.set_xlim(lo / 2.2, hi * 3.5)
    ymin, ymax = min(y - e for y, e in zip(ys, es)), max(y + e for y, e in zip(ys, es))
    if reference is not None and math.isfinite(reference[1]):
        # drawn where it does not squash the rows' differences flat; else named in the legend only
        ref, span = reference[1], max(ymax - ymin, 1e-3)
        if ymin - 2 * span <= ref <= ymax + 2 * span:
            ax.axhline(ref, color="#777777", ls=":", lw=1.2, zorder=1, label=f"{reference[0]}: {ref:.4g}")
            ymin, ymax = min(ymin, ref), max(ymax, ref)
        else:
            ax.plot([], [], ls=":", color="#777777",
                    label=f"{reference[0]}: {ref:.4g} ({'above' if ref > ymax else 'below'} the axis)")
    pad = max(ymax - ymin, 1e-3) * 0.25
    ax.set_ylim(ymin - pad, ymax + pad)
    ax.set_xlabel(_x_label(rows))
    ax.set_ylabel(f"test {metric}" + (" (higher is better)" if maximize else " (lower is better)"))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right" if maximize else "upper right")
    ax.set_title(_wrap(title, 100), fontsize=10)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=7.5, color="#444444", ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if caption else 0, 1, 1))
    _place_labels(ax, fig, xs, ys, es, [r["adapter"] for r in rows], colors, steps)
    save_png(fig, path)


def plot_compare_curves(rows: list[dict[str, Any]], cells: dict[tuple[str, float, int], dict[str, Any]],
                        path: Path) -> None:
    """One panel per adapter: the training loss (moving average) of each seed at the selected rate,
    and — where the cells recorded one (``--eval-every``) — the validation curve on a second axis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = max(1, len(rows))
    cols = min(3, n)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, rows):
        val_ax = None
        for (label, lr, seed), rec in sorted(cells.items(), key=lambda kv: kv[0][2]):
            if label == r["adapter"] and lr == r["lr"] and rec.get("train_loss"):
                losses = rec["train_loss"]
                k = max(1, len(losses) // 20)
                line, = ax.plot(range(1, len(losses) + 1), moving_average(losses, k), lw=1.2, label=f"seed {seed}")
                curve = rec.get("val_curve") or []
                if curve:
                    val_ax = val_ax or ax.twinx()
                    key = "accuracy" if "accuracy" in curve[0] else "perplexity"
                    val_ax.plot([c["step"] for c in curve], [c[key] for c in curve], ls="--", marker=".", ms=4,
                                lw=1.0, color=line.get_color())
                    val_ax.set_ylabel(f"validation {key} (dashed)", fontsize=8)
                    val_ax.tick_params(labelsize=7)
        ax.set_title(f"{r['adapter']}  (lr {r['lr']:g})" if r["lr"] is not None else f"{r['adapter']} (diverged)",
                     fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("training loss", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle("training loss at the selected learning rate (moving average over ~5 % of the steps)",
                 fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
