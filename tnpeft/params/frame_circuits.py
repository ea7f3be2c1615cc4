r"""The circuit descriptions of circuit-shaped frames — one description per frame, which its torch
kernel, its Qiskit circuit, its drawing and its resource count all follow.

**Pauli frames of any size.** For ``N = 2ⁿ`` the frame is Quantum-PEFT's two-design circuit
(:func:`tnpeft.params.circuit.pauli_circuit`). For any other ``N`` it is the cosine–sine split

    Q_N = (A₁ ⊕ Q_{N₂}) · CS(φ) · (B₁ ⊕ I),    N = N₁ + N₂,  N₁ = 2^{⌊log₂ N⌋}

(:class:`CosineSine`): ``B₁``, ``A₁`` are two-design circuits on ``log₂ N₁`` qubits, ``CS(φ)``
rotates row ``i`` with row ``N₁ + i`` for ``i < N₂`` by the angle ``φ``, and ``Q_{N₂}`` is the same
construction for ``N₂`` rows. As a circuit on ``n = ⌈log₂ N⌉`` qubits (qubit ``n−1`` on top, bit
``q`` of a row index = qubit ``q``, Qiskit's order):

- ``B₁`` and ``A₁`` act on qubits ``0…n−2`` controlled on qubit ``n−1`` being ``0``. (At the top
  level ``B₁`` needs no control when the frame's ``K ≤ N₁`` columns all start in the upper half.)
- ``CS(φ)`` is ``RY(2φ)`` on qubit ``n−1``, controlled on "the lower bits are below ``N₂``": one
  multi-controlled ``RY`` per set bit ``b`` of ``N₂``, controlled on bit ``b`` being 0 and the bits
  above it equal to ``N₂``'s (the disjoint cubes of ``{j < N₂}``).
- ``Q_{N₂}`` acts on qubits ``0…⌈log₂ N₂⌉−1`` controlled on qubit ``n−1`` being ``1``. Qubits in
  between need no control: their rows hold no amplitude, and every factor maps the span of its
  first rows to itself.

Every gate is an ``RY`` or a ``CZ`` with zero or more controls; the first ``K`` basis states are
mapped exactly onto the frame's columns, with no amplitude beyond row ``N``.

**Givens butterflies.** Layer ``l`` rotates rows ``i`` and ``i + 2^b`` (``b = l mod ⌈log₂ N⌉``) by
its own angle: an ``RY(2θ)`` on qubit ``b`` controlled on all the other qubits holding the bits of
``i`` (:func:`givens_circuit`); Qiskit export groups a layer into one uniformly controlled ``RY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Union

import torch

from tnpeft.params.circuit import Circuit, Gate, circuit_angle_count, pauli_circuit


def qubits_for(n: int) -> int:
    """Qubits a frame with ``n`` rows needs: ``⌈log₂ n⌉``, at least one."""
    return max(1, (n - 1).bit_length())


@dataclass(frozen=True)
class Block:
    """A power-of-two factor: ``circuit`` on qubits ``0…q−1`` (``2^q`` rows); its ``("param", k)``
    angles index the frame's flat angle vector."""

    circuit: Circuit

    @property
    def rows(self) -> int:
        return self.circuit.dim


@dataclass(frozen=True)
class CosineSine:
    """``Q_N = (after ⊕ rest) · CS(angle) · (before ⊕ I)`` with ``N = half + rest rows``."""

    rows: int
    half: int
    before: Circuit
    angle: int
    after: Circuit
    rest: FrameCircuit | None       # None: a single remaining row (the identity)


FrameCircuit = Union[Block, CosineSine]


def _shift(circuit: Circuit, offset: int, total: int) -> Circuit:
    gates = tuple(Gate(g.name, g.qubits, (g.angle[0], g.angle[1] + offset), g.controls, g.factor)
                  if g.angle else g for g in circuit.gates)
    return Circuit(circuit.n_qubits, gates, total)


