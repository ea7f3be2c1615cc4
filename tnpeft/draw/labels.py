"""Label placement for tensor diagrams: every text goes to the first of its candidate spots where
its box meets no line, no shape and no other text.

Candidates, in order of preference: an open leg's ``name=size`` at its free end (below an input,
above an output, then beside it); a node's name on a diagonal beside its symbol (where no leg or
bond leaves a chain node); a bond's label beside the middle of its route, then further along it,
on either side. A label that finds no free spot is reported, and the diagram is laid out again
with more room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

from tnpeft.draw.geometry import CLEAR, Layout, Point, segment_meets_box

PAD = 0.035   # free margin kept around a text box
CELL = 2.0    # side of the grid cells the scene files its items in (data units)


@dataclass
class Label:
    """A text, its role (``index``, ``node``, ``box``, …) and its box centre and size, in data units."""

    text: str
    role: str
    x: float
    y: float
    w: float
    h: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x - self.w / 2, self.y - self.h / 2, self.x + self.w / 2, self.y + self.h / 2)


class Scene:
    """What a new label must keep clear of: lines, shapes (disks, boxes) and placed labels.

    Everything is filed in a grid of square cells (:data:`CELL` data units) by its bounding box,
    so a query looks only at what lies in the cells the label's box covers: placing all labels of
    a diagram takes time near-linear in its size, not quadratic."""

    def __init__(self, layout: Layout):
        self.grid: dict[tuple[int, int], list[tuple[str, int]]] = {}
        self.segments: list[tuple[Point, Point]] = [
            (p, q) for link in layout.links for line in link.lines for p, q in zip(line, line[1:])]
        self.disks = [(v.x, v.y, v.half_w) for v in layout.vertices.values() if v.is_obstacle and v.kind != "hyper"]
        self.boxes = [(v.x - v.half_w, v.y - v.half_h, v.x + v.half_w, v.y + v.half_h)
                      for v in layout.vertices.values() if v.kind == "hyper"]
        self.labels: list[Label] = []
        for k, (p, q) in enumerate(self.segments):
            self._file("segment", k, (min(p[0], q[0]), min(p[1], q[1]), max(p[0], q[0]), max(p[1], q[1])))
        for k, (cx, cy, r) in enumerate(self.disks):
            self._file("disk", k, (cx - r, cy - r, cx + r, cy + r))
        for k, b in enumerate(self.boxes):
            self._file("box", k, b)

    @staticmethod
    def _cells(box: tuple[float, float, float, float]) -> Iterator[tuple[int, int]]:
        i0, i1 = math.floor(box[0] / CELL), math.floor(box[2] / CELL)
        j0, j1 = math.floor(box[1] / CELL), math.floor(box[3] / CELL)
        return ((i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))

    def _file(self, kind: str, k: int, box: tuple[float, float, float, float]) -> None:
        for cell in self._cells(box):
            self.grid.setdefault(cell, []).append((kind, k))

    def free(self, box: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = box[0] - PAD, box[1] - PAD, box[2] + PAD, box[3] + PAD
        padded = (x0, y0, x1, y1)
        near = {item for cell in self._cells(padded) for item in self.grid.get(cell, ())}
        for kind, k in near:
            if kind == "label":
                a = self.labels[k].box
                if x0 < a[2] and a[0] < x1 and y0 < a[3] and a[1] < y1:
                    return False
            elif kind == "box":
                bx0, by0, bx1, by1 = self.boxes[k]
                if x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1:
                    return False
            elif kind == "disk":
                cx, cy, r = self.disks[k]
                dx = max(x0 - cx, 0.0, cx - x1)
                dy = max(y0 - cy, 0.0, cy - y1)
                if math.hypot(dx, dy) < r:
                    return False
            else:
                p, q = self.segments[k]
                if max(p[0], q[0]) < x0 or min(p[0], q[0]) > x1 or max(p[1], q[1]) < y0 or min(p[1], q[1]) > y1:
                    continue
                if segment_meets_box(p, q, padded):
                    return False
        return True

    def add(self, lab: Label) -> None:
        """Record a placed label (it then blocks the labels placed after it)."""
        self.labels.append(lab)
        self._file("label", len(self.labels) - 1, lab.box)

    def place(self, text: str, role: str, size: tuple[float, float], spots: list[Point]) -> Label | None:
        w, h = size
        for x, y in spots:
            lab = Label(text, role, x, y, w, h)
            if self.free(lab.box):
                self.add(lab)
                return lab
        return None


def place_labels(layout: Layout, measure: Callable[[str, str], tuple[float, float]],
                 far: bool = False) -> tuple[list[Label], list[str]]:
    """Place the labels of ``layout`` (``far``: also a little away from a crowded line); returns the
    placed labels and, for those that found no room, what they name (``"b2=1 (T1–T2)"``)."""
    scene = Scene(layout)
    failed: list[str] = []
    verts = layout.vertices

    def put(text: str, role: str, spots: list[Point], where: str = "") -> None:
        if scene.place(text, role, measure(text, role), spots) is None:
            failed.append(f"{text} ({where})" if where else text)

    for v in verts.values():
        if v.kind == "hyper":   # the box's own text sits inside it
            w, h = measure(v.label, "box")
            scene.add(Label(v.label, "box", v.x, v.y, w, h))
    for v in sorted((v for v in verts.values() if v.kind in ("in", "out")), key=lambda v: (v.layer, v.x)):
        w, h = measure(v.label, "index")
        s = -1 if v.kind == "in" else 1
        gap = 0.06 + h / 2
        spots = [(v.x, v.y + s * gap), (v.x + w / 2 + 0.08, v.y + s * 0.02), (v.x - w / 2 - 0.08, v.y + s * 0.02),
                 (v.x, v.y + s * (gap + h + 0.05)), (v.x + w / 2 + 0.08, v.y + s * (gap + 0.1)),
                 (v.x - w / 2 - 0.08, v.y + s * (gap + 0.1))]
        put(v.label, "index", spots)
    for v in verts.values():
        if v.kind in ("dense", "diagonal", "unitary", "nonlinear"):
            put(v.label, "node", _around(v.x, v.y, v.half_w, measure(v.label, "node")))
    for v in verts.values():
        if v.kind == "dot" and v.label:
            put(v.label, "index", _around(v.x, v.y, v.half_w, measure(v.label, "index")))
    for link in layout.links:
        if link.label and link.style != "leg" and link.text:
            extra = (len(link.lines) - 1) * 0.5 * 0.09
            ends = "–".join(e.split(":", 1)[-1] if e.startswith("dot:") else e for e in (link.a, link.b))
            put(link.text, "index", _along(link.route, measure(link.text, "index"), extra, far), ends)
    return scene.labels, failed


def _around(x: float, y: float, r: float, size: tuple[float, float]) -> list[Point]:
    """Spots beside a symbol: the four diagonals first, then the sides, at two distances."""
    w, h = size
    spots = []
    for dist in (0.08, 0.25):
        for ang in (135, 45, 225, 315, 180, 0, 90, 270):
            ux, uy = math.cos(math.radians(ang)), math.sin(math.radians(ang))
            ux, uy = round(ux, 9), round(uy, 9)
            # the box just touches the circle of radius r + dist along the direction
            if ux and uy:
                cx = x + ux * (r + dist) + math.copysign(w / 2, ux)
                cy = y + uy * (r + dist) + math.copysign(h / 2, uy)
            else:
                cx = x + ux * (r + dist + w / 2)
                cy = y + uy * (r + dist + h / 2)
            spots.append((cx, cy))
    return spots


def _along(route: list[Point], size: tuple[float, float], extra: float, far: bool = False) -> list[Point]:
    """Spots beside a route: at fractions of its length, on its upper (or right) side first."""
    w, h = size
    lengths = [math.hypot(q[0] - p[0], q[1] - p[1]) for p, q in zip(route, route[1:])]
    total = sum(lengths)
    if total == 0:
        return []
    spots = []
    fracs = (0.5, 0.38, 0.62, 0.27, 0.73, 0.17, 0.83, 0.1, 0.9)
    for frac, away in [(f, 1.0) for f in fracs] + ([(f, 2.2) for f in fracs] if far else []):
        s = frac * total
        for (p, q), L in zip(zip(route, route[1:]), lengths):
            if s <= L or L == lengths[-1]:
                t = s / L if L else 0.0
                px, py = p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t
                dx, dy = ((q[0] - p[0]) / L, (q[1] - p[1]) / L) if L else (1.0, 0.0)
                break
            s -= L
        nx, ny = -dy, dx
        if (abs(dx) >= abs(dy) and ny < 0) or (abs(dx) < abs(dy) and nx < 0):
            nx, ny = -nx, -ny   # above a horizontal-ish line, right of a vertical-ish one first
        for ux, uy in ((nx, ny), (-nx, -ny)):
            reach = (abs(ux) * w / 2 + abs(uy) * h / 2) * away + CLEAR * 0.6 + extra
            spots.append((px + ux * reach, py + uy * reach))
    return spots

