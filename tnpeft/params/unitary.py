"""Unitary nodes: an ``N×K`` matrix with orthonormal columns (a point of the Stiefel manifold
``V_K(N)``), produced from free parameters so that ``UᵀU = I`` holds by construction.

Parametrizations are registered by name; a graph names one and passes its options, e.g.
``Unitary("U", ("out", "k"), (768, 8), param="householder")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class UnitaryParametrization:
    """A named map from free parameters onto ``V_K(N)``.

    Attributes:
        name: the name graphs use.
        num_parameters: closed-form count ``(n, k, **options) -> int``; allocates nothing.
        build: ``(n, k, dtype, device, generator, **options) -> nn.Module`` whose ``forward()``
            returns the ``n×k`` frame.
        options: the option names it accepts.
    """

    name: str
    num_parameters: Callable[..., int]
    build: Callable[..., nn.Module]
    options: tuple[str, ...] = ()


UNITARY_PARAMS: dict[str, UnitaryParametrization] = {}


def register_unitary(p: UnitaryParametrization) -> UnitaryParametrization:
    """Add a parametrization to the registry under ``p.name`` (replacing one of that name)."""
    UNITARY_PARAMS[p.name] = p
    return p


class Householder(nn.Module):
    r"""``U = H_1 H_2 \cdots H_K \, I_{N×K}`` with reflections ``H_j = I - 2 u_j u_jᵀ``,
    ``u_j = v_j / ‖v_j‖``.

    Each reflection is orthogonal, so ``UᵀU = I`` exactly (to float rounding) for any ``v``;
    ``K`` reflections reach every point of ``V_K(N)``. Parameters ``N·K``; materializing costs
    ``O(N·K²)`` and never forms an ``N×N`` matrix.
    """

    def __init__(self, n: int, k: int, dtype=None, device=None, generator=None):
        super().__init__()
        v = torch.empty(k, n, dtype=dtype, device=device)
        with torch.no_grad():
            v.normal_(0.0, 1.0, generator=generator)
        self.vectors = nn.Parameter(v)
        self.n, self.k = n, k

    def forward(self) -> torch.Tensor:
        v = self.vectors
        u = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny ** 0.5)
        m = torch.eye(self.n, self.k, dtype=v.dtype, device=v.device)
        for j in range(self.k - 1, -1, -1):
            uj = u[j]
            m = m - 2.0 * torch.outer(uj, uj @ m)
        return m


register_unitary(UnitaryParametrization(
    name="householder",
    num_parameters=lambda n, k: n * k,
    build=lambda n, k, dtype=None, device=None, generator=None: Householder(n, k, dtype, device, generator),
))

__all__ = ["UNITARY_PARAMS", "UnitaryParametrization", "register_unitary", "Householder"]
