"""The geometry of a tensor diagram: its items (vertices, links, the layout holding them) and the
plane geometry the layout, the label placement and the checks share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tnpeft.errors import WriteError
from tnpeft.fileio import ensure_dir

R = 0.28            # radius of a node disk
DOT_R = 0.065       # radius of a copy-tensor dot
CLEAR = 0.09        # clearance kept between a line and a shape it does not end at
BUNDLE_GAP = 0.09   # distance between the parallel lines of a bundle
NODE_KINDS = ("dense", "diagonal", "unitary", "nonlinear")
Point = tuple[float, float]


@dataclass
class Vertex:
    """A placed item: a node (``kind`` is the node kind), a copy-tensor ``dot``, an open leg's free
    end (``in`` / ``out``), a ``hyper``-network box, or a ``dummy`` slot of a long edge."""

    id: str
    kind: str
    key: float                 # row key: node rows are integers, dots and boxes sit at halves
    half_w: float
    half_h: float
    order: float               # initial order within its row (data-flow position)
    label: str = ""            # the text drawn with it
    x: float = 0.0
    y: float = 0.0
    layer: int = 0

    @property
    def is_obstacle(self) -> bool:
        return self.kind not in ("in", "out", "dummy")


@dataclass
class Link:
    """A drawn connection between two vertices: ``bond`` (node–node), ``leg`` (to an open leg's
    free end), ``spoke`` (to a copy-tensor dot) or ``arrow`` (a hyper-network filling a node).
    ``inds`` are the indices it carries (several: a bundle of parallel bonds)."""

    a: str
    b: str
    inds: tuple[str, ...]
    style: str
    label: bool = True
    text: str = ""                                           # its label
    chain: list[str] = field(default_factory=list)           # a, dummies…, b (bottom to top)
    route: list[Point] = field(default_factory=list)         # the centre line
    lines: list[list[Point]] = field(default_factory=list)   # one polyline per parallel line


@dataclass
class Layout:
    """The placed vertices, the routed links and the node rows (for the renderer)."""

    vertices: dict[str, Vertex]
    links: list[Link]
    layers: list[list[str]]


def point_segment_distance(px: float, py: float, x1: float, y1: float, x2: float, y2: float) -> float:
    """Euclidean distance from point ``p`` to the segment ``(x1, y1)–(x2, y2)``."""
    dx, dy = x2 - x1, y2 - y1
    L2 = dx * dx + dy * dy
    t = 0.0 if L2 == 0 else max(0.0, min(1.0, ((px - x1) * dx + (py - y1) * dy) / L2))
    return math.hypot(px - (x1 + t * dx), py - (y1 + t * dy))


def _seg_box(x1: float, y1: float, x2: float, y2: float, bx0: float, by0: float, bx1: float, by1: float) -> bool:
    """Whether a segment meets an axis-aligned box (Liang–Barsky clipping)."""
    t0, t1 = 0.0, 1.0
    dx, dy = x2 - x1, y2 - y1
    for p, q in ((-dx, x1 - bx0), (dx, bx1 - x1), (-dy, y1 - by0), (dy, by1 - y1)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return True


def segment_meets_box(p: Point, q: Point, box: tuple[float, float, float, float]) -> bool:
    """Whether segment ``p–q`` meets the box ``(x0, y0, x1, y1)``."""
    return _seg_box(p[0], p[1], q[0], q[1], *box)


def simplify(pts: list[Point]) -> list[Point]:
    out: list[Point] = []
    for p in pts:
        if out and math.hypot(p[0] - out[-1][0], p[1] - out[-1][1]) < 1e-9:
            continue
        if len(out) >= 2:
            (x0, y0), (x1, y1) = out[-2], out[-1]
            if abs((x1 - x0) * (p[1] - y0) - (y1 - y0) * (p[0] - x0)) < 1e-9:
                out[-1] = p
                continue
        out.append(p)
    return out


def rounded(pts: list[Point], steps: int = 6) -> list[Point]:
    """The polyline with its inner corners replaced by short quadratic arcs."""
    out = [pts[0]]
    for (x0, y0), (x1, y1), (x2, y2) in zip(pts, pts[1:], pts[2:]):
        a = (x1 + (x0 - x1) * 0.35, y1 + (y0 - y1) * 0.35)
        b = (x1 + (x2 - x1) * 0.35 if abs(x2 - x1) < 0.7 else x1 + math.copysign(0.25, x2 - x1), y1 + (y2 - y1) * 0.35)
        for s in range(steps + 1):
            t = s / steps
            out.append(((1 - t) ** 2 * a[0] + 2 * t * (1 - t) * x1 + t * t * b[0],
                        (1 - t) ** 2 * a[1] + 2 * t * (1 - t) * y1 + t * t * b[1]))
    out.append(pts[-1])
    return out


def offset_line(pts: list[Point], d: float) -> list[Point]:
    """The polyline moved sideways by ``d`` (mitred joints)."""
    if d == 0 or len(pts) < 2:
        return list(pts)
    normals = []
    for (x1, y1), (x2, y2) in zip(pts, pts[1:]):
        L = math.hypot(x2 - x1, y2 - y1) or 1.0
        normals.append((-(y2 - y1) / L, (x2 - x1) / L))
    out = []
    for k, (x, y) in enumerate(pts):
        if k == 0:
            nx, ny = normals[0]
        elif k == len(pts) - 1:
            nx, ny = normals[-1]
        else:
            ax, ay = normals[k - 1]
            bx, by = normals[k]
            nx, ny = ax + bx, ay + by
            L = math.hypot(nx, ny) or 1.0
            cos = max((nx / L) * ax + (ny / L) * ay, 0.5)
            nx, ny = nx / L / cos, ny / L / cos
        out.append((x + d * nx, y + d * ny))
    return out


def output_path(path: str | Path) -> Path:
    """``path`` as a file to write a drawing to: its folder created if needed; a
    :class:`~tnpeft.errors.WriteError` names a file standing where a folder must be, or a folder
    where the file must be."""
    path = Path(path)
    ensure_dir(path.parent, "output folder")
    if path.is_dir():
        raise WriteError(f"output {str(path)!r} is a folder; give a file name ending in .svg, .png or .pdf",
                         path=str(path))
    return path
