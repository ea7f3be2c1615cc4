"""The ``pauli`` frame: Quantum-PEFT's real two-design circuit, and a cosine–sine split for any N."""

from __future__ import annotations

from functools import cache

import torch

from tnpeft.params.circuit import circuit_angle_count
from tnpeft.params.unitary.base import AngleFrame, eye_frames, init_angles, quantize_ste


def is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def pauli_count(n: int, layers: int = 1) -> int:
    """Parameters of the ``pauli`` frame of size ``n``: ``circuit_angle_count(log₂ n)`` for a power
    of two; otherwise, with ``n = n₁ + n₂`` (``n₁`` the largest power of two below ``n``),
    ``2·circuit(n₁) + pauli_count(n₂) + 1`` (circuits before and after one cosine–sine rotation on
    the power-of-two block, the remainder recursively after it). ``pauli_count(1) = 0``. At most
    ``log₂ N`` levels of ``O(L log N)`` angles: ``O(L·log² N)``."""
    if n == 1:
        return 0
    if is_pow2(n):
        return circuit_angle_count(n.bit_length() - 1, layers)
    n1 = 1 << (n.bit_length() - 1)
    return 2 * circuit_angle_count(n1.bit_length() - 1, layers) + pauli_count(n - n1, layers) + 1


@cache
def _cz_signs_list(n_qubits: int, parity: int) -> tuple[float, ...]:
    # the diagonal of the product of CZ gates on pairs (q, q+1), q ≡ parity (mod 2); bit q of the row
    # index is qubit q (little-endian, as Qiskit)
    idx = torch.arange(1 << n_qubits)
    sign = torch.ones(1 << n_qubits)
    for q in range(parity, n_qubits - 1, 2):
        both = ((idx >> q) & 1) & ((idx >> (q + 1)) & 1)
        sign = sign * (1 - 2 * both)
    return tuple(sign.tolist())


_SIGN_CACHE: dict[tuple, torch.Tensor] = {}


def _cz_signs(n_qubits: int, parity: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (n_qubits, parity, dtype, device)
    t = _SIGN_CACHE.get(key)
    if t is None:
        t = torch.tensor(_cz_signs_list(n_qubits, parity), dtype=dtype, device=device).view(1, -1, 1)
        _SIGN_CACHE[key] = t
    return t


GROUP = 4  # qubits whose rotations are fused into one 2^4×2^4 Kronecker factor


def _ry_range(state: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, lo: int) -> torch.Tensor:
    """Apply RY(θⱼ) on qubit ``lo + j`` for every j (angles given as ``cos(θ/2)``, ``sin(θ/2)`` of
    shape (G, m)) to every column of ``state`` (G, 2ⁿ, K).

    Rotations on distinct qubits commute, so up to :data:`GROUP` of them are fused into one
    Kronecker factor, built with a few batched products of 2×2 matrices, and applied with one
    batched matrix product: ``⌈m/GROUP⌉`` state-sized operations instead of ``m``.
    """
    g, dim, k = state.shape
    m = cos.shape[1]
    rot = torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)  # (G, m, 2, 2)
    for start in range(0, m, GROUP):
        size = min(GROUP, m - start)
        mat = rot[:, start]
        for j in range(1, size):  # higher qubits are the more significant factor
            r = rot[:, start + j]
            d = mat.shape[-1]
            mat = (r[:, :, None, :, None] * mat[:, None, :, None, :]).reshape(g, 2 * d, 2 * d)
        q0 = lo + start
        view = state.reshape(g, dim >> (q0 + size), 1 << size, (1 << q0) * k)
        state = torch.matmul(mat.unsqueeze(1), view).reshape(g, dim, k)
    return state


