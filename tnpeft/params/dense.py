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


def _kaiming_uniform_relu(t: torch.Tensor, rng: torch.Generator | None) -> None:
    # torch.nn.init.kaiming_uniform_ with its default a=0 (gain √2): U(±√(6/fan_in)) — VeRA's projections
    bound = math.sqrt(6.0 / max(1, math.prod(t.shape[1:])))
    t.uniform_(-bound, bound, generator=rng)


DENSE_INITS: dict[str, Callable[[torch.Tensor, torch.Generator | None], object]] = {
    "zeros": lambda t, g: t.zero_(),
    "ones": lambda t, g: t.fill_(1.0),
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_uniform_relu": _kaiming_uniform_relu,
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


class BasisVector(nn.Module):
    """The fixed one-hot vector ``e_position`` of length ``size`` (a basis node's tensor). It holds
    a non-persistent buffer: nothing is saved, the position being part of the structure."""

    weight: torch.Tensor

    def __init__(self, size: int, position: int, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        e = torch.zeros(size, dtype=dtype, device=device)
        if e.device.type != "meta":
            e[position] = 1.0
        self.register_buffer("weight", e, persistent=False)

    def forward(self) -> torch.Tensor:
        return self.weight


def fourier_frequencies(shape: tuple[int, int], k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of ``k`` spectrum positions of an ``m × n`` spectrum: the first ``k`` of a
    random permutation of the ``m·n`` positions drawn by ``torch.randperm`` seeded with ``seed``."""
    m, n = shape
    f = torch.randperm(m * n, generator=torch.Generator().manual_seed(seed))[:k]
    return f // n, f % n


class FourierBasis(nn.Module):
    """One side of a sparse 2-D inverse DFT (a ``fourier`` node): ``(size, K, 2)`` cos/sin values,
    computed in float64 from the structure, kept as a non-persistent buffer (nothing is saved)."""

    weight: torch.Tensor

    def __init__(self, size: int, k: int, shape: tuple[int, int], seed: int, side: str,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        if torch.device(device or "cpu").type == "meta":
            self.register_buffer("weight", torch.empty(size, k, 2, dtype=dtype, device=device), persistent=False)
            return
        rows, cols = fourier_frequencies(shape, k, seed)
        freq, sign = (rows, 1.0) if side == "out" else (cols, -1.0)
        period = shape[0] if side == "out" else shape[1]
        angle = 2 * math.pi * torch.outer(torch.arange(size, dtype=torch.float64), freq.to(torch.float64)) / period
        w = torch.stack((torch.cos(angle), sign * torch.sin(angle)), dim=-1)
        self.register_buffer("weight", w.to(dtype=dtype or torch.get_default_dtype(), device=device), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.weight
