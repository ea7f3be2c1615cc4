r"""Hadamard and Kronecker products of sub-networks: combinators over graphs.

Two additive graphs whose updates are ``ΔW₁`` and ``ΔW₂`` combine into one graph in two ways that
the tensor-network picture makes plain:

* :func:`hadamard` — ``ΔW = ΔW₁ ⊙ ΔW₂`` (element-wise): the parts keep their own bonds and *share
  their open legs*. Each open leg then joins several nodes — a copy tensor (a hyperedge), drawn as
  a black dot — and the engine contracts ``x`` through both parts at once without forming either
  ``ΔWᵢ``. LoHa (FedPara) is the Hadamard product of two LoRAs: rank up to ``r²`` from ``2r(m+n)``
  parameters.
* :func:`kronecker` — ``ΔW = ΔW₁ ⊗ ΔW₂``: the parts share nothing; the layer's input is read
  row-major as ``(in₁, in₂)`` and the output written as ``(out₁, out₂)`` — two disconnected
  components, an outer product. LoKr is the Kronecker product of two (possibly low-rank) factors.

Both take any additive linear sub-networks, built-in or a user's, and return a plain graph: every
interpreter (forward, merge, counts, diagrams, export through its low-rank factors) works on it.
Node and bond names of part ``i`` get the suffix ``suffixes[i]`` (``"1"``, ``"2"``, … by default).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from tnpeft.errors import GraphError
from tnpeft.graph import Graph, Node


def relabel(graph: Graph, suffix: str, keep: Sequence[str] = ()) -> list[Node]:
    """``graph``'s nodes with ``suffix`` appended to every node name and to every index not in ``keep``."""
    ren = {i: i if i in keep else f"{i}{suffix}" for n in graph.nodes.values() for i in n.inds}
    return [dataclasses.replace(n, name=f"{n.name}{suffix}", inds=tuple(ren[i] for i in n.inds))
            for n in graph.nodes.values()]


def _parts(graphs: Sequence[Graph], suffixes: Sequence[str] | None, what: str) -> list[str]:
    if len(graphs) < 2:
        raise GraphError(f"a {what} product needs at least two graphs, got {len(graphs)}")
    for g in graphs:
        if not isinstance(g, Graph) or g.mode != "add" or not g.is_linear or g.hypernetworks or g.post is not None:
            raise GraphError(f"a {what} product takes additive linear graphs without hyper-networks; "
                             f"got {g!r}")
    sfx = list(suffixes) if suffixes is not None else [str(k + 1) for k in range(len(graphs))]
    if len(sfx) != len(graphs) or len(set(sfx)) != len(sfx):
        raise GraphError(f"{what} product: give one distinct suffix per part, got {sfx}")
    return sfx


def hadamard(*graphs: Graph, suffixes: Sequence[str] | None = None, scale: float | None = None,
             name: str = "hadamard") -> Graph:
    """The graph of ``ΔW = ΔW₁ ⊙ ΔW₂ ⊙ …`` (scale: the product of the parts' scales unless given).

    The parts must have the same open legs (names and sizes); each open leg becomes a copy tensor
    joining the parts' nodes that carry it."""
    sfx = _parts(graphs, suffixes, "Hadamard")
    first = graphs[0]
    for g in graphs[1:]:
        if (g.in_inds, g.out_inds) != (first.in_inds, first.out_inds) or any(
                g.size_dict[i] != first.size_dict[i] for i in g.in_inds + g.out_inds):
            raise GraphError(f"Hadamard product: every part needs the open legs of the first "
                             f"({first.in_inds} → {first.out_inds}), got {g.in_inds} → {g.out_inds}")
    legs = first.in_inds + first.out_inds
    nodes = [n for g, s in zip(graphs, sfx) for n in relabel(g, s, keep=legs)]
    total = 1.0
    for g in graphs:
        total *= g.scale
    return Graph(nodes, in_index=first.in_index, out_index=first.out_index, name=name,
                 scale=total if scale is None else scale)


def kronecker(*graphs: Graph, suffixes: Sequence[str] | None = None, scale: float | None = None,
              name: str = "kronecker") -> Graph:
    """The graph of ``ΔW = ΔW₁ ⊗ ΔW₂ ⊗ …`` (``kron``, row-major: part 1 varies slowest).

    Every index of part ``i`` (open legs included) gets its suffix; the input legs are part 1's,
    then part 2's, …, and so are the output legs."""
    sfx = _parts(graphs, suffixes, "Kronecker")
    nodes = [n for g, s in zip(graphs, sfx) for n in relabel(g, s)]
    ins = tuple(f"{i}{s}" for g, s in zip(graphs, sfx) for i in g.in_inds)
    outs = tuple(f"{i}{s}" for g, s in zip(graphs, sfx) for i in g.out_inds)
    total = 1.0
    for g in graphs:
        total *= g.scale
    return Graph(nodes, in_index=ins, out_index=outs, name=name, scale=total if scale is None else scale)
