"""Every ``tnpeft.…`` name the docs and the README quote exists: a module, or an attribute reached
from the longest importable module prefix (``tnpeft.algebra.low_rank_factors``,
``tnpeft.GraphModule.dense``). Names in ``tnpeft …`` shell commands are not Python and are skipped."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
NAME = re.compile(r"(?<![\w./-])tnpeft(?:\.[A-Za-z_]\w*)+")


def quoted_names(path: Path) -> set[str]:
    text = path.read_text()
    names = set()
    for m in NAME.finditer(text):
        name = m.group(0)
        after = text[m.end():m.end() + 1]
        if after == "/" or name.endswith((".py", ".md", ".json", ".svg", ".png")):
            continue                                  # a file path, not a Python name
        names.add(name)
    return names


def resolve(name: str) -> object:
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)                  # AttributeError: the docs quote a name that does not exist
        return obj
    raise ModuleNotFoundError(name)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_tnpeft_name_exists(path):
    missing = []
    for name in sorted(quoted_names(path)):
        try:
            resolve(name)
        except (AttributeError, ModuleNotFoundError) as e:
            missing.append(f"{name} ({type(e).__name__}: {e})")
    assert not missing, f"{path.relative_to(ROOT)} quotes names that do not exist: {missing}"
