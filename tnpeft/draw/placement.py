"""Order and coordinates of a diagram's vertices: barycentre sweeps that keep crossings few (and
the data-flow order on ties), then positions that pull every vertex towards its neighbours while
keeping the gaps labels need — an exact weighted least-squares fit per row (pool adjacent
violators)."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

from tnpeft.draw.geometry import NODE_KINDS, Link, R, Vertex


def neighbours(verts: dict[str, Vertex], links: list[Link]) -> dict[str, list[tuple[str, float]]]:
    """Each vertex's neighbours along the routes, with how much a straight line to them matters:
    legs and long edges most (open legs hang straight), bonds less, arrows least."""
    nb: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for link in links:
        wt = {"leg": 3.0, "arrow": 0.2}.get(link.style, 1.0)
        if link.style == "spoke":
            wt = 3.0 if verts[link.b].kind in ("in", "out") else 0.5
        if len(link.chain) > 2:
            wt = max(wt, 2.0)
        for u, w in zip(link.chain, link.chain[1:]):
            nb[u].append((w, wt))
            nb[w].append((u, wt))
    return nb


def row_units(layer: list[str], blocks: dict[str, list[str]]) -> list[list[str]]:
    units, seen = [], set()
    for vid in layer:
        if vid in seen:
            continue
        blk = blocks.get(vid, [vid])
        units.append(list(blk))
        seen.update(blk)
    return units


def _inversions(seq: Sequence[float]) -> int:
    """The number of pairs ``i < j`` with ``seq[i] > seq[j]`` (a merge sort: O(n log n))."""
    if len(seq) < 2:
        return 0
    mid = len(seq) // 2
    left, right = sorted(seq[:mid]), sorted(seq[mid:])
    count = _inversions(seq[:mid]) + _inversions(seq[mid:])
    j = 0
    for x in left:          # for each left item: the right items smaller than it
        while j < len(right) and right[j] < x:
            j += 1
        count += j
    return count


def _score(layers: list[list[str]], nb: dict[str, list[tuple[str, float]]], verts: dict[str, Vertex]) -> tuple[int, int]:
    """(edge crossings between adjacent layers, nodes out of data-flow order within a layer)."""
    inv = 0
    for layer in layers:
        inv += _inversions([verts[v].order for v in layer if verts[v].kind in NODE_KINDS])
    return _crossings(layers, nb), inv


def _crossings(layers: list[list[str]], nb: dict[str, list[tuple[str, float]]]) -> int:
    """Pairs of edges between adjacent layers whose ends lie in opposite orders: with the edges
    sorted by their lower end, the inversions of their upper ends (ties at either end never cross)."""
    total = 0
    for i in range(len(layers) - 1):
        here = {v: k for k, v in enumerate(layers[i])}
        up = {v: k for k, v in enumerate(layers[i + 1])}
        edges = sorted((here[u], up[w]) for u in layers[i] for w, _ in nb[u] if w in up)
        total += _inversions([b for _, b in edges])
    return total


def order_layers(verts: dict[str, Vertex], links: list[Link], layers: list[list[str]],
                 blocks: dict[str, list[str]]) -> None:
    """Barycentre sweeps (up, then down) and swaps of neighbouring units, blocks moving as one;
    the order with the fewest crossings wins, the data-flow order on ties. Deterministic."""
    nb = neighbours(verts, links)
    for i, layer in enumerate(layers):
        layers[i] = [v for u in row_units(layer, blocks) for v in u]
    best, best_x = [list(layer) for layer in layers], _score(layers, nb, verts)
    for sweep in range(8):
        rng = range(1, len(layers)) if sweep % 2 == 0 else range(len(layers) - 2, -1, -1)
        for i in rng:
            ref = i - 1 if sweep % 2 == 0 else i + 1
            idx = {v: k for k, v in enumerate(layers[ref])}
            here = {v: k for k, v in enumerate(layers[i])}
            scored = []
            for k, unit in enumerate(row_units(layers[i], blocks)):
                ps = [idx[w] - j for j, m in enumerate(unit) for w, _ in nb[m] if w in idx]
                bary = sum(ps) / len(ps) if ps else here[unit[0]]
                scored.append((bary, k, unit))
            scored.sort(key=lambda s: (s[0], s[1]))
            layers[i] = [v for _, _, unit in scored for v in unit]
        x = _score(layers, nb, verts)
        if x < best_x:
            best, best_x = [list(layer) for layer in layers], x
    layers[:] = best
    improved = best_x != (0, 0)
    while improved:
        improved = False
        for i, layer in enumerate(layers):
            units = row_units(layer, blocks)
            for k in range(len(units) - 1):
                trial = units[:k] + [units[k + 1], units[k]] + units[k + 2:]
                layers[i] = [v for u in trial for v in u]
                x = _score(layers, nb, verts)
                if x < best_x:
                    best_x, units, improved = x, trial, True
                else:
                    layers[i] = [v for u in units for v in u]


def _gap(verts: dict[str, Vertex], a: str, b: str, bonded: dict[frozenset[str], str], measure: Callable[[str, str], tuple[float, float]],
         spread: float) -> float:
    """Centre-to-centre distance between neighbours ``a`` (left) and ``b`` in a layer."""
    va, vb = verts[a], verts[b]
    text = bonded.get(frozenset((a, b)))
    if text is not None and "dot" in (va.kind, vb.kind):
        return va.half_w + vb.half_w + 0.5 * spread
    if text is not None:
        return va.half_w + vb.half_w + max(1.05, measure(text, "index")[0] + 0.3) * spread
    if va.kind in ("in", "out") and vb.kind in ("in", "out"):
        wa, wb = measure(va.label, "index")[0], measure(vb.label, "index")[0]
        return max((wa + wb) / 2 + 0.2, 0.75) * spread
    if "dummy" in (va.kind, vb.kind):
        return va.half_w + vb.half_w + (0.2 if "hyper" in (va.kind, vb.kind) else 0.3) * spread
    if "in" in (va.kind, vb.kind) or "out" in (va.kind, vb.kind):
        return va.half_w + vb.half_w + 0.45 * spread
    return va.half_w + vb.half_w + 0.95 * spread


def place_x(verts: dict[str, Vertex], links: list[Link], layers: list[list[str]], blocks: dict[str, list[str]],
            measure: Callable[[str, str], tuple[float, float]], spread: float) -> None:
    nb = neighbours(verts, links)
    bonded = {frozenset((lk.a, lk.b)): lk.text for lk in links if len(lk.chain) == 2
              and verts[lk.a].layer == verts[lk.b].layer}
    for layer in layers:   # start packed, centred
        x = 0.0
        for k, vid in enumerate(layer):
            if k:
                x += _gap(verts, layer[k - 1], vid, bonded, measure, spread)
            verts[vid].x = x
        for vid in layer:
            verts[vid].x -= x / 2
    order = list(range(len(layers)))
    for sweep in range(40):
        for i in (order if sweep % 2 == 0 else order[::-1]):
            layer = layers[i]
            if not layer:
                continue
            units = row_units(layer, blocks)
            want, weight = [], []
            for unit in units:
                off = [verts[m].x - verts[unit[0]].x for m in unit]
                num = den = 0.0
                for m, o in zip(unit, off):
                    for w, wt in nb[m]:
                        if verts[w].layer != i:
                            num += wt * (verts[w].x - o)
                            den += wt
                want.append(num / den if den else verts[unit[0]].x)
                weight.append(den if den else 0.05)
            seps = []
            for u, v in zip(units, units[1:]):
                seps.append(verts[u[-1]].x - verts[u[0]].x + _gap(verts, u[-1], v[0], bonded, measure, spread))
            for unit, x0 in zip(units, _pava(want, weight, seps)):
                base = verts[unit[0]].x
                for m in unit:
                    verts[m].x = x0 + (verts[m].x - base)
    lo = min(v.x - v.half_w for v in verts.values())
    for vert in verts.values():
        vert.x -= lo


def _pava(want: list[float], weight: list[float], seps: list[float]) -> list[float]:
    """Positions ``x`` minimising ``Σ wᵢ (xᵢ − wantᵢ)²`` with ``x_{i+1} − x_i ≥ sepᵢ`` (pool
    adjacent violators on ``xᵢ − Σ_{j<i} sepⱼ``)."""
    offs = [0.0]
    for s in seps:
        offs.append(offs[-1] + s)
    pools: list[list[float]] = []   # [sum w·t, sum w, count]
    for t, w in zip((d - o for d, o in zip(want, offs)), weight):
        pools.append([w * t, w, 1])
        while len(pools) > 1 and pools[-2][0] / pools[-2][1] > pools[-1][0] / pools[-1][1]:
            a, b = pools[-2], pools.pop()
            a[0] += b[0]
            a[1] += b[1]
            a[2] += b[2]
    z: list[float] = []
    for s, w, c in pools:
        z += [s / w] * int(c)
    return [zi + o for zi, o in zip(z, offs)]


def place_y(verts: dict[str, Vertex], layers: list[list[str]], spread: float) -> None:
    keys = [verts[layer[0]].key for layer in layers]
    y = 0.0
    for i, layer in enumerate(layers):
        if i:
            a, b = keys[i - 1], keys[i]
            node_rows = a.is_integer() and b.is_integer() and a >= 0 and b < max(keys)
            half = max([verts[v].half_h for v in layers[i - 1] + layer if verts[v].is_obstacle] + [R])
            y += max(1.7 if node_rows else 0.95, 2 * half + 0.35) * spread
        for vid in layer:
            verts[vid].y = y
