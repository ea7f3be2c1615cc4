"""Exact circuits for frames that have no circuit of their own: ``qs_decomposition`` of an
orthogonal completion, checked and redone when Qiskit's decomposition comes out inaccurate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from tnpeft.errors import ConfigError, GraphError

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit

#: the largest register a frame is synthesized on by default (``qs_decomposition`` needs
#: ``(22/48)·4ⁿ − (3/2)·2ⁿ + 5/3`` CX gates: 29,655 at 8 qubits, 479,745 at 10)
MAX_SYNTHESIS_QUBITS = 8


def frame_qubits(n: int) -> int:
    """Qubits a frame with ``n`` rows needs: ``⌈log₂ n⌉``, at least one."""
    return max(1, (n - 1).bit_length())


def orthogonal_completion(frame: np.ndarray, n_qubits: int | None = None) -> np.ndarray:
    """A ``2ⁿ×2ⁿ`` real orthogonal matrix whose first ``K`` columns, restricted to the first ``N``
    rows, are ``frame`` (``N×K``, orthonormal columns) and which is the identity outside the top-left
    ``N×N`` block.

    The frame is first replaced by its nearest matrix with exactly orthonormal columns (its polar
    factor; a change at the level of the frame's own rounding), then completed by the remaining
    columns of a complete QR factorization.
    """
    u = np.asarray(frame, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] > u.shape[0]:
        raise ConfigError(f"a frame must be an N×K matrix with K ≤ N, got shape {u.shape}", field="frame")
    n, k = u.shape
    w, _, vt = np.linalg.svd(u, full_matrices=False)
    u = w @ vt
    q, _ = np.linalg.qr(u, mode="complete")
    q[:, :k] = u
    nq = frame_qubits(n) if n_qubits is None else n_qubits
    if (1 << nq) < n:
        raise ConfigError(f"{nq} qubits hold {1 << nq} basis states, fewer than the frame's {n} rows", field="qubits")
    full = np.eye(1 << nq)
    full[:n, :n] = q
    return full


def apply_circuit_columns(circuit: QuantumCircuit, states: np.ndarray) -> np.ndarray:
    """Apply ``circuit`` (global phase included) to the columns of ``states`` (``2ⁿ × m``, basis
    index = little-endian bit string): a small exact simulator for checking circuits, linear in
    the gate count. A controlled gate acts as its base gate on the basis states its controls
    select (never as a ``2^{k+1}``-dimensional matrix); a gate on more than six qubits without a
    cheaper form is applied through its definition."""
    from qiskit.circuit import ControlledGate

    psi = np.array(states, dtype=complex)
    psi = _apply(circuit, psi, list(range(circuit.num_qubits)), circuit.num_qubits, ControlledGate)
    return psi * np.exp(1j * float(circuit.global_phase))


def _apply(circuit: QuantumCircuit, psi: np.ndarray, wires: list[int], n: int, controlled_type: type[Any]) -> np.ndarray:
    m = psi.shape[1]
    where = {q: wires[i] for i, q in enumerate(circuit.qubits)}
    for inst in circuit.data:
        op = inst.operation
        qs = [where[q] for q in inst.qubits]
        base_mat: np.ndarray | None = None
        if isinstance(op, controlled_type) and op.num_ctrl_qubits:
            try:
                base_mat = np.asarray(op.base_gate.to_matrix(), dtype=complex)
            except Exception:  # a controlled custom gate: through its definition below
                base_mat = None
        if base_mat is not None:
            k = op.num_ctrl_qubits
            ctrl, tgt = qs[:k], qs[k:]
            idx = np.arange(1 << n)
            sel = np.ones(1 << n, dtype=bool)
            for p, q in enumerate(ctrl):
                sel &= ((idx >> q) & 1) == ((op.ctrl_state >> p) & 1)
            # the selected states, grouped by their target bits: rows of the base gate
            base = idx[sel & np.all([((idx >> q) & 1) == 0 for q in tgt], axis=0)]
            offsets = [sum(((c >> j) & 1) << q for j, q in enumerate(tgt)) for c in range(1 << len(tgt))]
            block = np.stack([psi[base + o] for o in offsets])          # (2^t, states, m)
            new = np.tensordot(base_mat, block, axes=(1, 0))
            psi = psi.copy()
            for c, o in enumerate(offsets):
                psi[base + o] = new[c]
            continue
        r = len(qs)
        mat: np.ndarray | None = None
        if r <= 6:
            try:
                mat = np.asarray(op.to_matrix(), dtype=complex)
            except Exception:  # a custom gate (e.g. read back from QASM) known by its definition only
                mat = None
        if mat is None:
            if op.definition is None:
                raise ConfigError(f"gate {op.name!r} has neither a matrix nor a definition", field="circuit")
            psi = _apply(op.definition, psi, qs, n, controlled_type)
            psi = psi * np.exp(1j * float(op.definition.global_phase))
            continue
        if r == 0:
            psi = psi * mat[0, 0]
            continue
        axes = [n - 1 - q for q in reversed(qs)]   # tensor axis 0 is the most significant qubit
        t = np.moveaxis(psi.reshape((2,) * n + (m,)), axes, range(r)).reshape(1 << r, -1)
        t = (mat @ t).reshape((2,) * n + (m,))
        psi = np.ascontiguousarray(np.moveaxis(t, range(r), axes)).reshape(1 << n, m)
    return psi


#: largest entry of ``circuit·v − M·v`` (Gaussian probes ``v`` on the node's columns) accepted from
#: a synthesis on up to 4 qubits (scaled by ``2ⁿ/16`` above); a correct synthesis is off by ~1e-13,
#: while Qiskit's two-qubit decomposer occasionally returns one off by 1e-9 … 1e-5
SYNTHESIS_TOL = 1e-10


def _synthesis_attempts(full: np.ndarray, k: int, n_rows: int) -> Iterator[Callable[[], QuantumCircuit]]:
    """Exact variants of one synthesis problem, cheapest first: the matrix itself; times a global
    phase; with the qubit order reversed; with the completion's free columns rotated; and last,
    split into two factors ``(M R)·Rᵀ`` (twice the gates)."""
    from qiskit.synthesis import qs_decomposition

    rng = np.random.default_rng(12345)
    yield lambda: qs_decomposition(full)
    for phi in (0.37, 1.9):
        def phased(phi: float = phi) -> QuantumCircuit:
            qc = qs_decomposition(full * np.exp(1j * phi))
            qc.global_phase -= phi
            return qc
        yield phased
    dim = full.shape[0]
    nq = dim.bit_length() - 1
    rev = np.array([int(format(i, f"0{nq}b")[::-1], 2) for i in range(dim)])
    yield lambda: qs_decomposition(full[np.ix_(rev, rev)]).reverse_bits()
    if k < n_rows:
        rot = np.linalg.qr(rng.normal(size=(n_rows - k, n_rows - k)))[0]
        other = full.copy()
        other[:n_rows, k:n_rows] = full[:n_rows, k:n_rows] @ rot
        yield lambda: qs_decomposition(other)
    r = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    yield lambda: qs_decomposition(r.T).compose(qs_decomposition(full @ r))


def synthesize_frame(frame: np.ndarray, *, name: str | None = None,
                     max_qubits: int = MAX_SYNTHESIS_QUBITS) -> QuantumCircuit:
    """An exact circuit for an ``N×K`` frame: ``qs_decomposition`` of its
    :func:`orthogonal_completion`. ``Operator(circuit).data[:N, :K]`` equals the frame (to ~1e-12).

    Every synthesis is checked on random vectors in the span of the first ``K`` basis states; if
    Qiskit's decomposition comes out inaccurate (it occasionally does, by ~1e-5), exact variants
    of the problem are tried (:data:`SYNTHESIS_TOL`).

    Raises :class:`ConfigError` (field ``max_synthesis_qubits``) when the frame needs more than
    ``max_qubits`` qubits — the synthesis grows like ``4ⁿ`` — and :class:`GraphError` if no
    variant is accurate.
    """
    u = np.asarray(frame, dtype=np.float64)
    n_rows, k = u.shape
    nq = frame_qubits(n_rows)
    where = f"node {name!r}: " if name else ""
    if nq > max_qubits:
        cx = round(22 / 48 * 4 ** nq - 1.5 * 2 ** nq + 5 / 3)
        raise ConfigError(f"{where}synthesizing a frame with {n_rows} rows needs {nq} qubits and about {cx:,} CX "
                          f"gates; the limit is {max_qubits} qubits (raise max_synthesis_qubits to allow it, or use "
                          "param 'pauli' or 'givens', which compile to circuits of their own at any size)",
                          field="max_synthesis_qubits")
    full = orthogonal_completion(u, nq)
    probes = np.zeros((full.shape[0], 2))
    probes[:k] = np.random.default_rng(0).normal(size=(k, 2))
    want = full @ probes
    worst = 0.0
    for attempt in _synthesis_attempts(full, k, n_rows):
        qc = attempt()
        err = float(np.abs(apply_circuit_columns(qc, probes) - want).max())
        if err <= SYNTHESIS_TOL * max(1.0, full.shape[0] / 16):
            qc.name = name or "frame"
            return qc
        worst = err if worst == 0.0 else min(worst, err)
    raise GraphError(f"{where}no exact synthesis of its {n_rows}×{k} frame was found (best error {worst:.1e}); "
                     "qiskit.synthesis.qs_decomposition lost precision on every variant tried", node=name)
