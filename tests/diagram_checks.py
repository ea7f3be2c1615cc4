"""Geometric checks of a rendered tensor diagram, written independently of the layout code: from
the drawing's own coordinates (shapes, polylines, text boxes measured by matplotlib's renderer),
no line crosses a shape it does not end at, no line runs through a text, no two texts overlap, no
text covers a shape, and every text lies inside the figure."""

from __future__ import annotations

import math

EPS = 1e-9


def _dist_point_segment(c, p, q) -> float:
    (px, py), (qx, qy), (cx, cy) = p, q, c
    vx, vy = qx - px, qy - py
    n2 = vx * vx + vy * vy
    t = 0.0 if n2 == 0 else min(1.0, max(0.0, ((cx - px) * vx + (cy - py) * vy) / n2))
    return math.hypot(cx - (px + t * vx), cy - (py + t * vy))


def _segments_cross(p1, p2, p3, p4) -> bool:
    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = orient(p3, p4, p1), orient(p3, p4, p2)
    d3, d4 = orient(p1, p2, p3), orient(p1, p2, p4)
    return ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4)


def _segment_meets_box(p, q, box) -> bool:
    x0, y0, x1, y1 = box
    inside = lambda r: x0 <= r[0] <= x1 and y0 <= r[1] <= y1  # noqa: E731
    if inside(p) or inside(q):
        return True
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    return any(_segments_cross(p, q, corners[k], corners[(k + 1) % 4]) for k in range(4))


def _boxes_overlap(a, b) -> bool:
    return a[0] < b[2] - EPS and b[0] < a[2] - EPS and a[1] < b[3] - EPS and b[1] < a[3] - EPS


def _disk_meets_box(cx, cy, r, box) -> bool:
    dx = max(box[0] - cx, 0.0, cx - box[2])
    dy = max(box[1] - cy, 0.0, cy - box[3])
    return math.hypot(dx, dy) < r - EPS


def shape_box(s) -> tuple[float, float, float, float]:
    return (s.x - s.half_w, s.y - s.half_h, s.x + s.half_w, s.y + s.half_h)


def problems(diagram) -> list[str]:
    """Every violation found, as readable lines (empty: the diagram is clean)."""
    out: list[str] = []
    shapes = list(diagram.shapes.values())
    for seg in diagram.segments:
        pieces = list(zip(seg.points, seg.points[1:]))
        for s in shapes:
            if s.id in seg.ends:
                continue
            for p, q in pieces:
                hit = (_dist_point_segment((s.x, s.y), p, q) < s.r - EPS if s.kind == "disk"
                       else _segment_meets_box(p, q, shape_box(s)))
                if hit:
                    out.append(f"line {seg.ends} {seg.inds} crosses {s.id}")
                    break
        for t in diagram.texts:
            if any(_segment_meets_box(p, q, t.box) for p, q in pieces):
                out.append(f"line {seg.ends} {seg.inds} runs through text {t.text!r}")
    texts = diagram.texts
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            if _boxes_overlap(a.box, b.box):
                out.append(f"texts {a.text!r} and {b.text!r} overlap")
        for s in shapes:
            if s.kind == "disk" and _disk_meets_box(s.x, s.y, s.r, a.box):
                out.append(f"text {a.text!r} covers {s.id}")
            if s.kind == "box" and a.role != "box" and _boxes_overlap(shape_box(s), a.box):
                out.append(f"text {a.text!r} covers {s.id}")
    ax = diagram.figure.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for t in texts:
        if t.box[0] < x0 or t.box[2] > x1 or t.box[1] < y0 or t.box[3] > y1:
            out.append(f"text {t.text!r} is cut by the figure's edge")
    return out
