"""Routes of a diagram's links: straight where a straight line touches no other shape; otherwise
leaving and entering each row vertically, so that the slanted part runs between rows where there
are no shapes; bridges over a row for bonds between chain members that are not neighbours."""

from __future__ import annotations

import math
from collections import defaultdict

from tnpeft.draw.geometry import (
    BUNDLE_GAP,
    CLEAR,
    Link,
    Point,
    R,
    Vertex,
    offset_line,
    point_segment_distance,
    rounded,
    segment_meets_box,
    simplify,
)


def route_links(verts: dict[str, Vertex], links: list[Link], layers: list[list[str]],
                blocks: dict[str, list[str]]) -> None:
    obstacles = [v for v in verts.values() if v.is_obstacle]
    band = {i: max([verts[v].half_h for v in layer if verts[v].is_obstacle] + [R]) + CLEAR
            for i, layer in enumerate(layers)}
    bridges: dict[int, int] = defaultdict(int)
    place = {m: j for blk in {id(b): b for b in blocks.values()}.values() for j, m in enumerate(blk)}  # in its block
    for link in links:
        chain = link.chain
        pts: list[Point] = [(verts[chain[0]].x, verts[chain[0]].y)]
        ends = {link.a, link.b}
        if len(chain) == 2 and verts[chain[0]].layer == verts[chain[1]].layer:
            a, b = sorted(chain, key=lambda v: verts[v].x)
            blk = blocks.get(a, [a])
            if blocks.get(b, [b]) is blk and abs(place.get(a, 0) - place.get(b, 0)) == 1:
                pts = [(verts[a].x, verts[a].y), (verts[b].x, verts[b].y)]
            else:   # a bond between chain members that are not neighbours: a bridge over the row
                layer = verts[a].layer
                k = bridges[layer]
                bridges[layer] += 1
                up = k % 2 == 0
                nxt = layer + 1 if up else layer - 1
                if 0 <= nxt < len(layers):
                    room = abs(verts[layers[nxt][0]].y - verts[a].y) - band[nxt]
                else:
                    room = 0.9
                h = max(band[layer] + 0.05, min(room * (0.75 - 0.12 * (k // 2)), 0.75))
                h = h if up else -h
                ya = verts[a].y
                pts = rounded([(verts[a].x, ya), (verts[a].x + 0.25, ya + h), (verts[b].x - 0.25, ya + h),
                                (verts[b].x, ya)])
        elif len(chain) > 2 and _clear([pts[0], (verts[chain[-1]].x, verts[chain[-1]].y)], obstacles, ends):
            pts.append((verts[chain[-1]].x, verts[chain[-1]].y))   # a long edge with a clear straight line
        else:
            for u, w in zip(chain, chain[1:]):
                vu, vw = verts[u], verts[w]
                straight = [(vu.x, vu.y), (vw.x, vw.y)]
                if _clear(straight, obstacles, ends | {u, w}):
                    pts.append((vw.x, vw.y))
                    continue
                cu = band[vu.layer] if vu.is_obstacle or vu.kind == "dummy" else 0.0
                cw = band[vw.layer] if vw.is_obstacle or vw.kind == "dummy" else 0.0
                pts += [(vu.x, vu.y + cu), (vw.x, vw.y - cw), (vw.x, vw.y)]
        for end in (link.a, link.b):
            if verts[end].kind == "hyper":   # start at the box's edge, not under its text
                pts = _clip_box(pts if (pts[-1][0], pts[-1][1]) == (verts[end].x, verts[end].y) else pts[::-1],
                                verts[end])
        link.route = simplify(pts)
        m = max(len(link.inds), 1)
        link.lines = [offset_line(link.route, (j - (m - 1) / 2) * BUNDLE_GAP) for j in range(m)]


def _clip_box(pts: list[Point], v: Vertex) -> list[Point]:
    """``pts`` (ending at the centre of box ``v``) cut where they enter the box."""
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    dx, dy = x1 - x0, y1 - y0
    tx = 1 - v.half_w / abs(dx) if dx else -math.inf
    ty = 1 - v.half_h / abs(dy) if dy else -math.inf
    t = max(tx, ty, 0.0)
    return pts[:-1] + [(x0 + dx * t, y0 + dy * t)]


def _clear(pts: list[Point], obstacles: list[Vertex], skip: set[str]) -> bool:
    for (x1, y1), (x2, y2) in zip(pts, pts[1:]):
        for v in obstacles:
            if v.id in skip:
                continue
            if v.kind == "hyper":
                box = (v.x - v.half_w - CLEAR, v.y - v.half_h - CLEAR, v.x + v.half_w + CLEAR, v.y + v.half_h + CLEAR)
                if segment_meets_box((x1, y1), (x2, y2), box):
                    return False
            elif point_segment_distance(v.x, v.y, x1, y1, x2, y2) < v.half_w + CLEAR:
                return False
    return True
