r"""The torch kernel of circuit-shaped frames: a frame's whole circuit as one autograd function.

**Compiling.** :func:`kernel_ops` turns an uncontrolled RY/CZ circuit into *factors*: each run of
RY gates on distinct qubits becomes Kronecker products on up to :data:`GROUP` contiguous qubits
(``2^s × 2^s``). A run of CZ gates whose pairs each lie inside one factor of the next run is
folded into those factors (a ±1 diagonal on their columns), and a factor whose qubits lie inside
the previous factor's, with nothing in between touching them, is multiplied into it — for
Quantum-PEFT's circuit the first RY layer, the even CZs and the even RYs become one factor per
group. Exact: only commuting gates are regrouped. :func:`compile_program` flattens a frame
description (the cosine–sine construction, :mod:`tnpeft.circuits.frames`) into operations
on row ranges of the state ``(G, N, K)``.

**Running.** :func:`factor_matrices` builds every factor of a frame in one batched pass per
factor shape (the only part autograd records); :func:`run_program` applies the operations in place
inside one autograd function. Its backward sweeps them in reverse: a factor ``M`` with saved
input ``X`` (rows grouped by the factor's qubits) gives ``∂L/∂M = G Xᵀ`` and passes on ``Mᵀ G``;
a sign diagonal is its own inverse; a cosine–sine rotation by ``φ`` (saved inputs ``X_t, X_b``,
outputs ``Y``) gives ``∂L/∂φ = Σ (G_b·Y_t − G_t·Y_b)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Union, cast

import torch

from tnpeft.caches import memoized
from tnpeft.circuits.circuit import Circuit
from tnpeft.circuits.frames import Block, FrameCircuit

GROUP = 4  # qubits whose rotations are fused into one 2^4×2^4 Kronecker factor


# ------------------------------------------------------------------------------ compiling
class RyStage(NamedTuple):
    """One stage of a factor: the ±1 diagonal of ``cz_pairs`` (the factor's local qubits), then RY
    on local qubits ``lo…lo+size−1`` with the angles of indices ``angles``."""

    lo: int
    size: int
    angles: tuple[int, ...]
    cz_pairs: tuple[tuple[int, int], ...]


class RyFactor(NamedTuple):
    """A ``2^size × 2^size`` factor on qubits ``lo…lo+size−1``: the product of its stages in order."""

    lo: int
    size: int
    stages: tuple[RyStage, ...]


class SignTable:
    """The values of one ±1 diagonal, and its tensors per dtype and device (made on first use and
    kept as long as the table is: tables live in the compiled ops that name them). Compared by
    identity, so the hot path never hashes the ``2ⁿ`` values."""

    __slots__ = ("values", "_tensors", "__weakref__")

    def __init__(self, values: tuple[float, ...]):
        self.values = values
        self._tensors: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def tensor(self, like: torch.Tensor) -> torch.Tensor:
        """The diagonal as a ``(1, rows, 1)`` tensor of ``like``'s dtype and device."""
        key = (like.dtype, like.device)
        t = self._tensors.get(key)
        if t is None:
            t = self._tensors[key] = torch.tensor(self.values, dtype=like.dtype, device=like.device).view(1, -1, 1)
        return t


class SignDiagonal(NamedTuple):
    """A ±1 diagonal on all rows (CZ gates on ``pairs`` that fold into no factor)."""

    signs: SignTable
    pairs: tuple[tuple[int, int], ...]


KernelOp = Union[RyFactor, SignDiagonal]


@memoized("frame_programs:kernel_ops")
def kernel_ops(circuit: Circuit) -> tuple[KernelOp, ...]:
    """The circuit as factors (:class:`RyFactor`) and sign diagonals (:class:`SignDiagonal`), in the
    order they act."""
    n = circuit.n_qubits
    ops: list[Any] = []   # SignDiagonal, or [lo, size, stages]: a factor under construction
    run: dict[int, int] = {}
    run_cz: list[tuple[int, int]] = []
    pending: list[tuple[int, int]] = []

    def touches(op: SignDiagonal | list[Any], lo: int, hi: int) -> bool:
        if isinstance(op, SignDiagonal):
            return any(lo <= q < hi for pair in op.pairs for q in pair)
        return bool(op[0] < hi and lo < op[0] + op[1])

    def flush_ry() -> None:
        nonlocal run_cz
        qs = sorted(run)
        groups = []
        start = 0
        while start < len(qs):
            stop = start + 1
            while stop < len(qs) and stop - start < GROUP and qs[stop] == qs[stop - 1] + 1:
                stop += 1
            groups.append((qs[start], stop - start))
            start = stop
        folded: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(groups))}
        loose = []
        for a, b in run_cz:
            i = next((i for i, (lo, sz) in enumerate(groups) if lo <= min(a, b) and max(a, b) < lo + sz), None)
            (folded[i].append((a, b)) if i is not None else loose.append((a, b)))
        if loose:
            ops.append(SignDiagonal(SignTable(_diagonal(n, loose)), tuple(loose)))
        for i, (lo, sz) in enumerate(groups):
            angles = tuple(run[q] for q in range(lo, lo + sz))
            target = None
            for j in range(len(ops) - 1, -1, -1):   # the factor this one can multiply into
                op = ops[j]
                if not isinstance(op, SignDiagonal) and op[0] <= lo and lo + sz <= op[0] + op[1]:
                    target = j
                    break
                if touches(op, lo, lo + sz):
                    break
            if target is None:   # a factor under construction: [lo, size, stages] until it is sealed
                ops.append([lo, sz, [RyStage(0, sz, angles, tuple((a - lo, b - lo) for a, b in folded[i]))]])
            else:
                t = ops[target]
                t[2].append(RyStage(lo - t[0], sz, angles, tuple((a - t[0], b - t[0]) for a, b in folded[i])))
        run.clear()
        run_cz = []

    for g in circuit.gates:
        if g.controls or g.factor != 1.0 or g.name not in ("ry", "cz") or (g.angle and g.angle[0] != "param"):
            raise ValueError("kernel_ops compiles uncontrolled RY/CZ circuits with parameter angles")
        if g.name == "ry":
            if g.qubits[0] in run:
                flush_ry()
            if not run:
                run_cz, pending = pending, []
            run[g.qubits[0]] = g.angle[1]  # type: ignore[index]
        else:
            if run:
                flush_ry()
            a, b = g.qubits
            pending.append((a, b))
    if run:
        flush_ry()
    if pending:
        ops.append(SignDiagonal(SignTable(_diagonal(n, pending)), tuple(pending)))
    return tuple(op if isinstance(op, SignDiagonal) else RyFactor(op[0], op[1], tuple(op[2])) for op in ops)


