"""Fixed nodes, whose values follow from the structure alone (nothing is stored or trained): the
basis vector (a layer index) and the Fourier basis (FourierFT's frozen spectral basis).

**Basis.** A fixed one-hot vector on one index.

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


@dataclass(frozen=True)
class Fourier(Node):
    r"""One side of a 2-D inverse DFT restricted to ``K`` random frequencies (FourierFT).

    ``inds = (leg, k, t)``, sizes ``(size, K, 2)``. The frequencies are the first ``K`` entries of a
    random permutation of the ``m·n`` positions of an ``m × n`` spectrum (``torch.randperm`` with
    a generator seeded by ``seed``): position ``f`` is row ``j = f // n``, column ``l = f % n``. The
    ``"out"`` side holds ``U[p, k] = (cos, sin)(2π p j_k / m)``, the ``"in"`` side
    ``V[q, k] = (cos, −sin)(2π q l_k / n)``, so that ``Σ_t U[p,k,t] V[q,k,t] = Re e^{2πi(p j_k/m + q l_k/n)}``
    and ``Σ_k c_k Σ_t U V / (m n)`` is the real part of the inverse DFT of the sparse spectrum ``c``.
    """

    seed: int = 777
    spectrum: tuple[int, int] = (1, 1)
    side: str = "out"
    kind: ClassVar[str] = "fourier"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "spectrum", tuple(self.spectrum))
        m, n = self.spectrum if len(self.spectrum) == 2 else (0, 0)
        ok = (self.side in ("out", "in") and len(self.inds) == 3 and self.sizes[2] == 2 and not self.trainable
              and self.share is None and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (m, n))
              and self.sizes[0] == (m if self.side == "out" else n) and self.sizes[1] <= m * n
              and isinstance(self.seed, int) and not isinstance(self.seed, bool))
        if not ok:
            raise GraphError(f"fourier node {self.name!r}: expected inds (leg, k, t) with sizes (m or n, K ≤ m·n, 2) for "
                             f"side 'out' or 'in' of a spectrum of shape (m, n), an integer seed, not trainable; got "
                             f"sizes {self.sizes}, spectrum {self.spectrum}, side {self.side!r}", node=self.name)

    def num_parameters(self) -> int:
        return 0

    def _extra(self) -> dict[str, Any]:
        return {"seed": self.seed, "spectrum": list(self.spectrum), "side": self.side}


NODE_KINDS[Basis.kind] = Basis
NODE_KINDS[Fourier.kind] = Fourier
