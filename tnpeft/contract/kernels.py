"""The torch calls a plan runs: the cheapest kernel for each pairwise step (``F.linear``,
``tensordot``, broadcasting, ``einsum`` or a batched matrix product), the unary reduction at the
end, and the matrix-product form of a last step that accumulates into an output."""

from __future__ import annotations

import math
import string
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

SYMBOLS = string.ascii_letters  # torch.einsum accepts only [a-zA-Z]

# torch's tensordot and einsum take tensors of at most 64 dimensions; steps with high-order operands
# go through a permute + batched matrix product instead
MAX_KERNEL_DIMS = 24

PairKernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def letters(*groups: Sequence[str]) -> dict[str, str] | None:
    """Einsum letters for the indices of one small equation, or ``None`` if it has more than 52."""
    inds = list(dict.fromkeys(i for g in groups for i in g))
    return None if len(inds) > len(SYMBOLS) else {ind: SYMBOLS[k] for k, ind in enumerate(inds)}


def autocast_on(device_type: str) -> bool:
    """Whether autocast is enabled for ``device_type`` (``False`` for devices autocast does not know,
    such as ``meta``)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


def autocast_operands(arrays: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The operands as a list; under autocast, floating-point ones in autocast's dtype — as autocast
    itself casts the inputs of a matrix product (``tensordot`` and element-wise scales are not on
    its list, and would otherwise meet a bfloat16 activation with a float32 weight)."""
    ops = list(arrays)
    if not ops:
        return ops
    dev = ops[0].device.type
    if not autocast_on(dev):
        return ops
    dt = torch.get_autocast_dtype(dev)
    return [t.to(dt) if t.is_floating_point() and t.dtype != dt else t for t in ops]


def pair_kernel(a: tuple[str, ...], b: tuple[str, ...], out: tuple[str, ...]) -> PairKernel:
    """The cheapest torch call for one pairwise step.

    A plain contraction (no shared index kept) whose output order is ``free(a) + free(b)`` or the
    reverse is a single matrix product: ``F.linear`` for the common ``(f, c)·(g, c)`` case — the
    very kernel ``nn.Linear`` and peft use — and ``tensordot`` otherwise. Hyperedges (a shared index
    that stays, e.g. a diagonal's scale) and anything else go to ``torch.einsum`` with the step's own
    letters, or — for a step with more than 52 distinct indices — to a batched matrix product.
    Shapes are read from the operands at run time (the batch size varies within a plan's bucket).
    """
    if max(len(a), len(b), len(out)) > MAX_KERNEL_DIMS:
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


def _einsum_kernel(a: tuple[str, ...], b: tuple[str, ...], out: tuple[str, ...]) -> PairKernel:
    sym = letters(a, b, out)
    if sym is None:
        return _bmm_kernel(a, b, out)
    eq = f"{''.join(sym[i] for i in a)},{''.join(sym[i] for i in b)}->{''.join(sym[i] for i in out)}"
    return lambda x, y: torch.einsum(eq, x, y)


def linear_orientation(a: tuple[str, ...], b: tuple[str, ...],
                       out: tuple[str, ...]) -> tuple[str, tuple[int, ...], tuple[int, ...], int] | None:
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


def as_matrix(t: torch.Tensor, perm: tuple[int, ...], split: int) -> torch.Tensor:
    """``t`` permuted by ``perm`` and flattened to 2-D, its first ``split`` axes the rows (a view
    where the layout allows, else one copy)."""
    if perm != tuple(range(t.dim())):
        t = t.permute(perm)
    rows = math.prod(t.shape[:split])
    return t.reshape(rows, -1)


def _bmm_kernel(a: tuple[str, ...], b: tuple[str, ...], out: tuple[str, ...]) -> PairKernel:
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


def unary_kernel(inds: tuple[str, ...], out: tuple[str, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """One operand to the output: indices the output lacks summed out, the rest permuted."""
    drop = [k for k, i in enumerate(inds) if i not in out]
    kept = [i for i in inds if i in out]
    perm = [kept.index(i) for i in out]

    def kernel(x: torch.Tensor) -> torch.Tensor:
        if drop:
            x = x.sum(drop)
        return x.permute(perm)

    return kernel