def _diagonal(n: int, pairs: Iterable[tuple[int, int]]) -> tuple[float, ...]:
    idx = torch.arange(1 << n)
    sign = torch.ones(1 << n, dtype=torch.long)
    for a, b in pairs:
        sign = sign * (1 - 2 * (((idx >> a) & 1) & ((idx >> b) & 1)))
    return tuple(float(v) for v in sign.tolist())


# ------------------------------------------------------------------------------ programs
@dataclass(frozen=True)
class CompiledFrame:
    """A frame description with its power-of-two factors compiled by :func:`kernel_ops`."""

    rows: int
    half: int
    block: tuple[KernelOp, ...] | None = None          # the ops of a power-of-two frame
    before: tuple[KernelOp, ...] = ()
    angle: int = 0
    after: tuple[KernelOp, ...] = ()
    rest: CompiledFrame | None = None


@memoized("frame_programs:frames")
def compile_frame(frame: FrameCircuit | None) -> CompiledFrame | None:
    """The frame description with every power-of-two factor compiled by :func:`kernel_ops`."""
    if frame is None:
        return None
    if isinstance(frame, Block):
        return CompiledFrame(frame.rows, frame.rows, block=kernel_ops(frame.circuit))
    return CompiledFrame(frame.rows, frame.half, None, kernel_ops(frame.before), frame.angle, kernel_ops(frame.after),
                         compile_frame(frame.rest))


class FactorOp(NamedTuple):
    """Apply factor ``slot`` of the factor table on qubits ``lo…lo+size−1`` of rows ``r0…r1−1``."""

    r0: int
    r1: int
    lo: int
    size: int
    slot: int


class SignOp(NamedTuple):
    """Multiply rows ``r0…r1−1`` by the ±1 diagonal ``signs``."""

    r0: int
    r1: int
    signs: SignTable


class CosSinOp(NamedTuple):
    """Rotate rows ``r0+i`` and ``r0+n1+i`` (``i < n2``) by the cosine–sine angle ``cs_angles[j]``."""

    r0: int
    n1: int
    n2: int
    j: int


ProgramOp = Union[FactorOp, SignOp, CosSinOp]


