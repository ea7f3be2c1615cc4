"""The registry of Stiefel parametrizations: name → closed-form count and module builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class UnitaryParametrization:
    """A named map from free parameters onto ``V_K(N)``.

    Attributes:
        name: the name graphs use (``Unitary(..., param=name)``).
        num_parameters: closed-form count ``(n, k, **options) -> int`` per batch item.
        build: ``(n, k, batch, dtype=None, device=None, rng=None, **options) -> nn.Module`` whose
            ``forward()`` returns ``(*batch, n, k)``; ``rng`` is a ``torch.Generator`` (or ``None``)
            for reproducible initial values.
        options: the option names it accepts.
        identity_init: whether ``init="identity"`` is supported (the frame starts as ``I_{N×K}``).
        inits: the ``init`` option values it accepts besides ``"random"`` and ``"identity"``.
        exact: ``False`` for a parametrization that only approximates an orthogonal matrix (peft
            OFT's truncated Cayley–Neumann series): checks report its deviation from orthogonality
            instead of asserting it, unmerging inverts it, and circuits refuse it.
    """

    name: str
    num_parameters: Callable[..., int]
    build: Callable[..., nn.Module]
    options: tuple[str, ...] = ()
    identity_init: bool = True
    inits: tuple[str, ...] = ()
    exact: bool = True


UNITARY_PARAMS: dict[str, UnitaryParametrization] = {}


def register_unitary(p: UnitaryParametrization) -> UnitaryParametrization:
    """Add a parametrization to the registry under ``p.name`` (replacing one of that name)."""
    UNITARY_PARAMS[p.name] = p
    return p
