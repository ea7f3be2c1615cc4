"""The ``bias`` nonlinear map: ``y = f(x + b)`` with a trainable vector ``b`` (zeros at the start)
and an element-wise function ``f`` (option ``then``, identity by default). A bias is not
multilinear, so it is a nonlinear node: LoRETTA's tensor-train adapter layers (``tanh(D x + b)``)
are written with it."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tnpeft.errors import ConfigError
from tnpeft.params.functions import FUNCTIONS
from tnpeft.params.qnn import NONLINEAR_MAPS, NonlinearMap


def bias_options(in_size: int, out_size: int, node: str | None = None, **options: Any) -> str:
    """Check a ``bias`` node (equal sizes; option ``then``); return the function's name."""
    where = f"nonlinear node {node!r}: " if node else ""
    if set(options) - {"then"}:
        raise ConfigError(f"{where}the bias map takes option 'then' only, not {sorted(set(options) - {'then'})}",
                          field="options")
    then = options.get("then", "identity")
    if not isinstance(then, str) or then not in FUNCTIONS:
        raise ConfigError(f"{where}option 'then' must be one of {sorted(FUNCTIONS)}, got {then!r}", field="then")
    if in_size != out_size:
        raise ConfigError(f"{where}a bias keeps sizes: input {in_size}, output {out_size}", field="sizes")
    return then


class BiasMap(nn.Module):
    """``(rows, *shape) → (rows, *shape)``: ``then(x + b)``, ``b`` of the input's size."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, rng: torch.Generator | None = None,
                 node: str | None = None, **options: Any) -> None:
        super().__init__()
        self.fn = FUNCTIONS[bias_options(math.prod(in_shape), math.prod(out_shape), node, **options)]
        self.out_shape = tuple(out_shape)
        self.bias = nn.Parameter(torch.zeros(math.prod(in_shape), dtype=dtype, device=device))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        rows = h.shape[0]
        return self.fn(h.reshape(rows, -1) + self.bias).reshape(rows, *self.out_shape)


NONLINEAR_MAPS["bias"] = NonlinearMap("bias", bias_options, lambda i, o, **opts: i, BiasMap)
