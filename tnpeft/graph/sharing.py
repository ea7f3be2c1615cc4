"""Tensors shared across the graphs of an adapter (the layers of a model).

A node with a :class:`~tnpeft.graph.nodes.Share` is a view of one tensor that every graph naming
the same key uses: VeRA's frozen random ``A`` and ``B``, LoRTA's and MetaTT's factors. The values
live once (:class:`tnpeft.runtime.SharedValues`), are saved once and counted once. These
functions read the structure only.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Mapping

from tnpeft.errors import GraphError
from tnpeft.graph.graph import Graph
from tnpeft.graph.nodes import Node


def _all_nodes(g: Graph) -> Iterator[Node]:
    yield from g.nodes.values()
    if g.post is not None:
        yield from g.post.nodes.values()


def _graphs(graphs: Mapping[str, Graph] | Iterable[Graph]) -> list[tuple[str, Graph]]:
    if isinstance(graphs, Graph):
        return [("", graphs)]
    if isinstance(graphs, Mapping):
        return list(graphs.items())
    return [(str(k), g) for k, g in enumerate(graphs)]


def full_node(node: Node) -> Node:
    """The whole shared tensor a shared node views, as a node of its own (named by the key)."""
    assert node.share is not None
    return dataclasses.replace(node, name=node.share.key, sizes=node.share.sizes, share=None)


def shared_nodes(graphs: Mapping[str, Graph] | Iterable[Graph]) -> dict[str, Node]:
    """``key → full node`` of every shared tensor the graphs use, checking that all graphs naming a
    key declare the same tensor (kind, sizes, initialisation, trainable); a
    :class:`~tnpeft.errors.GraphError` names the key and the two places that disagree."""
    found: dict[str, tuple[Node, str]] = {}
    for path, g in _graphs(graphs):
        for n in _all_nodes(g):
            if n.share is None:
                continue
            full = full_node(n)
            spec = {k: v for k, v in full.to_dict().items() if k not in ("inds", "name")}
            seen = found.get(n.share.key)
            if seen is None:
                found[n.share.key] = (full, f"{path or 'graph'}:{n.name}")
            elif {k: v for k, v in seen[0].to_dict().items() if k not in ("inds", "name")} != spec:
                raise GraphError(f"shared tensor {n.share.key!r} is declared differently by {seen[1]} and "
                                 f"{path or 'graph'}:{n.name} ({seen[0].to_dict()} vs {full.to_dict()}); one key, one "
                                 "tensor", node=n.name)
    return {k: v[0] for k, v in found.items()}


def shared_users(graphs: Mapping[str, Graph]) -> dict[str, list[tuple[str, str]]]:
    """``key → [(path, node name), …]``: which graph uses each shared tensor, through which node."""
    out: dict[str, list[tuple[str, str]]] = {}
    for path, g in _graphs(graphs):
        for n in _all_nodes(g):
            if n.share is not None:
                out.setdefault(n.share.key, []).append((path, n.name))
    return out


def count_parameters(graphs: Mapping[str, Graph] | Iterable[Graph]) -> int:
    """Trainable parameters of an adapter made of ``graphs``, each shared tensor counted once
    (``Σ graph.num_parameters()`` counts it once per graph using it), from the structure alone."""
    items = _graphs(graphs)
    total = sum(g.num_parameters() for _, g in items)
    seen: set[str] = set()
    for _, g in items:
        for n in _all_nodes(g):
            if n.share is not None:
                if n.share.key in seen:
                    total -= n.num_parameters()
                seen.add(n.share.key)
    return total
