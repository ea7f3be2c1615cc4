"""Where everything of a tensor diagram goes: rows, order, coordinates and routes — no drawing.

The diagram reads bottom to top, as the data flows: every input leg hangs below the nodes, every
output leg rises above them. The graph's schedule gives the bands (a stage's nodes, then a
nonlinear node, then the next stage). In a stage, each connected part whose bonds form a path (a
tensor train, LoRA's two factors, Quantum-PEFT's ``V Λ U``) is one horizontal chain with its
physical legs perpendicular to it; any other part (an MPO's two chains joined by rungs, a
circuit-like QuanTA network) is split into rows by how far each node is from the inputs and from
the outputs, nodes of a row that share a bond forming a chain. That layered layout is the
fallback for any graph.

An index shared by three or more ends (nodes or open legs) meets at a copy-tensor dot, except that
a diagonal node on an index with two other ends sits inline between them. Bonds between the same
two nodes are bundled into one route drawn as parallel lines. Edges spanning several rows pass
through a slot of their own in every row between, and leave a row vertically where a straight line
would touch another node, so no line crosses a node it does not end at.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Callable

from tnpeft.draw.geometry import DOT_R, NODE_KINDS, Layout, Link, R, Vertex
from tnpeft.draw.placement import order_layers, place_x, place_y
from tnpeft.draw.routes import route_links
from tnpeft.graph import ApplyStep, Nonlinear

if TYPE_CHECKING:  # pragma: no cover
    from tnpeft.graph import Graph


def build_layout(graph: Graph, measure: Callable[[str, str], tuple[float, float]], spread: float = 1.0) -> Layout:
    """Place ``graph``'s diagram. ``measure(text, role)`` gives a label's (width, height) in data
    units, so that spacing leaves room for the labels; ``spread`` scales every gap."""
    verts, links = _items(graph, measure)
    _assign_keys(graph, verts, links)
    layers = _layers(verts, links)
    blocks = _blocks(verts, links, layers)
    order_layers(verts, links, layers, blocks)
    place_x(verts, links, layers, blocks, measure, spread)
    place_y(verts, layers, spread)
    route_links(verts, links, layers, blocks)
    return Layout(verts, links, layers)


def _items(graph: Graph, measure: Callable[[str, str], tuple[float, float]]) -> tuple[dict[str, Vertex], list[Link]]:
    verts: dict[str, Vertex] = {}
    pos = {n: k for k, n in enumerate(graph.nodes)}
    for n, node in graph.nodes.items():
        half = R if node.kind != "nonlinear" else R * 1.05
        text = f"{n} ({node.fn})" if isinstance(node, Nonlinear) else n
        verts[n] = Vertex(n, node.kind, 0.0, half, half, float(pos[n]), label=text)
    holders: dict[str, list[str]] = defaultdict(list)
    for n, node in graph.nodes.items():
        for i in node.inds:
            holders[i].append(n)
    size = graph.size_dict
    links: list[Link] = []
    for ind, hs in holders.items():
        ends = list(hs)
        for side, legs in (("in", graph.in_inds), ("out", graph.out_inds)):
            if ind in legs:
                vid = f"{side}:{ind}"
                verts[vid] = Vertex(vid, side, 0.0, 0.0, 0.0, sum(pos[h] for h in hs) / len(hs)
                                    + 0.01 * legs.index(ind), label=f"{ind}={size[ind]}")
                ends = [vid] + ends if side == "in" else ends + [vid]
        diags = [h for h in hs if graph.nodes[h].kind == "diagonal"]
        if len(ends) == 2:
            links.append(Link(ends[0], ends[1], (ind,), _style(verts, ends[0], ends[1])))
        elif len(ends) == 3 and len(diags) == 1:   # diag(λ) inline on its index
            d = diags[0]
            a, b = (e for e in ends if e != d)
            links.append(Link(a, d, (ind,), _style(verts, a, d)))
            links.append(Link(d, b, (ind,), _style(verts, d, b)))
        else:                                      # a copy tensor
            vid = f"dot:{ind}"
            named = not any(e.startswith(("in:", "out:")) for e in ends)
            verts[vid] = Vertex(vid, "dot", 0.0, DOT_R, DOT_R, sum(pos[h] for h in hs) / len(hs) + 0.005,
                                label=f"{ind}={size[ind]}" if named else "")
            links += [Link(vid, e, (ind,), "spoke", label=False) for e in ends]
    for name, net in graph.hypernetworks.items():
        vid = f"hyper:{name}"
        text = f"{name} ({net.kind})"
        w, h = measure(text, "box")
        verts[vid] = Vertex(vid, "hyper", 0.0, w / 2 + 0.12, max(h / 2 + 0.08, 0.22),
                            sum(pos[o] for o in net.outputs) / len(net.outputs), label=text)
        links += [Link(vid, o, (), "arrow", label=False) for o in net.outputs]
    # bonds between the same two nodes travel together
    bundled: dict[tuple[str, ...], Link] = {}
    out: list[Link] = []
    for link in links:
        if link.style == "bond":
            key = tuple(sorted((link.a, link.b)))
            if key in bundled:
                bundled[key].inds += link.inds
                continue
            bundled[key] = link
        out.append(link)
    for link in out:
        link.text = ", ".join(f"{i}={size[i]}" for i in link.inds)
    return verts, out


def _style(verts: dict[str, Vertex], a: str, b: str) -> str:
    return "leg" if verts[a].kind in ("in", "out") or verts[b].kind in ("in", "out") else "bond"


def _assign_keys(graph: Graph, verts: dict[str, Vertex], links: list[Link]) -> None:
    adj: dict[str, set[str]] = defaultdict(set)    # node–node, through bonds and dots
    chain_adj: dict[str, set[str]] = defaultdict(set)
    dots: dict[str, list[str]] = defaultdict(list)
    for link in links:
        if link.style == "bond":
            chain_adj[link.a].add(link.b)
            chain_adj[link.b].add(link.a)
            adj[link.a].add(link.b)
            adj[link.b].add(link.a)
        elif link.style == "spoke" and verts[link.b].kind not in ("in", "out"):
            dots[link.a].append(link.b)
    for members in dots.values():
        for u in members:
            adj[u].update(m for m in members if m != u)
    row: dict[str, int] = {}
    base = 0
    for step in graph.schedule:
        if isinstance(step, ApplyStep):
            row[step.node] = base
            base += 1
            continue
        entry = {i for a in step.inputs for i in graph.activations[a]}
        exits = set(step.exits)
        height = 1
        for comp in _components(list(step.nodes), adj):
            rel = _component_rows(graph, comp, adj, chain_adj, entry, exits)
            height = max(height, max(rel.values()) + 1)
            row.update({n: base + r for n, r in rel.items()})
        base += height
    top = base
    for v in verts.values():
        if v.kind in NODE_KINDS:
            v.key = float(row[v.id])
        elif v.kind == "in":
            v.key = -1.0
        elif v.kind == "out":
            v.key = float(top)
    ends_of: dict[str, list[str]] = defaultdict(list)
    for link in links:
        if link.style in ("spoke", "arrow"):
            ends_of[link.a].append(link.b)
    for vid, ends in ends_of.items():
        v = verts[vid]
        node_keys = [verts[e].key for e in ends if verts[e].kind in NODE_KINDS]
        kinds = {verts[e].kind for e in ends}
        if v.kind == "hyper":
            v.key = max(node_keys) + 0.5
        elif "in" in kinds and "out" in kinds and len(set(node_keys)) == 1:
            v.key = node_keys[0]        # an index passing straight through, touching its nodes
        elif "in" in kinds:
            v.key = min(node_keys) - 0.5
        elif "out" in kinds:
            v.key = max(node_keys) + 0.5
        else:
            v.key = math.floor(sum(node_keys) / len(node_keys)) + 0.5
            if v.key > max(node_keys):
                v.key = max(node_keys) - 0.5


def _components(nodes: list[str], adj: dict[str, set[str]]) -> list[list[str]]:
    inside = set(nodes)
    pos = {n: k for k, n in enumerate(nodes)}
    seen: set[str] = set()
    comps = []
    for n in nodes:
        if n in seen:
            continue
        comp, stack = [], [n]
        seen.add(n)
        while stack:
            u = stack.pop()
            comp.append(u)
            for w in sorted(adj[u]):
                if w in inside and w not in seen:
                    seen.add(w)
                    stack.append(w)
        comps.append(sorted(comp, key=pos.__getitem__))
    return comps


def _is_path(comp: list[str], chain_adj: dict[str, set[str]]) -> bool:
    inside = set(comp)
    deg = {n: len(chain_adj[n] & inside) for n in comp}
    edges = sum(deg.values()) // 2
    return edges == len(comp) - 1 and max(deg.values(), default=0) <= 2 and len(_components(comp, chain_adj)) == 1


def _component_rows(graph: Graph, comp: list[str], adj: dict[str, set[str]], chain_adj: dict[str, set[str]],
                    entry: set[str], exits: set[str]) -> dict[str, int]:
    """Relative rows of one connected part of a stage: a path is one chain (one row); otherwise a
    node's row orders it by (hops from the inputs) − (hops to the outputs)."""
    if _is_path(comp, chain_adj):
        return {n: 0 for n in comp}
    inside = set(comp)
    d_in = _hops([n for n in comp if entry & set(graph.nodes[n].inds)], adj, inside)
    d_out = _hops([n for n in comp if exits & set(graph.nodes[n].inds)], adj, inside)
    pot = {n: d_in.get(n, 0) - d_out.get(n, 0) for n in comp}
    ranks = {p: r for r, p in enumerate(sorted(set(pot.values())))}
    return {n: ranks[pot[n]] for n in comp}


