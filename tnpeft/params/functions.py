"""Element-wise functions available to nonlinear nodes, by name (JSON graphs name them; no code
is ever loaded from a file)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from tnpeft.errors import NodeKindError

FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda t: t,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "sin": torch.sin,
    "cos": torch.cos,
}


def get_function(name: str, node: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the element-wise function called ``name``; raise :class:`NodeKindError` otherwise."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        where = f"nonlinear node {node!r}: " if node else ""
        raise NodeKindError(
            f"{where}unknown function {name!r}; expected one of {sorted(FUNCTIONS)}", node=node
        ) from None
