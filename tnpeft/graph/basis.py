"""The basis-vector node: a fixed one-hot vector on one index.

Contracting a node with ``e_p`` on index ``ind`` selects that node's slice at position ``p``. This is
how a graph carries a *layer index* (or a projection index: q, k, v, o, up, down): a tensor shared
by every layer of a model has an index ``layer`` of size ``L``, and the graph of layer ``l`` closes
it with ``e_l`` — one tensor network spans the model (LoRTA, MetaTT), and its parameter count
follows from the graph alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tnpeft.errors import GraphError
from tnpeft.graph.nodes import NODE_KINDS, Node


@dataclass(frozen=True)
class Basis(Node):
    """``e_position ∈ R^size`` on one index: fixed, no parameters, nothing stored (the position is
    part of the structure)."""

    position: int = 0
    kind: ClassVar[str] = "basis"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.inds) != 1:
            raise GraphError(f"basis node {self.name!r} has indices {self.inds}; expected exactly one", node=self.name)
        if self.trainable or self.share is not None:
            raise GraphError(f"basis node {self.name!r} is fixed: trainable must be false and it cannot be shared",
                             node=self.name)
        p = self.position
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < self.sizes[0]:
            raise GraphError(f"basis node {self.name!r}: position must be an integer in [0, {self.sizes[0] - 1}], "
                             f"got {p!r}", node=self.name, index=self.inds[0])

    def num_parameters(self) -> int:
        return 0

    def _extra(self) -> dict[str, Any]:
        return {"position": self.position}

    @classmethod
    def at(cls, name: str, index: str, size: int, position: int) -> Basis:
        """``e_position`` on ``index`` of size ``size`` (``Basis.at("e_l", "layer", 12, 3)``)."""
        return cls(name, (index,), (size,), trainable=False, position=position)


NODE_KINDS[Basis.kind] = Basis
