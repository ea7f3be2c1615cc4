"""Plan once, run many times.

A :class:`ContractionPlan` is built from the operands' index tuples, the output's index tuple and
the sizes of the indices. cotengra chooses the pairwise order (for LoRA-shaped networks it
contracts ``x·A`` first and never forms ``A·B``); the plan then stores one small ``torch.einsum``
equation per pairwise step, so running it does no parsing and no path search.

Plans are cached process-wide by (network structure, sizes, dtype, device, optimizer);
:func:`plan_stats` reports how often the cache was hit and how long planning took. The cotengra
contraction tree stays on the plan (``plan.tree``) for inspection and plotting
(``plan.tree.plot_tent()``, ``plan.tree.print_contractions()``).
"""

from __future__ import annotations

import math
import string
import time
from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F

from tnpeft.errors import ConfigError, GraphError

_SYMBOLS = string.ascii_letters  # torch.einsum accepts only [a-zA-Z]


# torch's tensordot and einsum take tensors of at most 64 dimensions; steps with high-order operands
# go through a permute + batched matrix product instead
_MAX_KERNEL_DIMS = 24


def _display_symbol(k: int) -> str:
    """The ``k``-th symbol of a printed equation: letters, then other Unicode letters."""
    return _SYMBOLS[k] if k < len(_SYMBOLS) else chr(0x100 + k - len(_SYMBOLS))


def _letters(*groups: Sequence[str]) -> dict[str, str] | None:
    """Einsum letters for the indices of one small equation, or ``None`` if it has more than 52."""
    inds = list(dict.fromkeys(i for g in groups for i in g))
    return None if len(inds) > len(_SYMBOLS) else {ind: _SYMBOLS[k] for k, ind in enumerate(inds)}


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
_CACHE: dict[Hashable, ContractionPlan] = {}


def plan_stats() -> PlanStats:
    """The live counters of the plan cache (plans built, cache hits, seconds spent planning)."""
    return _STATS


def count_cache_hit() -> None:
    """Record that a caller reused a plan it kept (counted as a cache hit)."""
    _STATS.count_hit()


