"""The ``pauli`` frame: Quantum-PEFT's real two-design circuit, and a cosine–sine split for any N.

The frame is computed from its circuit description (:mod:`tnpeft.circuits.frames`): the
same data the Qiskit export and the drawing follow.
"""

from __future__ import annotations

from typing import Sequence

import torch

from tnpeft.circuits.circuit import pauli_circuit
from tnpeft.circuits.frame_kernel import (
    CompiledFrame,
    compile_frame,
    compile_program,
    factor_matrices,
    kernel_ops,
    run_kernel,
    run_program,
)
from tnpeft.circuits.frames import pauli_count, pauli_frame
from tnpeft.params.unitary.base import AngleFrame, eye_frames, init_angles, quantize_ste

__all__ = ["PauliFrame", "apply_circuit", "is_pow2", "pauli_count"]


def is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


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
    """

    _kernel: CompiledFrame | None   # kept in __dict__ (see __init__)

    def __init__(self, n: int, k: int, batch: Sequence[int] = (), layers: int = 1, bits: int | None = None,
                 init: str = "random", dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None):
        super().__init__(n, k, batch)
        self.layers, self.bits = layers, bits
        self.theta = init_angles((*self.batch, pauli_count(n, layers)), init, dtype, device, rng)
        self.__dict__["_kernel"] = compile_frame(pauli_frame(n, layers))   # plain data, not state

    def options_key(self) -> tuple[object, ...]:
        return (self.layers, self.bits)

    def angles(self) -> torch.Tensor:
        """The angles the circuit uses, ``(G, count)``: quantized when the frame has ``bits``."""
        return quantize_ste(self.flat_param(), self.bits)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        theta = quantize_ste(flat, self.bits)
        half = theta / 2
        state = eye_frames(self.n, self.k, theta.shape[0], theta)
        if self._kernel is None:   # N = 1: nothing to rotate
            return state.clone()
        program = compile_program(self._kernel)
        mats = factor_matrices(program, torch.cos(half), torch.sin(half))
        return run_program(program, state, theta[:, list(program.cs_angles)], mats)
