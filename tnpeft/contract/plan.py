"""Plan once, run many times.

A :class:`ContractionPlan` is built from the operands' index tuples, the output's index tuple and
the sizes of the indices. cotengra chooses the pairwise order (for LoRA-shaped networks it
contracts ``x·A`` first and never forms ``A·B``); the plan then stores one small ``torch.einsum``
equation per pairwise step, so running it does no parsing and no path search.

Plans are cached process-wide in a bounded table (:mod:`tnpeft.caches`, group ``"plans"``),
keyed canonically: index names renamed in order of appearance, sizes, dtype and device, and the
optimizer by its settings. A cached plan holds no caller's names: :func:`plan_for` returns a
:class:`PlanView` that adds the caller's operand and index names for printing.
:func:`plan_stats` reports how often the cache was hit and how long planning took. The cotengra
contraction tree stays on the plan (``plan.tree``) for inspection and plotting
(``plan.tree.plot_tent()``, ``plan.tree.print_contractions()``).
"""

from __future__ import annotations

import string
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, NamedTuple, Sequence

import torch

from tnpeft.caches import lru_table
from tnpeft.contract.kernels import as_matrix, autocast_operands, linear_orientation, pair_kernel, unary_kernel
from tnpeft.errors import ConfigError, GraphError

_SYMBOLS = string.ascii_letters  # torch.einsum accepts only [a-zA-Z]


def _display_symbol(k: int) -> str:
    """The ``k``-th symbol of a printed equation: letters, then other Unicode letters."""
    return _SYMBOLS[k] if k < len(_SYMBOLS) else chr(0x100 + k - len(_SYMBOLS))


@dataclass
class PlanStats:
    """Counters of the process-wide plan cache."""

    plans_built: int = 0
    cache_hits: int = 0
    planning_seconds: float = 0.0

    @property
    def hit_rate(self) -> float:
        total = self.plans_built + self.cache_hits
        return self.cache_hits / total if total else 1.0

    def count_hit(self) -> None:
        """Record a plan reused without a cache look-up (a module's kept plan)."""
        self.cache_hits += 1

    def as_dict(self) -> dict[str, float]:
        return {"plans_built": self.plans_built, "cache_hits": self.cache_hits,
                "planning_seconds": self.planning_seconds, "hit_rate": self.hit_rate}


_STATS = PlanStats()
_CACHE = lru_table("plans")


def plan_stats() -> PlanStats:
    """The live counters of the plan cache (plans built, cache hits, seconds spent planning)."""
    return _STATS


def count_cache_hit() -> None:
    """Record that a caller reused a plan it kept (counted as a cache hit). Not counted while
    ``torch.compile`` traces: a compiled graph must not guard on a global counter."""
    if not torch.compiler.is_compiling():
        _STATS.count_hit()


def reset_plan_cache() -> None:
    """Forget every cached plan and zero the counters."""
    _CACHE.clear()
    _STATS.plans_built = 0
    _STATS.cache_hits = 0
    _STATS.planning_seconds = 0.0


class PlanStep(NamedTuple):
    """One pairwise step: contract operands ``i`` and ``j`` of the shrinking operand list (the result
    goes to its end) with ``kernel``; ``equation`` is the step as a printable einsum."""

    i: int
    j: int
    equation: str
    kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def order_label(path: Sequence[tuple[int, int]], names: Sequence[str]) -> str:
    """The pairwise order as a bracketed expression of operand names, e.g. ``(B·(x·A))``."""
    labels = list(names)
    for i, j in path:
        label = f"({labels[i]}·{labels[j]})"
        for k in sorted((i, j), reverse=True):
            del labels[k]
        labels.append(label)
    return labels[0] if labels else ""