@cache
def pauli_frame(n: int, layers: int) -> FrameCircuit | None:
    """The description of the ``pauli`` frame of size ``n`` (``None`` for ``n = 1``), with the angle
    layout :class:`~tnpeft.params.unitary.PauliFrame` uses: ``B₁``'s angles, ``φ``, ``A₁``'s, then
    ``Q_{N₂}``'s."""
    return _frame(n, layers, 0, pauli_count(n, layers))


def pauli_count(n: int, layers: int = 1) -> int:
    """Angles of the ``pauli`` frame of size ``n``: ``circuit_angle_count(log₂ n)`` for a power of
    two; otherwise ``2·circuit(n₁) + pauli_count(n₂) + 1`` (``B₁``, ``A₁``, the remainder, ``φ``).
    ``pauli_count(1) = 0``. At most ``log₂ N`` levels of ``O(L log N)`` angles: ``O(L·log² N)``."""
    if n == 1:
        return 0
    if n & (n - 1) == 0:
        return circuit_angle_count(n.bit_length() - 1, layers)
    n1 = 1 << (n.bit_length() - 1)
    return 2 * circuit_angle_count(n1.bit_length() - 1, layers) + pauli_count(n - n1, layers) + 1


def _frame(n: int, layers: int, offset: int, total: int) -> FrameCircuit | None:
    if n == 1:
        return None
    if n & (n - 1) == 0:
        return Block(_shift(pauli_circuit(n.bit_length() - 1, layers), offset, total))
    n1 = 1 << (n.bit_length() - 1)
    q1 = n1.bit_length() - 1
    c1 = circuit_angle_count(q1, layers)
    base = pauli_circuit(q1, layers)
    return CosineSine(n, n1, _shift(base, offset, total), offset + c1, _shift(base, offset + c1 + 1, total),
                      _frame(n - n1, layers, offset + 2 * c1 + 1, total))


def _below(bound: int, bits: int) -> list[tuple[tuple[int, int], ...]]:
    """Disjoint cubes (control patterns on qubits ``0…bits−1``) whose union is ``{j : j < bound}``."""
    cubes = []
    for b in range(bits - 1, -1, -1):
        if (bound >> b) & 1:
            cubes.append(((b, 0),) + tuple((c, (bound >> c) & 1) for c in range(bits - 1, b, -1)))
    return cubes


def flatten_blocks(frame: FrameCircuit | None, k: int | None = None, controls: tuple[tuple[int, int], ...] = (),
                   offset: int = 0) -> list[tuple[Gate, str]]:
    """The frame's gates with their controls, each with the part of the construction it belongs to
    (e.g. ``"B₁ rows 0–511"``, ``"CS(φ): row i ↔ 512+i, i < 256"``, ``"Q256 rows 512–767"``). ``k`` (the frame's columns, at the
    top level only) lets ``B₁`` drop its control when every column starts in the upper half."""
    if frame is None:
        return []
    if isinstance(frame, Block):
        label = f"Q{frame.rows} rows {offset}–{offset + frame.rows - 1}"
        return [(g.controlled(*controls), label) for g in frame.circuit.gates]
    q = qubits_for(frame.rows)
    top = q - 1
    n1, n2 = frame.half, frame.rows - frame.half
    out: list[tuple[Gate, str]] = []
    own = () if (k is not None and k <= n1) else ((top, 0),)
    out += [(g.controlled(*controls, *own), f"B₁ rows {offset}–{offset + n1 - 1}") for g in frame.before.gates]
    cs = f"CS(φ): row {offset}+i ↔ {offset + n1}+i, i < {n2}" if offset else f"CS(φ): row i ↔ {n1}+i, i < {n2}"
    for cube in _below(n2, top):
        out.append((Gate("ry", (top,), ("param", frame.angle), tuple(controls) + cube, 2.0), cs))
    out += [(g.controlled(*controls, (top, 0)), f"A₁ rows {offset}–{offset + n1 - 1}") for g in frame.after.gates]
    out += flatten_blocks(frame.rest, None, tuple(controls) + ((top, 1),), offset + n1)
    return out


