"""The training loss and validation figure of every cell of a compare run at the same steps: the
mean training loss over each stretch between two validations (``--eval-every``) and the
validation figure at its end, one row per cell — for comparing adapters "over the same steps".

    python benchmarks/study/loss_table.py RUN_FOLDER [--markdown]
"""

from __future__ import annotations

import json
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


def main(argv: list[str]) -> int:
    if not argv or not Path(argv[0]).is_dir():
        print(__doc__)
        return 2
    md = "--markdown" in argv
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
