r"""Frames with their signs from shallow circuits: no ancilla, no controlled ``U``.

The interference circuits of :mod:`tnpeft.quantum.signed` control every gate of ``U`` on an
ancilla — on a heavy-hex device a 512-row Pauli frame grows from 8 to ~340 two-qubit gates — and
pay ``√D`` in shot noise. This estimator runs the frame's own circuit, with one-qubit rotations
around it (:func:`phase_circuit`: ``RY(x_q)`` on every qubit before ``U``, ``RY(y_q)`` after):

- **magnitudes**: ``|j⟩`` prepared (``x_q = π·bit_q(j)``), ``U``, measure: ``p_i = U_ij²``;
- **signs within a column**: the same with ``y_b = −π/2`` on one qubit ``b`` (a Hadamard-like
  rotation): ``P(i₀) − P(i₁) = 2·U_{i₀j}·U_{i₁j}`` for ``i₁ = i₀ + 2^b`` — the relative sign of two
  rows that differ in bit ``b``. Every row is linked to its ``n`` neighbours on the hypercube;
  the signs are propagated from the largest entry along a maximum spanning tree of ``|P(i₀) − P(i₁)|``
  (the links measured most clearly);
- **signs between columns**: ``(|j₀⟩ + |j⟩)/√2`` prepared (``j₀ = j − 2^msb(j)``: ``x = π·bits(j₀)``
  with ``π/2`` on bit ``msb(j)``), ``U``, measure: ``p_i − (p_{ij₀} + p_{ij})/2 = U_{ij₀}·U_{ij}``,
  whose sum against the reconstructed columns gives ``sign(σ_{j₀} σ_j)``;
- **the global sign** of column 0 — a global phase, which no measurement of ``U|j⟩`` reveals —
  is taken from the exact frame (one bit per frame of classical side information: the sign of
  ``Σ_i Û_{i0} U_{i0}``). In ``ΔW = U Λ Vᵀ`` only the product of the two frames' signs matters.

Cost per frame of ``K`` columns on ``n`` qubits: ``K`` + ``K·n`` + ``K − 1`` circuits, each as
deep as ``U`` plus two layers of one-qubit gates; all of them (and all frames of one shape) are
bindings of one parameterized circuit. Shot noise enters the magnitudes as ``1/(2√S)`` per entry,
without the ``√D`` of interference. The estimate is nonlinear in the probabilities: use it to
evaluate, not to train (training uses the interference circuits, linear in them).
"""

from __future__ import annotations

import math

import numpy as np

from tnpeft.caches import memoized
from tnpeft.circuits.circuit import Circuit, Gate


@memoized("circuits:phase")
def phase_circuit(circuit: Circuit) -> Circuit:
    """``RY(x_q)`` on every qubit, ``circuit``, then ``RY(y_q)`` on every qubit; inputs
    ``(x_0 … x_{n−1}, y_0 … y_{n−1})`` (:func:`phase_inputs`)."""
    n = circuit.n_qubits
    gates = [Gate("ry", (q,), ("input", q)) for q in range(n)] + list(circuit.gates)
    gates += [Gate("ry", (q,), ("input", n + q)) for q in range(n)]
    return Circuit(n, tuple(gates), circuit.n_params, 2 * n)


def phase_inputs(n_qubits: int, k: int) -> np.ndarray:
    """The inputs of :func:`phase_circuit` for ``k`` columns, ``(k + k·n + k − 1, 2n)``: first the
    ``k`` columns, then column ``j`` with ``−π/2`` after on qubit ``b`` (row ``k + j·n + b``), then the
    ``k − 1`` column pairs ``(j − 2^msb(j), j)`` for ``j = 1 … k − 1``."""
    n = n_qubits
    rows: list[list[float]] = []

    def bits(j: int) -> list[float]:
        return [math.pi * ((j >> q) & 1) for q in range(n)]

    for j in range(k):
        rows.append(bits(j) + [0.0] * n)
    for j in range(k):
        for b in range(n):
            rows.append(bits(j) + [(-math.pi / 2 if q == b else 0.0) for q in range(n)])
    for j in range(1, k):
        top = j.bit_length() - 1
        x = bits(j - (1 << top))
        x[top] = math.pi / 2
        rows.append(x + [0.0] * n)
    return np.asarray(rows, dtype=np.float64)


def _column_signs(mag: np.ndarray, links: np.ndarray, n: int) -> np.ndarray:
    """Signs ``(D,)`` of one column from its magnitudes and ``links[b, i₀] ≈ U_{i₀}·U_{i₀+2^b}``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

    d = mag.shape[0]
    i = np.arange(d)
    rows, cols, weights = [], [], []
    for b in range(n):
        lo = i[((i >> b) & 1) == 0]
        rows.append(lo)
        cols.append(lo | (1 << b))
        weights.append(1.0 / (np.abs(links[b, lo]) + 1e-12))      # the spanning tree keeps the clearest links
    r, c = np.concatenate(rows), np.concatenate(cols)
    tree = minimum_spanning_tree(coo_matrix((np.concatenate(weights), (r, c)), shape=(d, d)).tocsr())
    order, pred = breadth_first_order(tree, int(np.argmax(mag)), directed=False, return_predecessors=True)
    sign = np.ones(d)
    for v in order[1:]:
        u = int(pred[v])
        v = int(v)
        p = links[(u ^ v).bit_length() - 1, min(u, v)]
        sign[v] = sign[u] * (1.0 if p >= 0 else -1.0)
    return sign


def reconstruct_frame(probs: np.ndarray, n_qubits: int, k: int, reference: np.ndarray | None = None) -> np.ndarray:
    """The frame's first ``k`` columns ``(2ⁿ, k)`` from the probabilities ``(rows, 2ⁿ)`` of the
    :func:`phase_inputs` rows; ``reference`` (the exact columns) fixes the one global sign."""
    n, d = n_qubits, 1 << n_qubits
    base = probs[:k]
    had = probs[k:k + k * n].reshape(k, n, d)
    pairs = probs[k + k * n:]
    mag = np.sqrt(np.clip(base, 0.0, None))                               # (k, D)
    cols = np.zeros((k, d))
    i = np.arange(d)
    for j in range(k):
        links = np.zeros((n, d))
        for b in range(n):
            lo = i[((i >> b) & 1) == 0]
            links[b, lo] = (had[j, b, lo] - had[j, b, lo | (1 << b)]) / 2
        cols[j] = mag[j] * _column_signs(mag[j], links, n)
    for j in range(1, k):
        j0 = j - (1 << (j.bit_length() - 1))
        overlap = pairs[j - 1] - (base[j0] + base[j]) / 2                  # ≈ U_{i j0} U_{i j}
        if float(overlap @ (cols[j0] * cols[j])) < 0:
            cols[j] = -cols[j]
    if reference is not None and float(cols[0] @ reference[:, 0]) < 0:
        cols = -cols
    return cols.T