def flatten(frame: FrameCircuit | None, k: int | None = None,
            controls: tuple[tuple[int, int], ...] = ()) -> list[Gate]:
    """The frame's gates with their controls (:func:`flatten_blocks` without the labels)."""
    return [g for g, _ in flatten_blocks(frame, k, controls)]


def pauli_frame_circuit(n: int, layers: int, k: int | None = None) -> Circuit:
    """The ``pauli`` frame of size ``n`` as one :class:`Circuit` on ``⌈log₂ n⌉`` qubits, exact on
    its first ``k`` basis states (all ``n`` when ``k`` is not given)."""
    nq = qubits_for(n)
    return Circuit(nq, tuple(flatten(pauli_frame(n, layers), k if k is not None else n)), pauli_count(n, layers))


# ------------------------------------------------------------------------------ torch kernel
GROUP = 4  # qubits whose rotations are fused into one 2^4×2^4 Kronecker factor
_WIDE = 512  # below this many columns per row group, a factor is applied with its axis moved first


@cache
def kernel_ops(circuit: Circuit) -> tuple:
    """An uncontrolled RY/CZ circuit compiled for :func:`run_kernel`: each run of RY gates on distinct
    qubits becomes Kronecker factors on up to :data:`GROUP` contiguous qubits, each run of CZ gates
    one ±1 diagonal. Exact: only the grouping of commuting gates changes."""
    n = circuit.n_qubits
    ops: list = []
    run: dict[int, int] = {}
    sign: torch.Tensor | None = None
    idx = torch.arange(1 << n)

    def flush_ry() -> None:
        qs = sorted(run)
        start = 0
        while start < len(qs):
            stop = start + 1
            while stop < len(qs) and stop - start < GROUP and qs[stop] == qs[stop - 1] + 1:
                stop += 1
            angles = tuple(run[q] for q in qs[start:stop])
            contiguous = angles == tuple(range(angles[0], angles[0] + len(angles)))
            ops.append(("ry", qs[start], stop - start, angles if not contiguous else None, angles[0]))
            start = stop
        run.clear()

    def flush_cz() -> None:
        nonlocal sign
        if sign is not None:
            values = tuple(sign.tolist())
            ops.append(("cz", _SIGN_IDS.setdefault(values, len(_SIGN_IDS)), values))
        sign = None

    for g in circuit.gates:
        if g.controls or g.factor != 1.0 or g.name not in ("ry", "cz") or (g.angle and g.angle[0] != "param"):
            raise ValueError("kernel_ops compiles uncontrolled RY/CZ circuits with parameter angles")
        if g.name == "ry":
            flush_cz()
            if g.qubits[0] in run:
                flush_ry()
            run[g.qubits[0]] = g.angle[1]  # type: ignore[index]
        else:
            flush_ry()
            a, b = g.qubits
            z = 1 - 2 * (((idx >> a) & 1) & ((idx >> b) & 1))
            sign = z if sign is None else sign * z
    flush_ry()
    flush_cz()
    return tuple(ops)


_SIGN_IDS: dict[tuple, int] = {}     # a ±1 diagonal → a small id (the hot path hashes the id, not 2ⁿ values)
_SIGNS: dict[tuple, torch.Tensor] = {}


def _signs(sid: int, values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (sid, dtype, device)
    t = _SIGNS.get(key)
    if t is None:
        t = _SIGNS[key] = torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1)
    return t