def _hops(starts: list[str], adj: dict[str, set[str]], inside: set[str]) -> dict[str, int]:
    dist = {s: 0 for s in starts}
    frontier = list(starts)
    while frontier:
        nxt = []
        for u in frontier:
            for w in sorted(adj[u]):
                if w in inside and w not in dist:
                    dist[w] = dist[u] + 1
                    nxt.append(w)
        frontier = nxt
    return dist


def _layers(verts: dict[str, Vertex], links: list[Link]) -> list[list[str]]:
    """Layers bottom to top; every link gets a dummy vertex in each layer it passes through."""
    keys = sorted({v.key for v in verts.values()})
    index = {k: i for i, k in enumerate(keys)}
    layers: list[list[str]] = [[] for _ in keys]
    for vid, v in verts.items():
        v.layer = index[v.key]
        layers[v.layer].append(vid)
    for n, link in enumerate(links):
        a, b = (link.a, link.b) if verts[link.a].layer <= verts[link.b].layer else (link.b, link.a)
        la, lb = verts[a].layer, verts[b].layer
        chain = [a]
        for layer in range(la + 1, lb):
            vid = f"dummy:{n}:{layer}"
            t = (layer - la) / (lb - la)
            verts[vid] = Vertex(vid, "dummy", keys[layer], 0.0, 0.0,
                                (1 - t) * verts[a].order + t * verts[b].order)
            verts[vid].layer = layer
            layers[layer].append(vid)
            chain.append(vid)
        chain.append(b)
        link.chain = chain
    for row in layers:
        row.sort(key=lambda vid: (verts[vid].order, vid))
    return layers


