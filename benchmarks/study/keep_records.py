"""Copy a compare run's records — every ``cell.json`` and ``test.json``, the run's
``results.json`` and a causal LM's ``base.json`` — into a folder of the repository, without the adapters' weights, so that a long
study is kept as it progresses and continues from them (``tnpeft compare`` rereads the cells it
finds in its ``--out`` folder; copy the records back there to resume on another machine).

    python benchmarks/study/keep_records.py RUN_FOLDER DEST_FOLDER
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = ("cell.json", "test.json", "results.json", "base.json")


def keep(run: Path, dest: Path) -> list[Path]:
    """Copy the JSON records of ``run`` under ``dest`` (same relative paths); the copied paths."""
    if not run.is_dir():
        raise SystemExit(f"{run} is not a folder of a compare run")
    out = []
    for f in sorted(run.rglob("*.json")):
        if f.name in KEEP:
            target = dest / f.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
            out.append(target)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    kept = keep(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"kept {len(kept)} records under {sys.argv[2]}")
