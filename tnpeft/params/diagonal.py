"""Diagonal nodes: a vector ``λ ∈ R^K`` standing for ``diag(λ)``.

The vector is never expanded to a K×K matrix: in the network its single index is shared by all
the nodes it scales (a hyperedge), so it contracts as an element-wise scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DIAGONAL_INITS = ("zeros", "ones", "normal", "signs")


class DiagonalParam(nn.Module):
    """A vector of length ``size``. ``init="signs"`` draws fixed ±1 entries (an element of
    ``O(1)^K``; make the node ``trainable=False``). With ``active=K′`` only the first ``K′`` entries
    are used (an intrinsic-rank mask): ``weight`` has ``K′`` entries and ``forward()`` pads it with zeros
    (no zero buffer is kept: a module holds only what its file holds)."""

    def __init__(self, size: int, init: str = "zeros", trainable: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None, active: int | None = None):
        super().__init__()
        self.size = size
        w = torch.empty(size if active is None else active, dtype=dtype, device=device)
        with torch.no_grad():
            if init == "zeros":
                w.zero_()
            elif init == "ones":
                w.fill_(1.0)
            elif init == "signs":
                w.copy_(torch.randint(0, 2, w.shape, generator=rng).to(w) * 2 - 1)
            else:
                w.normal_(0.0, 1.0, generator=rng)
        self.active = active   # only the first K′ entries exist as parameters; the rest are zeros
        self.weight = nn.Parameter(w, requires_grad=trainable)

    def forward(self) -> torch.Tensor:
        return self.weight if self.active is None else F.pad(self.weight, (0, self.size - self.active))
