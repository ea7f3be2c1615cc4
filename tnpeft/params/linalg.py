"""Linear solves that stay correct on torch's CPU build.

torch 2.13's batched CPU LU factorization (MKL, with two or more threads) returns wrong factors for
systems of about 200 unknowns and more: ``torch.linalg.solve`` of a batch of two 256×256 systems
``I + A`` (``A`` skew, condition number below 30) comes back off by ~1e15, or raises "Pivots given
to lu_solve must all be greater or equal to 1" after MKL's "Parameter 6 was incorrect on entry to
SLASWP"; the same systems solved one at a time, or with one thread, are right to 1e-6
(``tests/test_linalg.py`` keeps the check). :func:`solve` therefore solves a CPU batch of large
systems one system at a time.
"""

from __future__ import annotations

import torch

#: the largest system size a batched CPU solve is trusted with (128 measured right, 200 wrong)
BATCHED_CPU_MAX = 128


def solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``X`` with ``a @ X = b`` for ``a`` of shape ``(*batch, n, n)`` and ``b`` of shape
    ``(*batch, n, m)`` (batch dimensions broadcast) — ``torch.linalg.solve``, but one system at a
    time for a CPU batch of systems larger than :data:`BATCHED_CPU_MAX` (see the module docstring).
    Differentiable like ``torch.linalg.solve``."""
    lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    n = a.shape[-1]
    if a.device.type != "cpu" or n <= BATCHED_CPU_MAX or lead.numel() <= 1:
        out: torch.Tensor = torch.linalg.solve(a, b)
        return out
    a2 = a.expand(*lead, n, n).reshape(-1, n, n)
    b2 = b.expand(*lead, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
    x = torch.stack([torch.linalg.solve(ai, bi) for ai, bi in zip(a2.unbind(0), b2.unbind(0))])
    return x.reshape(*lead, *b.shape[-2:])
