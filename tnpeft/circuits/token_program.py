r"""A data re-uploading circuit run for a batch of tokens at the cost of a few matrix products.

A QNN circuit alternates *encoding* runs (``RY(x_j)`` gates that read the token's features) with
*fixed* runs (the trainable rotations and the entangling ladder, the same for every token). A
fixed run is one ``2ⁿ × 2ⁿ`` matrix, built once per forward pass from the angles (runs of the
same shape in one batched simulation); an encoding run is, per token, a Kronecker product of
one-qubit rotations, expanded as a weighted sum of ``2^|Q|`` fixed signed permutations (see
:func:`run_token_program`). So a batch of ``B`` tokens costs, per encoding run, one matrix
product and one weighted sum — instead of one simulator step per gate, each with its own
per-token matrices. The first encoding run acts on ``|0…0⟩`` and gives a product state directly.
Exact: the same gates in the same order.
"""

from __future__ import annotations

from typing import Any

import torch

from tnpeft.caches import LRUCache, lru_table, memoized
from tnpeft.circuits.circuit import Circuit, Gate, unitary_matrix

#: encoded qubits up to which a run is expanded over the subsets of its qubits (beyond, qubit by qubit)
_DENSE_QUBITS = 6


@memoized("token_programs:programs")
def token_program(circuit: Circuit) -> tuple[tuple[Any, ...], ...] | None:
    """The circuit as ``("encode", inputs per qubit)`` and ``("fixed", template, param indices)``
    runs, or ``None`` when an input-reading gate is controlled or scaled (the simulator runs those)."""
    runs: list[tuple[Any, ...]] = []
    enc: dict[int, int] = {}
    fixed: list[Gate] = []

    def flush_fixed() -> None:
        if not fixed:
            return
        used: list[int] = []
        gates = []
        for g in fixed:
            if g.angle is not None:
                k = g.angle[1]
                if k not in used:
                    used.append(k)
                g = Gate(g.name, g.qubits, ("param", used.index(k)), g.controls, g.factor)
            gates.append(g)
        runs.append(("fixed", Circuit(circuit.n_qubits, tuple(gates), max(len(used), 1)), tuple(used)))
        fixed.clear()

    def flush_enc() -> None:
        if enc:
            runs.append(("encode", tuple(enc.get(q, -1) for q in range(circuit.n_qubits))))
            enc.clear()

    for g in circuit.gates:
        if g.angle is not None and g.angle[0] == "input":
            if g.controls or g.factor != 1.0:
                return None
            flush_fixed()
            if g.qubits[0] in enc:
                flush_enc()
            enc[g.qubits[0]] = g.angle[1]
        else:
            flush_enc()
            fixed.append(g)
    flush_enc()
    flush_fixed()
    return tuple(runs)


