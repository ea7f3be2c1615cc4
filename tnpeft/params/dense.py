"""Dense nodes: a free tensor, initialised by name."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


def _kaiming_uniform(t: torch.Tensor, rng: torch.Generator | None) -> None:
    # torch.nn.init.kaiming_uniform_(a=sqrt(5)) -- the init of nn.Linear and of peft's lora_A --
    # reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in the product of all but the first dim.
    fan_in = max(1, math.prod(t.shape[1:]))
    bound = 1.0 / math.sqrt(fan_in)
    t.uniform_(-bound, bound, generator=rng)


def _normal(t: torch.Tensor, rng: torch.Generator | None) -> None:
    # std 1/sqrt(fan_in) keeps a contraction over the trailing legs at unit scale.
    fan_in = max(1, math.prod(t.shape[1:]))
    t.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=rng)


DENSE_INITS: dict[str, Callable[[torch.Tensor, torch.Generator | None], object]] = {
    "zeros": lambda t, g: t.zero_(),
    "ones": lambda t, g: t.fill_(1.0),
    "kaiming_uniform": _kaiming_uniform,
    "normal": _normal,
    "small_normal": lambda t, g: t.normal_(0.0, 0.02, generator=g),  # AdaLoRA's init in peft
}


def init_dense(t: torch.Tensor, init: str, rng: torch.Generator | None = None,
               std: float | None = None) -> None:
    """Fill ``t`` in place with the named initialisation (one of :data:`DENSE_INITS`); ``std``
    overrides the standard deviation of ``"normal"``."""
    with torch.no_grad():
        if init == "normal" and std is not None:
            t.normal_(0.0, std, generator=rng)
        else:
            DENSE_INITS[init](t, rng)


class DenseParam(nn.Module):
    """A free tensor of the node's shape; ``forward()`` returns it as is."""

    def __init__(self, shape: tuple[int, ...], init: str = "normal", trainable: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None, std: float | None = None):
        super().__init__()
        w = torch.empty(shape, dtype=dtype, device=device)
        init_dense(w, init, rng, std)
        self.weight = nn.Parameter(w, requires_grad=trainable)

    def forward(self) -> torch.Tensor:
        return self.weight
