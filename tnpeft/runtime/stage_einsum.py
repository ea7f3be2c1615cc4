"""Each linear stage of a graph as one ``torch.einsum`` equation: what the forward runs under
``torch.compile`` (structure only — no plan look-up or cache for the compiler to guard on; the
compiler orders the contraction itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tnpeft.graph.schedule import ContractStep

if TYPE_CHECKING:  # pragma: no cover
    from tnpeft.graph.graph import Graph

#: the name of the batch axis of activations (never a graph's own index name)
BATCH = "__batch__"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def stage_equations(graph: Graph) -> dict[int, str]:
    """The ``torch.einsum`` equation of each linear stage (batch axis first), by stage position;
    stages with more distinct indices than einsum has letters are left out."""
    out: dict[int, str] = {}
    k = 0
    for step in graph.schedule:
        if not isinstance(step, ContractStep):
            continue
        inputs = [(BATCH,) + graph.activations[a] for a in step.inputs] + [graph.nodes[n].inds for n in step.nodes]
        letters: dict[str, str] = {}
        for ind in [i for t in inputs for i in t]:
            letters.setdefault(ind, _LETTERS[len(letters)] if len(letters) < len(_LETTERS) else "")
        if all(letters.values()):
            out[k] = ",".join("".join(letters[i] for i in t) for t in inputs) + "->" + \
                "".join(letters[i] for i in (BATCH,) + step.exits)
        k += 1
    return out