def _rotations(x: torch.Tensor, inputs: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-angle cosines and sines ``(B, n)`` per qubit (angle 0 where the run reads nothing)."""
    ext = torch.cat((x, x.new_zeros(x.shape[0], 1)), 1)
    idx = torch.tensor(inputs, device=x.device)
    half = ext[:, idx] * 0.5
    return torch.cos(half), torch.sin(half)


def _signed_flips(n: int, qubits: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``J_S`` for every subset ``S`` of ``qubits`` (bit ``t`` of ``S`` ↔ ``qubits[t]``), ``(2^|Q|, 2ⁿ, 2ⁿ)``:
    ``J = [[0, −1], [1, 0]]`` on each qubit of ``S``, so that ``⊗_q RY(x_q) = Σ_S Π c/s · J_S``."""
    key = (n, qubits, dtype, device)
    hit = _FLIPS.get(key)
    if hit is not None:
        return hit
    d = 1 << n
    i = torch.arange(d)
    out = torch.zeros(1 << len(qubits), d, d, dtype=dtype)
    for sub in range(1 << len(qubits)):
        mask, sign = 0, torch.ones(d, dtype=dtype)
        for t, q in enumerate(qubits):
            if sub >> t & 1:
                mask |= 1 << q
                sign = sign * (2.0 * ((i >> q) & 1) - 1.0)      # J|0⟩ = |1⟩, J|1⟩ = −|0⟩: row bit 1 → +
        out[sub, i, i ^ mask] = sign
    return _FLIPS.put(key, out.to(device))


_FLIPS: LRUCache[tuple[int, tuple[int, ...], torch.dtype, torch.device], torch.Tensor] = lru_table("tables:token_flips")


def _product(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``⊗_t (c_t, s_t)`` over the last axis of ``c, s`` ``(B, m)``, index bit ``t`` ↔ column ``t``: ``(B, 2^m)``."""
    b, m = c.shape
    out = torch.ones(b, 1, dtype=c.dtype, device=c.device)
    for t in range(m - 1, -1, -1):
        out = (out[:, :, None] * torch.stack((c[:, t], s[:, t]), -1)[:, None, :]).reshape(b, -1)
    return out


def run_token_program(program: tuple[tuple[Any, ...], ...], n_qubits: int, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Final states ``(B, 2ⁿ)`` for tokens ``x`` ``(B, n_inputs)`` and angles ``theta``.

    An encoding run on qubits ``Q`` followed by a fixed matrix ``U`` is
    ``U·⊗_q RY(x_q) = Σ_{S⊆Q} (Π_{q∈S} sin Π_{q∉S} cos)(x/2) · U J_S``: one product of the states
    with the ``2^|Q|`` fixed matrices ``U J_S`` and one weighted sum per token."""
    b, d = x.shape[0], 1 << n_qubits
    mats: dict[int, torch.Tensor] = {}
    by_template: dict[Circuit, list[int]] = {}
    for i, run in enumerate(program):
        if run[0] == "fixed":
            by_template.setdefault(run[1], []).append(i)
    for template, where in by_template.items():
        if program[where[0]][2]:
            params = torch.stack([theta[list(program[i][2])] for i in where])
        else:                 # a run of CX/CZ gates only: its template reads one unused angle
            params = theta.new_zeros(len(where), 1)
        for i, m in zip(where, unitary_matrix(template, params)):
            mats[i] = m
    state = None
    i = 0
    while i < len(program):
        run = program[i]
        if run[0] == "fixed":
            state = mats[i][:, 0].expand(b, d) if state is None else state @ mats[i].T
            i += 1
            continue
        qubits = tuple(q for q in range(n_qubits) if run[1][q] >= 0)
        c, s = _rotations(x, tuple(run[1][q] for q in qubits))
        if state is None:   # from |0…0⟩: the product state ⊗_q (cos, sin) directly
            full_c = torch.ones(b, n_qubits, dtype=x.dtype, device=x.device)
            full_s = torch.zeros(b, n_qubits, dtype=x.dtype, device=x.device)
            idx = torch.tensor(qubits, device=x.device)
            state = _product(full_c.index_copy(1, idx, c), full_s.index_copy(1, idx, s))
            i += 1
            continue
        u = mats.get(i + 1) if i + 1 < len(program) and program[i + 1][0] == "fixed" else None
        if len(qubits) <= _DENSE_QUBITS:
            flips = _signed_flips(n_qubits, qubits, x.dtype, x.device)            # (2^|Q|, d, d)
            w = flips if u is None else u @ flips                                  # U J_S
            y = (state @ w.reshape(-1, d).T).reshape(b, -1, d)                     # (B, 2^|Q|, d)
            state = torch.bmm(_product(c, s).unsqueeze(1), y).squeeze(1)
        else:
            for t, q in enumerate(qubits):
                v = state.reshape(b, d >> (q + 1), 2, 1 << q)
                a0, a1 = v[:, :, 0], v[:, :, 1]
                cq, sq = c[:, t, None, None], s[:, t, None, None]
                state = torch.stack((cq * a0 - sq * a1, sq * a0 + cq * a1), 2).reshape(b, d)
            if u is not None:
                state = state @ u.T
        i += 1 if u is None else 2
    if state is None:
        state = torch.zeros(b, d, dtype=x.dtype, device=x.device)
        state[:, 0] = 1.0
    return state
