"""Copy a compare run's records — every ``cell.json`` and ``test.json``, the run's
``results.json`` and a causal LM's ``base.json`` — into a folder of the repository, without the adapters' weights, so that a long
study is kept as it progresses and continues from them (``tnpeft compare`` rereads the cells it
finds in its ``--out`` folder; copy the records back there to resume on another machine).

    python benchmarks/study/keep_records.py RUN_FOLDER DEST_FOLDER [--except FOLDER ...]

``--except`` leaves out a record that is a byte-for-byte copy of the same file under one of those
folders (a part that started from another part's records keeps only its own).
"""

from __future__ import annotations

import filecmp
import shutil
import sys
from pathlib import Path

KEEP = ("cell.json", "test.json", "results.json", "base.json")


def keep(run: Path, dest: Path, others: tuple[Path, ...] = ()) -> list[Path]:
    """Copy the JSON records of ``run`` under ``dest`` (same relative paths), except those equal to
    the same file under one of ``others``; the copied paths."""
    if not run.is_dir():
        raise SystemExit(f"{run} is not a folder of a compare run")
    for o in others:
        if not o.is_dir():
            raise SystemExit(f"--except {o}: not a folder of records")
    out = []
    for f in sorted(run.rglob("*.json")):
        rel = f.relative_to(run)
        if any((o / rel).is_file() and filecmp.cmp(o / rel, f, shallow=False) for o in others):
            continue
        if f.name in KEEP:
            target = dest / f.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
            out.append(target)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2 or args[2:3] not in ([], ["--except"]) or args[2:] == ["--except"]:
        raise SystemExit(__doc__)
    kept = keep(Path(args[0]), Path(args[1]), tuple(Path(a) for a in args[3:]))
    print(f"kept {len(kept)} records under {sys.argv[2]}")