def run_kernel(circuit: Circuit | tuple, state: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply a power-of-two circuit (or its :func:`kernel_ops`) to the columns of ``state``
    (G, 2ⁿ, K); ``cos``/``sin`` are ``cos(θ/2)``, ``sin(θ/2)`` of the frame's angles, (G, count)."""
    g, dim, k = state.shape
    ops = kernel_ops(circuit) if isinstance(circuit, Circuit) else circuit
    for op in ops:
        if op[0] == "cz":
            state = state * _signs(op[1], op[2], state.dtype, state.device)
            continue
        _, lo, size, scattered, a0 = op
        c = cos[:, a0:a0 + size] if scattered is None else cos[:, list(scattered)]
        s = sin[:, a0:a0 + size] if scattered is None else sin[:, list(scattered)]
        rot = torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)   # (G, size, 2, 2)
        mat = rot[:, 0]
        for j in range(1, size):  # higher qubits are the more significant factor
            r = rot[:, j]
            d = mat.shape[-1]
            mat = (r[:, :, None, :, None] * mat[:, None, :, None, :]).reshape(g, 2 * d, 2 * d)
        h, w = dim >> (lo + size), (1 << lo) * k
        if w >= _WIDE or h == 1:
            # the rows below the block are wide enough: one broadcast matmul over the blocks above
            state = torch.matmul(mat.unsqueeze(1), state.reshape(g, h, 1 << size, w)).reshape(g, dim, k)
        else:
            # few columns per row group (the lowest qubits): move the block's axis first, one bmm with
            # long rows — a broadcast matmul of many tiny matrices is ~100× slower here
            view = state.reshape(g, h, 1 << size, w).transpose(1, 2).reshape(g, 1 << size, h * w)
            state = torch.bmm(mat, view).reshape(g, 1 << size, h, w).transpose(1, 2).reshape(g, dim, k)
    return state


@dataclass(frozen=True)
class CompiledFrame:
    """A frame description with its power-of-two factors compiled to kernel ops (built once per
    frame module, so the forward pass looks nothing up)."""

    rows: int
    half: int
    block: tuple | None = None          # the ops of a power-of-two frame
    before: tuple = ()
    angle: int = 0
    after: tuple = ()
    rest: CompiledFrame | None = None


@cache
def compile_frame(frame: FrameCircuit | None) -> CompiledFrame | None:
    """The frame description with every power-of-two factor compiled by :func:`kernel_ops`."""
    if frame is None:
        return None
    if isinstance(frame, Block):
        return CompiledFrame(frame.rows, frame.rows, block=kernel_ops(frame.circuit))
    return CompiledFrame(frame.rows, frame.half, None, kernel_ops(frame.before), frame.angle, kernel_ops(frame.after),
                         compile_frame(frame.rest))


def apply_frame(frame: CompiledFrame | None, state: torch.Tensor, theta: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
    """Apply a compiled frame description to ``state`` (G, rows, K) — rows only, never
    ``2^⌈log₂ N⌉``: each control on a top qubit is a slice of the rows. ``theta`` are the angles
    (for ``CS``), ``cos``, ``sin`` their half-angle cosines and sines."""
    if frame is None:
        return state
    if frame.block is not None:
        return run_kernel(frame.block, state, cos, sin)
    n1, n2 = frame.half, frame.rows - frame.half
    top = run_kernel(frame.before, state[:, :n1], cos, sin)
    bot = state[:, n1:]
    phi = theta[:, frame.angle]
    c = torch.cos(phi).view(-1, 1, 1)
    s = torch.sin(phi).view(-1, 1, 1)
    t = top[:, :n2]
    top = torch.cat((c * t - s * bot, top[:, n2:]), dim=1)
    bot = s * t + c * bot
    top = run_kernel(frame.after, top, cos, sin)
    bot = apply_frame(frame.rest, bot, theta, cos, sin)
    return torch.cat((top, bot), dim=1)


# ------------------------------------------------------------------------------ givens
def givens_circuit(n: int, pairs: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]) -> Circuit:
    """The butterfly frame (rows ``a`` and ``b = a + 2^s`` rotated by one angle each, layer by layer,
    in the order of ``pairs``) as fully controlled ``RY(2θ)`` gates on ``⌈log₂ n⌉`` qubits."""
    nq = qubits_for(n)
    gates = []
    k = 0
    for a_rows, b_rows in pairs:
        for a, b in zip(a_rows, b_rows):
            t = (b - a).bit_length() - 1
            controls = tuple((q, (a >> q) & 1) for q in range(nq - 1, -1, -1) if q != t)
            gates.append(Gate("ry", (t,), ("param", k), controls, 2.0))
            k += 1
    return Circuit(nq, tuple(gates), k)
