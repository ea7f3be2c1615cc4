"""Diagonal nodes: a vector ``λ ∈ R^K`` standing for ``diag(λ)``.

The vector is never expanded to a K×K matrix: in the network its single index is shared by all
the nodes it scales (a hyperedge), so it contracts as an element-wise scale.
"""

from __future__ import annotations

import torch
from torch import nn

DIAGONAL_INITS = ("zeros", "ones", "normal")


class DiagonalParam(nn.Module):
    """A vector of length ``size``; ``forward()`` returns it as is."""

    def __init__(self, size: int, init: str = "zeros", trainable: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        w = torch.empty(size, dtype=dtype, device=device)
        with torch.no_grad():
            if init == "zeros":
                w.zero_()
            elif init == "ones":
                w.fill_(1.0)
            else:
                w.normal_(0.0, 1.0, generator=generator)
        self.weight = nn.Parameter(w, requires_grad=trainable)

    def forward(self) -> torch.Tensor:
        return self.weight
