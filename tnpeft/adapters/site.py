"""Where in a model a layer's graph goes: what a model-wide method needs to know besides the
layer's sizes.

A builder that takes a keyword argument ``site`` is *model-wide*: ``inject`` calls it once per
target with a :class:`LayerSite`, so that its graphs can share tensors (VeRA's ``A`` and ``B`` of
the widest layer) and carry a layer index and a projection index (MetaTT's and LoRTA's one tensor
over ``(layer, matrix, out, in)``). Called without one (``tnpeft count vera --in-features …``), the
builder gets :meth:`LayerSite.alone`: a model of that one layer.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

_NUMBER = re.compile(r"^\d+$")


@dataclass(frozen=True)
class LayerSite:
    """One target layer within the set of targets of an adapter.

    Attributes:
        path: the layer's dotted module path (``model.layers.3.self_attn.q_proj``).
        layer: its layer index among the targets' layer numbers (``0 … num_layers − 1``): the first
            all-digit component of the path, ranked; 0 for a path without one.
        num_layers: how many distinct layer numbers the targets have.
        kind: the projection kind, the path's last component (``q_proj``).
        kinds: every target's kind, in order of first appearance.
        in_max, out_max: the largest input and output sizes over the targets.
    """

    path: str
    layer: int
    num_layers: int
    kind: str
    kinds: tuple[str, ...]
    in_max: int
    out_max: int

    @property
    def kind_index(self) -> int:
        """The position of :attr:`kind` in :attr:`kinds` (the projection index)."""
        return self.kinds.index(self.kind)

    @classmethod
    def alone(cls, in_features: int, out_features: int, kind: str = "layer") -> LayerSite:
        """The site of a layer that is the whole model."""
        return cls(kind, 0, 1, kind, (kind,), in_features, out_features)


def layer_number(path: str) -> int | None:
    """The first all-digit component of a dotted path (``h.3.attn`` → 3), or ``None``."""
    return next((int(p) for p in path.split(".") if _NUMBER.match(p)), None)


def layer_sites(sizes: dict[str, tuple[int, int]]) -> dict[str, LayerSite]:
    """The site of every target, from ``{path: (in_features, out_features)}`` (model order)."""
    numbers = sorted({n for n in (layer_number(p) for p in sizes) if n is not None})
    rank = {n: k for k, n in enumerate(numbers)}
    kinds = tuple(dict.fromkeys(p.rsplit(".", 1)[-1] for p in sizes))
    in_max = max((s[0] for s in sizes.values()), default=0)
    out_max = max((s[1] for s in sizes.values()), default=0)
    return {p: LayerSite(p, rank.get(layer_number(p) or 0, 0), max(1, len(numbers)), p.rsplit(".", 1)[-1], kinds, in_max,
                         out_max) for p in sizes}


def takes_site(builder: Callable[..., Any]) -> bool:
    """Whether a builder is model-wide (takes a keyword argument ``site``)."""
    try:
        return "site" in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
