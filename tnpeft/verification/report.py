"""What :func:`tnpeft.verify` returns: one :class:`Check` per property, gathered in a
:class:`VerifyReport` that prints every figure beside the bound it is held to.

A line reads ``✓ name  quantity value relation bound``, the relation being the one that holds:
``✗ parameter_count  allocated 515 ≠ closed form 1,024``; a skipped check reads ``– name  skipped:
why``. Checks are grouped by the values they ran on: the values the adapter holds, then random
values (which test the topology), then the skipped ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

_NEGATE = {"≤": ">", "=": "≠", ">": "≤", "<": "≥", "≥": "<"}


def _fmt(v: float | int | None) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.3g}"


@dataclass
class Check:
    """One check's outcome.

    Attributes:
        name: e.g. ``orthogonality:U`` (``<check>:<node>`` for per-node checks).
        passed: ``True`` / ``False``, or ``None`` when the check was skipped (``message`` says why).
        value: the measured figure; ``threshold``: the bound it is held to.
        relation: how ``value`` must compare with ``threshold`` to pass (``"≤"``, ``"="``, ``">"``).
        quantity: what ``value`` measures (``"max|UᵀU − I|"``); ``bound``: what ``threshold`` is
            (``"tol"``, ``"closed form"``); ``unit``: of both, if any.
        values: ``"held"`` (the values the graph, module or saved adapter holds) or ``"random"``
            (random values for every trainable tensor: properties of the topology).
        module: the module path the values come from (``""`` for a single graph).
        message: what went wrong (or why it was skipped), in words.
    """

    name: str
    passed: bool | None
    value: float | int | None = None
    threshold: float | int | None = None
    message: str = ""
    relation: str = "≤"
    quantity: str = ""
    bound: str = ""
    unit: str = ""
    values: str = "held"
    module: str = ""

    @property
    def skipped(self) -> bool:
        return self.passed is None

    def figure(self) -> str:
        """``quantity value relation bound threshold unit``, with the relation that holds."""
        if self.skipped:
            return f"skipped: {self.message}"
        rel = self.relation if self.passed else _NEGATE.get(self.relation, "≠")
        parts = [self.quantity, _fmt(self.value)]
        if self.threshold is not None:
            parts += [rel, self.bound, _fmt(self.threshold)]
        text = " ".join(p for p in parts if p)
        return f"{text} {self.unit}".rstrip() if self.unit else text

    def line(self) -> str:
        mark = "–" if self.skipped else "✓" if self.passed else "✗"
        extra = f"  ({self.message})" if self.message and not self.skipped and not self.passed else ""
        return f"{mark} {self.name}  {self.figure()}{extra}"


@dataclass
class VerifyReport:
    """All checks of one source. ``report.ok`` is True when no check failed (skipped ones do not count)."""

    graph: str
    checks: list[Check] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    #: the modules whose graphs share one structure, by the module the random checks ran on
    structures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.passed is not False for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    @property
    def skipped(self) -> list[Check]:
        """The checks that did not apply, once each (a check skipped on held and on random values
        for the same reason is listed once)."""
        seen, out = set(), []
        for c in self.checks:
            if c.passed is None and (c.name, c.message, c.module) not in seen:
                seen.add((c.name, c.message, c.module))
                out.append(c)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"graph": self.graph, "ok": self.ok, "modules": self.modules, "structures": self.structures,
                "passed": sum(c.passed is True for c in self.checks), "failed": len(self.failures),
                "skipped": len(self.skipped),
                "checks": [{**asdict(c), "line": c.line()} for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str, allow_nan=True)

    def __str__(self) -> str:
        n_ok = sum(c.passed is True for c in self.checks)
        head = (f"verify {self.graph}: {'OK' if self.ok else 'FAILED'} — {n_ok} passed, {len(self.failures)} failed, "
                f"{len(self.skipped)} skipped")
        lines = [head]
        many = len(self.modules) > 1
        groups = (("held", "the values it holds"),
                  ("random", "random values (the topology; gradients of L = ⟨y, t⟩ for random x and t)"))
        for values, title in groups:
            for mod in (self.modules or [""]):
                checks = [c for c in self.checks if c.values == values and c.module == mod and not c.skipped]
                if not checks:
                    continue
                like = len(self.structures.get(mod, [])) - 1
                where = "" if not many else f" — module {mod}" if values == "held" or not like else \
                    f" — module {mod} and {like} more of its structure"
                if many and values == "held" and all(c.passed for c in checks):
                    lines.append(f"  ✓ {title}{where}: all {len(checks)} checks passed")
                    continue
                lines.append(f"  {title}{where}")
                lines += [f"    {c.line()}" for c in checks]
        skipped = self.skipped
        if skipped:
            lines.append("  skipped")
            lines += [f"    – {c.name}  {c.message}" + (f" (module {c.module})" if many else "") for c in skipped]
        return "\n".join(lines)