@dataclass(frozen=True)
class Program:
    """The operations of one frame on ``rows`` rows, and the tables its factors are built from.

    ``ops``: :class:`FactorOp`, :class:`SignOp` and :class:`CosSinOp` records in order. Every factor is built padded to
    :data:`GROUP` qubits (its matrix is the top-left block): ``stage_angles[t]`` are the angle
    indices of stage ``t`` per padded qubit (``-1``: no rotation), ``stage_signs[t]`` its folded
    CZ signs per column, ``chains[f]`` the stages of factor ``f`` in order (padded with an
    identity stage to one length)."""

    rows: int
    ops: tuple[ProgramOp, ...]
    stage_angles: tuple[tuple[int, ...], ...]
    stage_signs: tuple[tuple[float, ...], ...]
    chains: tuple[tuple[int, ...], ...]
    cs_angles: tuple[int, ...]
    _tensors: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, compare=False, hash=False, repr=False)

    def tables(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(stage_angles, stage_signs, chains)`` as tensors on ``device`` (made once per dtype and
        device, and kept with the program)."""
        key = (dtype, device)
        t = self._tensors.get(key)
        if t is None:
            t = self._tensors[key] = (torch.tensor(self.stage_angles, dtype=torch.long, device=device),
                                      torch.tensor(self.stage_signs, dtype=dtype, device=device),
                                      torch.tensor(self.chains, dtype=torch.long, device=device))
        return t


@memoized("frame_programs:programs")
def compile_program(frame: CompiledFrame | tuple[KernelOp, ...], rows: int | None = None) -> Program:
    """Flatten a compiled frame (or the :func:`kernel_ops` of one power-of-two circuit on ``rows``
    rows) into a :class:`Program`."""
    ops: list[ProgramOp] = []
    stage_angles: list[tuple[int, ...]] = []
    stage_signs: list[tuple[float, ...]] = []
    chains: list[list[int]] = []
    cs: list[int] = []

    def kernel(kops: tuple[KernelOp, ...], r0: int, n: int) -> None:
        for op in kops:
            if isinstance(op, SignDiagonal):
                ops.append(SignOp(r0, r0 + n, op.signs))
                continue
            lo, size, stages = op
            chain = []
            for sub_lo, sub_size, angles, pairs in stages:
                padded = [-1] * GROUP
                padded[sub_lo:sub_lo + sub_size] = angles
                chain.append(len(stage_angles))
                stage_angles.append(tuple(padded))
                stage_signs.append(_diagonal(GROUP, pairs))
            ops.append(FactorOp(r0, r0 + n, lo, size, len(chains)))
            chains.append(chain)

    def walk(f: CompiledFrame, r0: int) -> None:
        if f.block is not None:
            kernel(f.block, r0, f.rows)
            return
        kernel(f.before, r0, f.half)
        ops.append(CosSinOp(r0, f.half, f.rows - f.half, len(cs)))
        cs.append(f.angle)
        kernel(f.after, r0, f.half)
        if f.rest is not None:
            walk(f.rest, r0 + f.half)

    if isinstance(frame, CompiledFrame):
        walk(frame, 0)
        total = frame.rows
    else:
        assert rows is not None, "compile_program: the rows of a power-of-two circuit's ops"
        kernel(frame, 0, rows)
        total = rows
    longest = max((len(c) for c in chains), default=1)
    if any(len(c) < longest for c in chains):   # an identity stage pads the shorter chains
        stage_angles.append((-1,) * GROUP)
        stage_signs.append((1.0,) * (1 << GROUP))
        chains = [c + [len(stage_angles) - 1] * (longest - len(c)) for c in chains]
    return Program(total, tuple(ops), tuple(stage_angles), tuple(stage_signs), tuple(tuple(c) for c in chains),
                   tuple(cs))


def _kron_ry(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """RY rotations (half-angle cosines/sines ``(G, n, q)``) on ``q`` qubits as ``(G, n, 2^q, 2^q)``
    Kronecker products; higher qubits are the more significant factor."""
    g, nf, q = c.shape
    rot = torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)   # (G, n, q, 2, 2)
    mat = rot[:, :, 0]
    for j in range(1, q):
        d = mat.shape[-1]
        mat = (rot[:, :, j, :, None, :, None] * mat[:, :, None, :, None, :]).reshape(g, nf, 2 * d, 2 * d)
    return mat


def factor_matrices(program: Program, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Every factor of the program as ``(G, F, 2^GROUP, 2^GROUP)`` (factor ``f`` on ``s`` qubits is
    the top-left ``2^s`` block of ``[:, f]``), from the half-angle cosines and sines
    ``(G, count)``: one batched Kronecker build for all stages, one product per stage of the
    longest chain."""
    g, dev, dt = cos.shape[0], cos.device, cos.dtype
    if not program.chains:
        return cos.new_zeros(g, 0, 1 << GROUP, 1 << GROUP)
    idx, signs, chains = program.tables(dt, dev)
    # index -1 (no rotation) reads an appended angle whose cosine is 1 and sine 0
    c = torch.cat((cos, cos.new_ones(g, 1)), 1)[:, idx]                 # (G, stages, GROUP)
    s = torch.cat((sin, sin.new_zeros(g, 1)), 1)[:, idx]
    stages = _kron_ry(c, s) * signs[None, :, None, :]                    # (G, stages, 16, 16)
    m = stages[:, chains[:, 0]]
    for t in range(1, chains.shape[1]):
        m = stages[:, chains[:, t]] @ m
    return m


def run_program(program: Program, state: torch.Tensor, phi: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """The program applied to ``state`` ``(G, rows, K)``; ``phi`` the cosine–sine angles
    ``(G, len(cs_angles))``, ``mats`` from :func:`factor_matrices`."""
    return cast(torch.Tensor, _Run.apply(program, state, phi, mats))  # type: ignore[no-untyped-call]  # torch


def run_kernel(circuit: Circuit | tuple[KernelOp, ...], state: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """A power-of-two circuit (or its :func:`kernel_ops`) applied to the columns of ``state``
    ``(G, 2ⁿ, K)``; ``cos``/``sin`` are ``cos(θ/2)``, ``sin(θ/2)`` of its angles, ``(G, count)``."""
    ops = kernel_ops(circuit) if isinstance(circuit, Circuit) else circuit
    program = compile_program(ops, state.shape[1])
    return run_program(program, state, cos.new_zeros(cos.shape[0], 0), factor_matrices(program, cos, sin))


def _grouped(x: torch.Tensor, lo: int, size: int) -> torch.Tensor:
    """Rows ``(G, rows, K)`` → ``(G, 2^size, rows·K / 2^size)``: the factor's qubits first."""
    g, rows, k = x.shape
    h, w = rows >> (lo + size), (1 << lo) * k
    return x.reshape(g, h, 1 << size, w).transpose(1, 2).reshape(g, 1 << size, h * w)


def _ungroup_into(dst: torch.Tensor, y: torch.Tensor, lo: int, size: int) -> None:
    g, rows, k = dst.shape
    h, w = rows >> (lo + size), (1 << lo) * k
    dst.view(g, h, 1 << size, w).copy_(y.view(g, 1 << size, h, w).transpose(1, 2))


class _Run(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, program: Program, state: torch.Tensor, phi: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
        x = torch.empty(state.shape, dtype=state.dtype, device=state.device)
        x.copy_(state)
        saved: list[torch.Tensor] = []
        c, s = torch.cos(phi), torch.sin(phi)
        for op in program.ops:
            if isinstance(op, FactorOp):
                r0, r1, lo, size, slot = op
                part = x[:, r0:r1]
                xp = _grouped(part, lo, size)
                if xp._base is not None:   # grouping needed no copy: keep one of the input
                    xp = xp.clone()
                saved.append(xp)
                _ungroup_into(part, torch.bmm(mats[:, slot, :1 << size, :1 << size], xp), lo, size)
            elif isinstance(op, SignOp):
                x[:, op.r0:op.r1].mul_(op.signs.tensor(x))
            else:
                r0, n1, n2, j = op
                t, b = x[:, r0:r0 + n2], x[:, r0 + n1:r0 + n1 + n2]
                cj, sj = c[:, j].view(-1, 1, 1), s[:, j].view(-1, 1, 1)
                t0, b0 = t.clone(), b.clone()
                saved.append(torch.stack((t0, b0)))
                t.mul_(cj).sub_(b0 * sj)
                b.mul_(cj).add_(t0 * sj)
        ctx.program = program
        ctx.save_for_backward(phi, mats, *saved)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        phi, mats, *saved = ctx.saved_tensors
        g = grad.contiguous().clone()
        c, s = torch.cos(phi), torch.sin(phi)
        d_mats = torch.zeros_like(mats)
        d_phi = torch.zeros_like(phi)
        k = len(saved)
        for op in reversed(ctx.program.ops):
            if isinstance(op, FactorOp):
                r0, r1, lo, size, slot = op
                k -= 1
                part = g[:, r0:r1]
                gp = _grouped(part, lo, size)
                d = 1 << size
                d_mats[:, slot, :d, :d] = torch.bmm(gp, saved[k].transpose(1, 2))
                _ungroup_into(part, torch.bmm(mats[:, slot, :d, :d].transpose(1, 2), gp), lo, size)
            elif isinstance(op, SignOp):
                g[:, op.r0:op.r1].mul_(op.signs.tensor(g))
            else:
                r0, n1, n2, j = op
                k -= 1
                xt, xb = saved[k]
                gt, gb = g[:, r0:r0 + n2], g[:, r0 + n1:r0 + n1 + n2]
                cj, sj = c[:, j].view(-1, 1, 1), s[:, j].view(-1, 1, 1)
                d_phi[:, j] += (gb * (cj * xt - sj * xb) - gt * (sj * xt + cj * xb)).sum((1, 2))
                gt0 = gt.clone()
                gt.mul_(cj).add_(gb * sj)
                gb.mul_(cj).sub_(gt0 * sj)
        return None, g if ctx.needs_input_grad[1] else None, d_phi, d_mats
