r"""The circuit descriptions of circuit-shaped frames — one description per frame, which its torch
kernel, its Qiskit circuit, its drawing and its resource count all follow.

**Pauli frames of any size.** For ``N = 2ⁿ`` the frame is Quantum-PEFT's two-design circuit
(:func:`tnpeft.circuits.circuit.pauli_circuit`). For any other ``N`` it is the cosine–sine split

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
from typing import Union

from tnpeft.caches import memoized
from tnpeft.circuits.circuit import Circuit, Gate, circuit_angle_count, pauli_circuit


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


@memoized("circuits:pauli_frame")
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