def apply_circuit(state: torch.Tensor, theta: torch.Tensor, n_qubits: int, layers: int) -> torch.Tensor:
    """Apply the two-design circuit (angles ``theta`` of shape (G, count)) to ``state`` (G, 2ⁿ, K).

    Order (as in Quantum-PEFT, :func:`tnpeft.params.circuit.pauli_circuit`): RY on every qubit;
    then per layer CZ on pairs (0,1),(2,3),… each followed by RY on both its qubits, then CZ on
    pairs (1,2),(3,4),… likewise. CZs on disjoint pairs commute, so each half-layer's CZs are
    applied as one ±1 diagonal, and its RYs — on the contiguous qubits 0…2⌊n/2⌋−1, or
    1…2⌊(n−1)/2⌋ — as fused Kronecker factors.
    """
    half = theta / 2
    cos, sin = torch.cos(half), torch.sin(half)
    state = _ry_range(state, cos[:, :n_qubits], sin[:, :n_qubits], 0)
    a = n_qubits
    for _ in range(layers):
        for parity in (0, 1):
            m = 2 * ((n_qubits - parity) // 2)
            if m == 0:
                continue
            state = state * _cz_signs(n_qubits, parity, state.dtype, state.device)
            state = _ry_range(state, cos[:, a:a + m], sin[:, a:a + m], parity)
            a += m
    return state


class PauliFrame(AngleFrame):
    """``U = Q(θ)[:, :K]`` with ``Q(θ)`` the real two-design circuit (Quantum-PEFT, §3).

    For ``N = 2ⁿ`` this is exactly the circuit. For other ``N`` — the paper assembles such
    unitaries with generalized gates and the quantum Shannon decomposition — tnpeft uses the
    cosine–sine split ``Q_N = (A₁ ⊕ A₂) · CS(φ) · (B₁ ⊕ I)`` with ``N = N₁ + N₂``, ``N₁`` the
    largest power of two below ``N``: ``A₁, B₁`` are circuits on ``log₂ N₁`` qubits, ``A₂`` is
    ``Q_{N₂}`` recursively, and ``CS(φ)`` rotates row ``i`` with row ``N₁ + i`` (``i < N₂``) by one
    shared angle. (A second recursive factor ``B₂`` would act only on rows the first ``K ≤ N₁``
    columns of ``I`` leave at zero, and would make the count grow linearly, so it is left out.)
    Every factor is orthogonal, so ``Q_N`` is, exactly; the parameter count stays
    ``O(L log² N)`` (:func:`pauli_count`) and materializing costs ``O(N·K·L·log N)``.
    """

    def __init__(self, n: int, k: int, batch: tuple[int, ...] = (), layers: int = 1, bits: int | None = None,
                 init: str = "random", dtype=None, device=None, rng=None):
        super().__init__(n, k, batch)
        self.layers, self.bits = layers, bits
        self.theta = init_angles((*self.batch, pauli_count(n, layers)), init, dtype, device, rng)

    def _q(self, state: torch.Tensor, theta: torch.Tensor, n: int) -> torch.Tensor:
        if n == 1:
            return state
        if is_pow2(n):
            return apply_circuit(state, theta, n.bit_length() - 1, self.layers)
        n1 = 1 << (n.bit_length() - 1)
        n2 = n - n1
        c1 = circuit_angle_count(n1.bit_length() - 1, self.layers)
        b1, phi, a1, a2 = theta[:, :c1], theta[:, c1], theta[:, c1 + 1:2 * c1 + 1], theta[:, 2 * c1 + 1:]
        top = apply_circuit(state[:, :n1], b1, n1.bit_length() - 1, self.layers)
        bot = state[:, n1:]
        c = torch.cos(phi).view(-1, 1, 1)
        s = torch.sin(phi).view(-1, 1, 1)
        t = top[:, :n2]
        top = torch.cat((c * t - s * bot, top[:, n2:]), dim=1)
        bot = s * t + c * bot
        top = apply_circuit(top, a1, n1.bit_length() - 1, self.layers)
        bot = self._q(bot, a2, n2)
        return torch.cat((top, bot), dim=1)

    def options_key(self) -> tuple:
        return (self.layers, self.bits)

    def angles(self) -> torch.Tensor:
        """The angles the circuit uses, ``(G, count)``: quantized when the frame has ``bits``."""
        return quantize_ste(self.flat_param(), self.bits)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        theta = quantize_ste(flat, self.bits)
        return self._q(eye_frames(self.n, self.k, theta.shape[0], theta), theta, self.n)
