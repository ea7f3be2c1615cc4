r"""Square frames from a packed skew-symmetric matrix: peft's OFT parametrizations.

The free parameters of one ``N×N`` block are the ``N(N−1)/2`` entries of the strict upper triangle
of ``T`` (row-major, ``torch.triu_indices(N, N, 1)``: peft's ``oft_R`` layout), and ``A = Tᵀ − T``.

* ``cayley_packed``: ``U = (I − A)(I + A)⁻¹`` — exactly orthogonal (peft's
  ``use_cayley_neumann=False``).
* ``cayley_neumann``: the truncated series ``U = I + 2 Σ_{j=1}^{M−1} Aʲ + Aᴹ`` with
  ``M = max(t − 1, 3)`` for ``t ≥ 3`` terms (``I + 2A`` for ``t = 2``, ``I`` for ``t = 1``) — peft's
  default. It is **not** orthogonal (``‖UᵀU − I‖`` grows like ``‖A‖ᵗ``); it is registered as
  approximate, so checks report its deviation instead of asserting orthogonality, and circuits
  refuse it.

peft rotates a row vector, ``x ← x R`` with ``R = (I − Q)(I + Q)⁻¹`` (or its series) and
``Q = T − Tᵀ``; the frames here are ``Rᵀ`` (``A = −Q``), so a layer computes ``W (U x)`` as peft's
does. Parameters: ``N(N−1)/2`` per block.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from tnpeft.params.linalg import solve
from tnpeft.params.unitary.base import FrameModule


def packed_count(n: int) -> int:
    """Free parameters of one ``n×n`` packed skew block: ``n(n−1)/2``."""
    return n * (n - 1) // 2


class PackedSkewFrame(FrameModule):
    """A square frame ``(N, N)`` from ``N(N−1)/2`` packed skew entries per batch item."""

    def __init__(self, n: int, k: int, batch: Sequence[int] = (), init: str = "random", terms: int = 5,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None) -> None:
        super().__init__(n, k, batch)
        v = torch.empty(*self.batch, packed_count(n), dtype=dtype, device=device)
        with torch.no_grad():
            if init == "random" and v.device.type != "meta":
                v.normal_(0.0, 0.1, generator=rng)
            elif v.device.type != "meta":
                v.zero_()
        self.terms = terms
        self.weight = nn.Parameter(v)

    def free_tensor(self) -> torch.Tensor:
        return self.weight

    def options_key(self) -> tuple[object, ...]:
        return (self.terms,)

    def skew(self, flat: torch.Tensor) -> torch.Tensor:
        """``A = Tᵀ − T`` of flat parameters ``(G, N(N−1)/2)`` → ``(G, N, N)``."""
        rows, cols = torch.triu_indices(self.n, self.n, 1, device=flat.device)
        t = flat.new_zeros(flat.shape[0], self.n, self.n)
        t[:, rows, cols] = flat
        return t.transpose(1, 2) - t


class PackedCayleyFrame(PackedSkewFrame):
    """``U = (I − A)(I + A)⁻¹``: exactly orthogonal."""

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        a = self.skew(flat)
        eye = torch.eye(self.n, dtype=a.dtype, device=a.device).expand_as(a)
        u: torch.Tensor = solve(eye + a, eye - a)   # (I+A)⁻¹(I−A): the factors commute
        return u[:, :, : self.k]


class NeumannCayleyFrame(PackedSkewFrame):
    """The Cayley transform's Neumann series with ``terms`` terms (peft OFT's default): not orthogonal."""

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        a = self.skew(flat)
        u = torch.eye(self.n, dtype=a.dtype, device=a.device).expand_as(a).clone()
        t = self.terms
        if t >= 2:
            u = u + 2.0 * a
        if t >= 3:
            top = max(t - 1, 3)
            power = a
            for j in range(2, top + 1):
                power = power @ a
                u = u + (2.0 if j < top else 1.0) * power
        return u[:, :, : self.k]