class ContractionPlan:
    """A planned contraction of named operands.

    Args:
        inputs: one index tuple per operand.
        output: the output's index tuple (each index must occur in some input).
        size_dict: index name → size.
        names: optional operand names, used when printing.
        optimize: a cotengra ``optimize`` preset (``"auto"``, ``"greedy"``, ``"optimal"``, …) or
            optimizer object (e.g. ``cotengra.HyperOptimizer(...)``).

    Attributes:
        path: the pairwise order, as positions in the shrinking operand list (opt_einsum style).
        tree: cotengra's ``ContractionTree`` (``None`` for a single operand): its ``print_contractions``,
            ``contraction_width``, ``plot_*`` methods work on it.
        flops: cotengra's floating-point operation count for the planned sizes.
        largest_intermediate: number of elements of the largest intermediate tensor.
    """

    def __init__(self, inputs: Sequence[Sequence[str]], output: Sequence[str], size_dict: Mapping[str, int],
                 names: Sequence[str] | None = None, optimize: object = "auto"):
        self.inputs = tuple(tuple(i) for i in inputs)
        self.output = tuple(output)
        self.size_dict = dict(size_dict)
        self.names = tuple(names) if names is not None else tuple(f"T{i}" for i in range(len(self.inputs)))
        self.optimize = optimize
        all_inds = list(dict.fromkeys(i for t in self.inputs for i in t))
        missing = [i for i in self.output if i not in all_inds]
        if missing:
            raise GraphError(f"the output index {missing[0]!r} occurs in no operand", index=missing[0])
        # display symbols only: every pairwise step maps its own indices to einsum letters, so a
        # network may have any number of distinct indices
        self._sym = {ind: _display_symbol(k) for k, ind in enumerate(all_inds)}

        if len(self.inputs) > 1:
            import cotengra as ctg

            try:
                tree = ctg.array_contract_tree(list(self.inputs), self.output, self.size_dict, optimize=optimize)
            except (KeyError, ImportError, ValueError, TypeError) as e:  # an unknown preset, a missing backend
                raise ConfigError(f"the contraction optimizer {optimize!r} cannot plan this network: "
                                  f"{type(e).__name__}: {e}", field="optimize") from None
            self.tree = tree
            self.path = tuple(tuple(p) for p in tree.get_path())
            self.flops = int(tree.total_flops())
            self.largest_intermediate = int(tree.max_size())
        else:
            self.tree = None
            self.path = ()
            self.flops = 0
            self.largest_intermediate = 0

        ops = list(self.inputs)
        steps: list[PlanStep] = []
        for i, j in self.path:
            a, b = ops[i], ops[j]
            rest = [o for k, o in enumerate(ops) if k not in (i, j)]
            keep = set(self.output).union(*rest) if rest else set(self.output)
            if rest:
                # the larger operand's layout first: keeps the batch-bearing intermediate in place
                first, second = (b, a) if len(b) > len(a) else (a, b)
                out = tuple(dict.fromkeys(ind for ind in first + second if ind in keep))
            else:  # the last step writes the output's index order directly: no transpose after
                out = self.output
            eq = f"{self._s(a)},{self._s(b)}->{self._s(out)}"
            steps.append(PlanStep(i, j, eq, pair_kernel(a, b, out)))
            for k in sorted((i, j), reverse=True):
                del ops[k]
            ops.append(out)
        self._final = None if ops[0] == self.output else unary_kernel(ops[0], self.output)
        self.steps = tuple(steps)
        self.order = order_label(self.path, self.names)
        # whether the last pairwise step is one matrix product that can accumulate into an output
        self._last_linear = linear_orientation(*last) if (last := self._last_operands()) else None

    def _last_operands(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None:
        if not self.path or self._final is not None:
            return None
        ops = list(self.inputs)
        for i, j in self.path[:-1]:
            a, b = ops[i], ops[j]
            rest = [o for k, o in enumerate(ops) if k not in (i, j)]
            keep = set(self.output).union(*rest) if rest else set(self.output)
            first, second = (b, a) if len(b) > len(a) else (a, b)
            for k in sorted((i, j), reverse=True):
                del ops[k]
            ops.append(tuple(dict.fromkeys(ind for ind in first + second if ind in keep)))
        i, j = self.path[-1]
        return ops[i], ops[j], self.output

    def accumulate(self, out: torch.Tensor, *arrays: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """``out + alpha · contract(arrays)``. When the last pairwise step is one matrix product
        (LoRA's ``h·Bᵀ``, Quantum-PEFT's ``(h·Λ)·Uᵀ``) it is one ``addmm`` with ``out`` as its
        addend — no output-sized temporary, no separate scale and add — written into ``out`` in
        place when no gradient is recorded (in place under autograd would make the backward copy
        ``out``'s base). ``out`` must then be the 2-D ``(rows, features)`` view of the result.
        Otherwise the contraction is added. Returns the sum (``out`` itself when in place)."""
        if self._last_linear is None or out.dim() != 2:
            return out + alpha * self(*arrays).reshape(out.shape)
        ops = self._run_steps(autocast_operands(arrays), self.steps[:-1])
        i, j = self.steps[-1].i, self.steps[-1].j
        first, p1, p2, n1 = self._last_linear
        x, y = (ops[i], ops[j]) if first == "a" else (ops[j], ops[i])
        m1 = as_matrix(x, p1, n1)
        m2 = as_matrix(y, p2, x.dim() - n1)
        if m1.shape[0] * m2.shape[1] != out.numel() or not out.is_contiguous():
            return out + alpha * (m1 @ m2).reshape(out.shape)
        target = out.view(m1.shape[0], m2.shape[1])                       # out + m1 · m2
        if torch.is_grad_enabled():
            return torch.addmm(target, m1, m2, alpha=alpha).view(out.shape)
        target.addmm_(m1, m2, alpha=alpha)
        return out

    def _s(self, inds: Sequence[str]) -> str:
        return "".join(self._sym[i] for i in inds)

    @property
    def equation(self) -> str:
        """The whole network as one einsum equation."""
        return ",".join(self._s(t) for t in self.inputs) + "->" + self._s(self.output)

    @staticmethod
    def _run_steps(ops: list[torch.Tensor], steps: Sequence[PlanStep]) -> list[torch.Tensor]:
        """Run pairwise ``steps`` on the operand list (each step's two operands replaced by its
        result at the end); returns the list."""
        for i, j, _, kernel in steps:
            a, b = ops[i], ops[j]
            if i > j:
                del ops[i], ops[j]
            else:
                del ops[j], ops[i]
            ops.append(kernel(a, b))
        return ops

    def __call__(self, *arrays: torch.Tensor) -> torch.Tensor:
        out = self._run_steps(autocast_operands(arrays), self.steps)[0]
        if self._final is not None:
            out = self._final(out)
        return out

    def __repr__(self) -> str:
        return (f"ContractionPlan({self.equation}, order={self.order}, flops={self.flops:,}, "
                f"largest_intermediate={self.largest_intermediate:,})")

    def describe(self, names: Sequence[str] | None = None,
                 inputs: Sequence[Sequence[str]] | None = None) -> str:
        """A multi-line human-readable account of the plan (with other operand ``names`` and index
        tuples ``inputs`` for its operands, if given)."""
        names = self.names if names is None else names
        inputs = self.inputs if inputs is None else inputs
        lines = [f"einsum      {self.equation}",
                 "operands    " + ", ".join(f"{n}[{','.join(t)}]" for n, t in zip(names, inputs)),
                 f"order       {order_label(self.path, names)}",
                 f"flops       {self.flops:,}",
                 f"largest intermediate  {self.largest_intermediate:,} elements"]
        for k, step in enumerate(self.steps):
            lines.append(f"  step {k}: {step.equation}")
        return "\n".join(lines)


class PlanView:
    """A cached (shared) :class:`ContractionPlan` seen by one caller: with the caller's operand
    names, index names and optimizer. Calling it runs the plan; other attributes are the plan's."""

    __slots__ = ("plan", "names", "inputs", "output", "optimize")

    def __init__(self, plan: ContractionPlan, names: Sequence[str], inputs: tuple[tuple[str, ...], ...],
                 output: tuple[str, ...], optimize: object):
        self.plan, self.names, self.inputs, self.output, self.optimize = plan, tuple(names), inputs, output, optimize

    def __call__(self, *arrays: torch.Tensor) -> torch.Tensor:
        return self.plan(*arrays)

    def accumulate(self, out: torch.Tensor, *arrays: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        return self.plan.accumulate(out, *arrays, alpha=alpha)

    @property
    def order(self) -> str:
        return order_label(self.plan.path, self.names)

    def describe(self) -> str:
        return self.plan.describe(self.names, self.inputs)

    def __getattr__(self, name: str) -> Any:
        if name in PlanView.__slots__:      # not set yet (copying, unpickling): no recursion through plan
            raise AttributeError(name)
        return getattr(self.plan, name)

    def __repr__(self) -> str:
        return f"PlanView({self.order}, flops={self.plan.flops:,}, of {self.plan!r})"


def check_optimizer(optimize: object) -> None:
    """Raise :class:`ConfigError` (field ``optimize``) unless cotengra can plan with ``optimize``
    (tried on a three-operand chain, so that a typo fails when the adapter is configured)."""
    ContractionPlan([("a", "b"), ("b", "c"), ("c", "d")], ("a", "d"), {"a": 2, "b": 3, "c": 4, "d": 5},
                    optimize=optimize)


def _plain_setting(value: object) -> bool:
    if isinstance(value, (tuple, list, frozenset)):
        return all(_plain_setting(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _optimizer_key(optimize: object) -> Hashable:
    """A preset by its name; an optimizer object by its type and its plain settings (numbers,
    strings and tuples of them among its attributes), never by its identity."""
    if isinstance(optimize, str):
        return optimize
    attrs = getattr(optimize, "__dict__", {})
    settings = tuple(sorted((k, repr(v)) for k, v in attrs.items() if not k.startswith("_") and _plain_setting(v)))
    return ("optimizer", type(optimize).__module__, type(optimize).__qualname__, settings)


def _canonical(inputs: tuple[tuple[str, ...], ...], output: tuple[str, ...], size_dict: Mapping[str, int]
               ) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...], dict[str, int]]:
    """The network with its indices renamed ``i0, i1, …`` in order of appearance, and their sizes."""
    rename: dict[str, str] = {}
    for t in (*inputs, output):
        for ind in t:
            if ind not in rename:
                rename[ind] = f"i{len(rename)}"
    c_inputs = tuple(tuple(rename[i] for i in t) for t in inputs)
    c_output = tuple(rename[i] for i in output)
    sizes = {rename[i]: size_dict[i] for i in rename if i in size_dict}
    return c_inputs, c_output, sizes


def plan_for(inputs: Sequence[Sequence[str]], output: Sequence[str], size_dict: Mapping[str, int],
             names: Sequence[str] | None = None, key_extra: Hashable = (), optimize: object = "auto") -> PlanView:
    """Return the cached plan for this network (building it, and counting the time, on a miss), as
    a :class:`PlanView` with the caller's ``names``.

    The cache key is canonical: the index names renamed in order of appearance, their sizes,
    ``key_extra`` (what else must match for a plan to be reused: dtype, device) and the optimizer
    by its settings. The cached plan itself holds no caller's names."""
    ins = tuple(tuple(i) for i in inputs)
    out = tuple(output)
    c_inputs, c_output, sizes = _canonical(ins, out, size_dict)
    key = (c_inputs, c_output, tuple(sorted(sizes.items())), key_extra, _optimizer_key(optimize))
    plan = _CACHE.get(key)
    if plan is not None:
        if not torch.compiler.is_compiling():
            _STATS.cache_hits += 1
    else:
        t0 = time.perf_counter()
        plan = ContractionPlan(c_inputs, c_output, sizes, optimize=optimize)
        plan.optimize = None          # the optimizer is the caller's (on the view), not the shared plan's
        _STATS.planning_seconds += time.perf_counter() - t0
        _STATS.plans_built += 1
        _CACHE.put(key, plan)
    labels = tuple(names) if names is not None else tuple(f"T{i}" for i in range(len(ins)))
    return PlanView(plan, labels, ins, out, optimize)