def _blocks(verts: dict[str, Vertex], links: list[Link], layers: list[list[str]]) -> dict[str, list[str]]:
    """Chains within a row: vertices joined by same-layer bonds, kept together in path order.
    Maps each member to its block (a list shared by the members)."""
    same: dict[str, list[str]] = defaultdict(list)
    for link in links:
        if len(link.chain) == 2 and verts[link.a].layer == verts[link.b].layer:
            same[link.a].append(link.b)
            same[link.b].append(link.a)
    block_of: dict[str, list[str]] = {}
    for layer in layers:
        for comp in _components(layer, {u: set(same[u]) for u in layer}):
            blk = _linear_order(comp, same, verts)
            for m in blk:
                block_of[m] = blk
    return block_of


def _linear_order(comp: list[str], same: dict[str, list[str]], verts: dict[str, Vertex]) -> list[str]:
    """A path through the block: from an end (fewest neighbours, earliest in the data flow), always
    stepping to an unvisited neighbour; links between members left apart become bridges."""
    if len(comp) == 1:
        return list(comp)
    start = min(comp, key=lambda v: (len(set(same[v])), verts[v].order, v))
    out, seen = [start], {start}
    while len(out) < len(comp):
        cur = out[-1]
        nxt = sorted((w for w in set(same[cur]) if w not in seen), key=lambda w: (len(set(same[w])), verts[w].order, w))
        if not nxt:
            nxt = sorted((w for w in comp if w not in seen), key=lambda w: (verts[w].order, w))
        out.append(nxt[0])
        seen.add(nxt[0])
    return out
