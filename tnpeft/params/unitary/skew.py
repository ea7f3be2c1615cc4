r"""Frames from a low-rank skew-symmetric matrix: ``cayley``, ``exp`` and ``taylor``.

The skew matrix is ``A = G E′ᵀ − E′ Gᵀ`` with the trainable factor ``G ∈ R^{N×K′}``
(``skew_factor``) and ``E′ = I_{N×K′}``; writing ``A = P Rᵀ`` with ``P = [G, E′]``,
``R = [E′, −G]`` (``N×2K′``), the Woodbury identity gives ``(I + A)⁻¹ E = E − P (I + RᵀP)⁻¹ RᵀE``
and ``exp(A) E = E + P φ(RᵀP) RᵀE`` with ``φ(M) = Σ Mʲ/(j+1)!`` (the top-right block of
``exp([[M, I], [0, 0]])``): all ``O(N·K·K′)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from tnpeft.params.linalg import solve
from tnpeft.params.unitary.base import FrameModule, eye_frames


class SkewFrame(FrameModule):
    """Shared machinery: a factor ``G ∈ R^{N×K′}`` defining ``A = G E′ᵀ − E′ Gᵀ``."""

    def __init__(self, n: int, k: int, batch: Sequence[int] = (), intrinsic_rank: int | None = None,
                 init: str = "random", dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None):
        super().__init__(n, k, batch)
        self.kk = min(intrinsic_rank or k, n)
        g = torch.empty(*self.batch, n, self.kk, dtype=dtype, device=device)
        with torch.no_grad():
            if init == "random":
                g.normal_(0.0, 1.0 / math.sqrt(n), generator=rng)
            else:
                g.zero_()
        self.skew_factor = nn.Parameter(g)

    def free_tensor(self) -> torch.Tensor:
        return self.skew_factor

    def _factors(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = eye_frames(self.n, self.kk, g.shape[0], g)
        p = torch.cat((g, e), dim=2)                 # (G, N, 2K′)
        r = torch.cat((e, -g), dim=2)                # (G, N, 2K′)
        return p, r

    @staticmethod
    def _upcast(p: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # RᵀP is far from normal: for large factors the low-rank formulas cancel badly in float32,
        # so they run in float64 (the operands are N×2K′: cheap) and the frame is cast back
        if p.dtype in (torch.float32, torch.float16, torch.bfloat16) and p.device.type != "mps":
            return p.double(), r.double()
        return p, r

    def _apply_a(self, p: torch.Tensor, r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return p @ (r.transpose(1, 2) @ v)


class CayleyFrame(SkewFrame):
    """``U = (I − A)(I + A)⁻¹ I_{N×K}``: orthogonal for every skew ``A`` (``I + A`` is always
    invertible), computed with the Woodbury identity in ``O(N·K·K′)`` — or, when ``N ≤ 2K′`` (small
    square blocks such as OFT's), with one dense ``N×N`` solve, which is then cheaper."""

    def _dense(self, flat: torch.Tensor) -> torch.Tensor:
        g = flat.double() if flat.dtype != torch.float64 and flat.device.type != "mps" else flat
        e = eye_frames(self.n, self.kk, g.shape[0], g)
        a = g @ e.transpose(1, 2) - e @ g.transpose(1, 2)           # (G, N, N), skew
        eye = torch.eye(self.n, dtype=g.dtype, device=g.device)
        q: torch.Tensor = solve(eye + a, (eye - a)[:, :, :self.k])   # (I + A)⁻¹(I − A) = (I − A)(I + A)⁻¹
        return q.to(flat.dtype)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        if self.n <= 2 * self.kk:
            return self._dense(flat)
        p, r = self._factors(flat)
        out_dtype = p.dtype
        p, r = self._upcast(p, r)
        e = eye_frames(self.n, self.k, p.shape[0], p)
        m = torch.eye(p.shape[2], dtype=p.dtype, device=p.device) + r.transpose(1, 2) @ p
        y: torch.Tensor = e - p @ solve(m, r[:, :self.k].transpose(1, 2))
        return (y - self._apply_a(p, r, y)).to(out_dtype)


class ExpFrame(SkewFrame):
    """``U = exp(A) I_{N×K}`` = ``E + P φ(RᵀP) RᵀE`` (exact: ``φ`` from one small matrix exponential)."""

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        p, r = self._factors(flat)
        out_dtype = p.dtype
        p, r = self._upcast(p, r)
        g, _, two_k = p.shape
        m = r.transpose(1, 2) @ p
        block = torch.zeros(g, 2 * two_k, 2 * two_k, dtype=p.dtype, device=p.device)
        block[:, :two_k, :two_k] = m
        block[:, :two_k, two_k:] = torch.eye(two_k, dtype=p.dtype, device=p.device)
        phi: torch.Tensor = torch.linalg.matrix_exp(block)[:, :two_k, two_k:]
        e = eye_frames(self.n, self.k, g, p)
        return (e + p @ (phi @ r[:, :self.k].transpose(1, 2))).to(out_dtype)


class TaylorFrame(SkewFrame):
    """The truncated series ``T = Σ_{j≤order} Aʲ E / j!`` — which alone is *not* orthogonal — pulled
    back onto the manifold by a QR retraction (``U = Q`` with ``diag(R) > 0``). ``order`` defaults to 2."""

    def __init__(self, n: int, k: int, batch: Sequence[int] = (), intrinsic_rank: int | None = None, order: int = 2,
                 init: str = "random", dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None):
        super().__init__(n, k, batch, intrinsic_rank, init, dtype, device, rng)
        self.order = order

    def options_key(self) -> tuple[object, ...]:
        return (self.order,)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        p, r = self._factors(flat)
        v = eye_frames(self.n, self.k, p.shape[0], p)
        t = v
        for j in range(1, self.order + 1):
            v = self._apply_a(p, r, v) / j
            t = t + v
        q: torch.Tensor
        q, rr = torch.linalg.qr(t)
        sign = torch.sign(torch.diagonal(rr, dim1=1, dim2=2))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return q * sign.unsqueeze(1)
