"""Training curves as PNG files (written atomically)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnpeft.fileio import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def moving_average(xs: list[float], k: int) -> list[float]:
    """Trailing means over up to ``k`` values."""
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def save_png(fig: Figure, path: Path) -> None:
    """Write a matplotlib figure as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: dict[str, Any], path: Path, title: str = "") -> None:
    """Training loss (with a moving average) and the evaluation metric against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    losses = history["train_loss"]
    evals = history["eval"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = list(range(1, len(losses) + 1))
    axes[0].plot(steps, losses, color="#BBBBBB", lw=0.8, label="loss")
    k = max(1, len(losses) // 20)
    axes[0].plot(steps, moving_average(losses, k), color="#4C72B0", lw=1.6, label=f"moving average ({k})")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=8)
    if evals:
        keys = [m for m in ("accuracy", "macro_f1", "loss") if m in evals[0]]
        for m in keys:
            axes[1].plot([e["step"] for e in evals], [e[m] for e in evals], marker="o", label=m)
        axes[1].set_ylabel("held-out metric")
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