def reset_plan_cache() -> None:
    """Forget every cached plan and zero the counters."""
    _CACHE.clear()
    _STATS.plans_built = 0
    _STATS.cache_hits = 0
    _STATS.planning_seconds = 0.0


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

    def __init__(self, inputs: Sequence[Sequence[str]], output: Sequence[str], size_dict: dict[str, int],
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
        labels = list(self.names)
        steps: list[tuple[int, int, str]] = []
        self._order: list[str] = []
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
            steps.append((i, j, eq, _pair_kernel(a, b, out)))
            label = f"({labels[i]}·{labels[j]})"
            for k in sorted((i, j), reverse=True):
                del ops[k]
                del labels[k]
            ops.append(out)
            labels.append(label)
            self._order.append(label)
        self._final = None if ops[0] == self.output else _unary_kernel(ops[0], self.output)
        self.steps = tuple(steps)
        self.order = labels[0]
        # whether the last pairwise step is one matrix product that can accumulate into an output
        self._last_linear = _linear_orientation(*last) if (last := self._last_operands()) else None

    def _last_operands(self) -> tuple | None:
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
        ops = _autocast_operands(arrays)
        for i, j, _, kernel in self.steps[:-1]:
            a, b = ops[i], ops[j]
            if i > j:
                del ops[i], ops[j]
            else:
                del ops[j], ops[i]
            ops.append(kernel(a, b))
        i, j, _, _ = self.steps[-1]
        first, p1, p2, n1 = self._last_linear
        x, y = (ops[i], ops[j]) if first == "a" else (ops[j], ops[i])
        m1 = _as_matrix(x, p1, n1)
        m2 = _as_matrix(y, p2, x.dim() - n1)
        if m1.shape[0] * m2.shape[1] != out.numel() or not out.is_contiguous():
            return out + alpha * self(*arrays).reshape(out.shape)
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

    def __call__(self, *arrays: torch.Tensor) -> torch.Tensor:
        ops = _autocast_operands(arrays)
        for i, j, _, kernel in self.steps:
            a, b = ops[i], ops[j]
            if i > j:
                del ops[i], ops[j]
            else:
                del ops[j], ops[i]
            ops.append(kernel(a, b))
        out = ops[0]
        if self._final is not None:
            out = self._final(out)
        return out

    def __repr__(self) -> str:
        return (f"ContractionPlan({self.equation}, order={self.order}, flops={self.flops:,}, "
                f"largest_intermediate={self.largest_intermediate:,})")

    def describe(self) -> str:
        """A multi-line human-readable account of the plan."""
        lines = [f"einsum      {self.equation}",
                 "operands    " + ", ".join(f"{n}[{','.join(t)}]" for n, t in zip(self.names, self.inputs)),
                 f"order       {self.order}",
                 f"flops       {self.flops:,}",
                 f"largest intermediate  {self.largest_intermediate:,} elements"]
        for k, (_, _, eq, _) in enumerate(self.steps):
            lines.append(f"  step {k}: {eq}")
        return "\n".join(lines)


def _autocast_operands(arrays: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The operands as a list; under autocast, floating-point ones in autocast's dtype — as autocast
    itself casts the inputs of a matrix product (``tensordot`` and element-wise scales are not on
    its list, and would otherwise meet a bfloat16 activation with a float32 weight)."""
    ops = list(arrays)
    if not ops:
        return ops
    dev = ops[0].device.type
    if not torch.is_autocast_enabled(dev):
        return ops
    dt = torch.get_autocast_dtype(dev)
    return [t.to(dt) if t.is_floating_point() and t.dtype != dt else t for t in ops]


def _pair_kernel(a: tuple[str, ...], b: tuple[str, ...], out: tuple[str, ...]):
    """The cheapest torch call for one pairwise step.

    A plain contraction (no shared index kept) whose output order is ``free(a) + free(b)`` or the
    reverse is a single matrix product: ``F.linear`` for the common ``(f, c)·(g, c)`` case — the
    very kernel ``nn.Linear`` and peft use — and ``tensordot`` otherwise. Hyperedges (a shared index
    that stays, e.g. a diagonal's scale) and anything else go to ``torch.einsum`` with the step's own
    letters, or — for a step with more than 52 distinct indices — to a batched matrix product.
    Shapes are read from the operands at run time (the batch size varies within a plan's bucket).
    """
    if max(len(a), len(b), len(out)) > _MAX_KERNEL_DIMS:
        return _bmm_kernel(a, b, out)
    shared = set(a) & set(b)
    contracted = [i for i in a if i in shared and i not in out]
    for small, big, swap in ((a, b, False), (b, a, True)):
        # an element-wise scale (a diagonal node on a hyperedge): broadcasting, no einsum
        if big == out and set(small) <= set(big) and list(small) == sorted(small, key=big.index):
            pos = tuple(big.index(i) for i in small)
            n = len(big)
            if swap:
                return lambda x, y: x * _broadcast(y, pos, n)
            return lambda x, y: y * _broadcast(x, pos, n)
    if not contracted or (shared & set(out)):
        return _einsum_kernel(a, b, out)
    fa = tuple(i for i in a if i not in shared)
    fb = tuple(i for i in b if i not in shared)
    pa = [a.index(c) for c in contracted]
    pb = [b.index(c) for c in contracted]
    linear = len(a) == 2 and len(b) == 2 and pa == [1] and pb == [1]
    if fa + fb == out:
        return (lambda x, y: F.linear(x, y)) if linear else (lambda x, y: torch.tensordot(x, y, dims=(pa, pb)))
    if fb + fa == out:
        return (lambda x, y: F.linear(y, x)) if linear else (lambda x, y: torch.tensordot(y, x, dims=(pb, pa)))
    return _einsum_kernel(a, b, out)


def _broadcast(t: torch.Tensor, pos: tuple[int, ...], n: int) -> torch.Tensor:
    shape = [1] * n
    for p, d in zip(pos, t.shape):
        shape[p] = d
    return t.reshape(shape)


def _einsum_kernel(a: tuple[str, ...], b: tuple[str, ...], out: tuple[str, ...]):
    sym = _letters(a, b, out)
    if sym is None:
        return _bmm_kernel(a, b, out)
    eq = f"{''.join(sym[i] for i in a)},{''.join(sym[i] for i in b)}->{''.join(sym[i] for i in out)}"
    return lambda x, y: torch.einsum(eq, x, y)


def _linear_orientation(a: tuple[str, ...], b: tuple[str, ...], out: tuple[str, ...]) -> tuple | None:
    """How the step ``a, b → out`` is one matrix product ``M1 · M2`` whose result, read row-major,
    is ``out``: ``(first, p1, p2, n1)`` — ``first`` is ``"a"`` or ``"b"``, the operand whose free
    indices lead ``out``; ``p1`` permutes it to (its free indices, the contracted ones), ``p2`` the
    other to (the contracted ones, its free indices); ``n1`` counts the first's free indices.
    ``None`` when the step keeps a shared index (a batch or hyperedge), sums an index out, has no
    contracted index, or interleaves the two operands' free indices in ``out``. LoRA's ``h·Bᵀ``
    is ``("a", (0, 1), (1, 0), 1)``; an MPO core's ``(rows, o1, b) · (b, o2)`` is one too."""
    shared = set(a) & set(b)
    if not shared or shared & set(out) or len(set(a)) != len(a) or len(set(b)) != len(b):
        return None
    if any(i not in b and i not in out for i in a) or any(i not in a and i not in out for i in b):
        return None
    contracted = tuple(i for i in a if i in shared)
    for first, x, y in (("a", a, b), ("b", b, a)):
        fx = tuple(i for i in out if i in x)
        fy = tuple(i for i in out if i in y)
        if fx + fy == tuple(out) and fx:
            return (first, tuple(x.index(i) for i in fx + contracted),
                    tuple(y.index(i) for i in contracted + fy), len(fx))
    return None


def _as_matrix(t: torch.Tensor, perm: tuple[int, ...], split: int) -> torch.Tensor:
    """``t`` permuted by ``perm`` and flattened to 2-D, its first ``split`` axes the rows (a view
    where the layout allows, else one copy)."""
    if perm != tuple(range(t.dim())):
        t = t.permute(perm)
    rows = math.prod(t.shape[:split])
    return t.reshape(rows, -1)


def _bmm_kernel(a: tuple[str, ...], b: tuple[str, ...], out: tuple[str, ...]):
    """Any pairwise step as one batched matrix product: indices kept by both operands and the
    output are the batch, shared ones not kept are contracted; indices of one operand that neither
    the other nor the output has are summed out first."""
    sum_a = [k for k, i in enumerate(a) if i not in b and i not in out]
    sum_b = [k for k, i in enumerate(b) if i not in a and i not in out]
    a2 = tuple(i for i in a if i in b or i in out)
    b2 = tuple(i for i in b if i in a or i in out)
    batch = [i for i in a2 if i in b2 and i in out]
    con = [i for i in a2 if i in b2 and i not in out]
    fa = [i for i in a2 if i not in b2]
    fb = [i for i in b2 if i not in a2]
    perm_a = [a2.index(i) for i in batch + fa + con]
    perm_b = [b2.index(i) for i in batch + con + fb]
    mid = batch + fa + fb
    perm_out = [mid.index(i) for i in out]
    nb, nfa, nc = len(batch), len(fa), len(con)

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if sum_a:
            x = x.sum(sum_a)
        if sum_b:
            y = y.sum(sum_b)
        x = x.permute(perm_a)
        y = y.permute(perm_b)
        bs, fas, cs = x.shape[:nb], x.shape[nb:nb + nfa], x.shape[nb + nfa:]
        fbs = y.shape[nb + nc:]
        z = torch.bmm(x.reshape(math.prod(bs), math.prod(fas), math.prod(cs)),
                      y.reshape(math.prod(bs), math.prod(cs), math.prod(fbs)))
        return z.reshape(tuple(bs) + tuple(fas) + tuple(fbs)).permute(perm_out)

    return kernel


def _unary_kernel(inds: tuple[str, ...], out: tuple[str, ...]):
    """One operand to the output: indices the output lacks summed out, the rest permuted."""
    drop = [k for k, i in enumerate(inds) if i not in out]
    kept = [i for i in inds if i in out]
    perm = [kept.index(i) for i in out]

    def kernel(x: torch.Tensor) -> torch.Tensor:
        if drop:
            x = x.sum(drop)
        return x.permute(perm)

    return kernel


def check_optimizer(optimize: object) -> None:
    """Raise :class:`ConfigError` (field ``optimize``) unless cotengra can plan with ``optimize``
    (tried on a three-operand chain, so that a typo fails when the adapter is configured)."""
    ContractionPlan([("a", "b"), ("b", "c"), ("c", "d")], ("a", "d"), {"a": 2, "b": 3, "c": 4, "d": 5},
                    optimize=optimize)


def _optimizer_key(optimize: object) -> Hashable:
    # a preset is its name; an optimizer object is itself (plans keep a reference, so it stays alive)
    return optimize if isinstance(optimize, str) else ("optimizer", id(optimize))


def plan_for(inputs: Sequence[Sequence[str]], output: Sequence[str], size_dict: dict[str, int],
             names: Sequence[str] | None = None, key_extra: Hashable = (), optimize: object = "auto") -> ContractionPlan:
    """Return the cached plan for this network, building it (and counting the time) on a miss.

    ``key_extra`` lets callers add what else must match for a plan to be reused (dtype, device);
    ``optimize`` is handed to cotengra and is part of the key.
    """
    inputs = tuple(tuple(i) for i in inputs)
    output = tuple(output)
    key = (inputs, output, tuple(sorted(size_dict.items())), key_extra, _optimizer_key(optimize))
    plan = _CACHE.get(key)
    if plan is not None:
        _STATS.cache_hits += 1
        return plan
    t0 = time.perf_counter()
    plan = ContractionPlan(inputs, output, size_dict, names=names, optimize=optimize)
    _STATS.planning_seconds += time.perf_counter() - t0
    _STATS.plans_built += 1
    _CACHE[key] = plan
    return plan
