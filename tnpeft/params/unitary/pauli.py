"""The ``pauli`` frame: Quantum-PEFT's real two-design circuit, and a cosine–sine split for any N.

The frame is computed from its circuit description (:mod:`tnpeft.circuits.frames`): the
same data the Qiskit export and the drawing follow.
"""

from __future__ import annotations

from typing import Sequence, cast

import torch

from tnpeft.circuits.circuit import Circuit, pauli_circuit
from tnpeft.circuits.frame_kernel import (
    CompiledFrame,
    Program,
    compile_frame,
    compile_program,
    factor_matrices,
    kernel_ops,
    run_kernel,
    run_program,
)
from tnpeft.circuits.frames import pauli_count, pauli_frame, pauli_frame_circuit
from tnpeft.errors import ConfigError
from tnpeft.params.unitary.base import AngleFrame, eye_frames, init_angles, quantize_ste

__all__ = ["PauliFrame", "apply_circuit", "is_pow2", "next_pow2", "pauli_count", "pauli_param_count", "project_rows"]


def is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def next_pow2(n: int) -> int:
    """The smallest power of two ``≥ n``."""
    return 1 << max(0, (n - 1).bit_length())


def pauli_param_count(n: int, k: int = 1, layers: int = 1, bits: int | None = None, init: str = "random",
                      pow2: bool = False) -> int:
    """Angles of a ``pauli`` frame of ``n`` rows: :func:`pauli_count` of ``n``, or of the next power
    of two with ``pow2``."""
    if not isinstance(pow2, bool):
        raise ConfigError(f"option 'pow2' must be true or false, got {pow2!r}", field="pow2")
    return pauli_count(next_pow2(n) if pow2 else n, layers)


def project_rows(columns: torch.Tensor, n: int) -> torch.Tensor:
    """The orthonormal frame ``(G, n, K)`` spanned by the first ``n`` rows of ``columns``
    ``(G, R, K)``: ``Q`` of the QR decomposition ``columns[:, :n] = Q R`` with ``diag(R) > 0`` —
    Gram–Schmidt on the kept rows, differentiable while they have full column rank."""
    kept = columns[:, :n, :]
    if n == columns.shape[1]:
        return kept
    q, r = torch.linalg.qr(kept)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return cast(torch.Tensor, q * sign[:, None, :])


def apply_circuit(state: torch.Tensor, theta: torch.Tensor, n_qubits: int, layers: int) -> torch.Tensor:
    """Apply the two-design circuit on ``n_qubits`` (angles ``theta`` of shape (G, count)) to the
    columns of ``state`` (G, 2ⁿ, K), with its fused kernel (:func:`~tnpeft.circuits.frame_kernel.run_kernel`)."""
    half = theta / 2
    return run_kernel(kernel_ops(pauli_circuit(n_qubits, layers)), state, torch.cos(half), torch.sin(half))


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
    ``O(L log² N)`` (:func:`pauli_count`) and materializing costs ``O(N·K·L·log N)``. The whole
    construction is one circuit on ``⌈log₂ N⌉`` qubits
    (:func:`tnpeft.circuits.frames.pauli_frame_circuit`).

    **pow2** (``options={"pow2": True}``; Quantum-PEFT's ``pow2=True``): a *different
    parametrization* for widths that are not a power of two, made for devices. The two-design
    circuit runs on ``R = 2^⌈log₂ N⌉`` rows and the frame is the orthonormal basis of its first ``N``
    rows (:func:`project_rows`): ``U = orth(Q_R(θ)[:N, :K])``. Orthonormal by construction; it has
    the ``R``-row circuit's angles (``circuit_angle_count(log₂ R, L)``, e.g. 25 instead of 64 for
    ``N = 384``, :func:`pauli_param_count`) and its gates: ``N = 384`` takes 8 CZ instead of the
    cosine–sine split's ~400 two-qubit gates after transpiling, ``N = 1000`` 9 instead of ~4,800.
    The projection is classical (one ``N×K`` QR); the device measures the ``R``-row circuit.
    """

    _kernel: CompiledFrame | None   # kept in __dict__ (see __init__)
    _program: Program | None

    def __init__(self, n: int, k: int, batch: Sequence[int] = (), layers: int = 1, bits: int | None = None,
                 init: str = "random", dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None, pow2: bool = False):
        super().__init__(n, k, batch)
        self.layers, self.bits, self.pow2 = layers, bits, bool(pow2)
        self.rows = next_pow2(n) if self.pow2 else n
        self.theta = init_angles((*self.batch, pauli_count(self.rows, layers)), init, dtype, device, rng)
        self.__dict__["_kernel"] = compile_frame(pauli_frame(self.rows, layers))   # plain data, not state
        # the flat program, made now (a compiled forward then reads plain data, no cache)
        self.__dict__["_program"] = compile_program(self._kernel) if self._kernel is not None else None

    def options_key(self) -> tuple[object, ...]:
        return (self.layers, self.bits, self.pow2)

    def device_circuit(self) -> Circuit | None:
        """The frame's circuit (the ``R``-row one with ``pow2``)."""
        return pauli_frame_circuit(self.rows, self.layers, self.k) if self.rows > 1 else None

    def circuit_angles(self, flat: torch.Tensor) -> torch.Tensor:
        return quantize_ste(flat, self.bits)

    def from_circuit_columns(self, columns: torch.Tensor) -> torch.Tensor:
        return project_rows(columns, self.n) if self.pow2 else columns[:, : self.n, :]

    def angles(self) -> torch.Tensor:
        """The angles the circuit uses, ``(G, count)``: quantized when the frame has ``bits``."""
        return quantize_ste(self.flat_param(), self.bits)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        theta = quantize_ste(flat, self.bits)
        half = theta / 2
        state = eye_frames(self.rows, self.k, theta.shape[0], theta)
        if self._kernel is None:   # N = 1: nothing to rotate
            return state.clone()
        program = self._program
        assert program is not None          # made with the kernel
        mats = factor_matrices(program, torch.cos(half), torch.sin(half))
        out = run_program(program, state, theta[:, list(program.cs_angles)], mats)
        return project_rows(out, self.n) if self.pow2 else out
