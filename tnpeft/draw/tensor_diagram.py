"""Draw an adapter graph as a tensor diagram.

Notation (as in the Quantum-PEFT and tensor-network literature): a filled circle is a dense
tensor, an open circle with a slash a diagonal one, a half-filled circle a unitary (orthonormal
columns), a delay symbol (flat back towards its input, round front towards its output) a nonlinear
map, a small black dot a copy tensor (an index shared by three or more nodes or open legs).
Trainable nodes have a coloured outline. A hyper-network (QPA's) is a box with dashed arrows to
the nodes it fills. Bonds carry their index name and size; open legs end free, inputs below the
nodes and outputs above them (:mod:`tnpeft.draw.layout` says where everything goes,
:mod:`tnpeft.draw.labels` where the texts go).

:func:`tensor_diagram` returns the figure with its geometry — every shape, every line and every
text box measured by matplotlib's renderer — so that the layout can be checked; :func:`draw_graph`
saves it. The drawing is deterministic: the same graph gives byte-identical SVG.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tnpeft.draw.geometry import DOT_R, Layout, Point, Vertex, output_path
from tnpeft.draw.labels import Label, place_labels
from tnpeft.draw.layout import build_layout

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.figure import Figure
    from matplotlib.text import Text
    from matplotlib.typing import RcKeyType

    from tnpeft.graph import Graph

_FILL = {"dense": "#4C72B0", "diagonal": "white", "unitary": "#DD8452", "nonlinear": "#55A868",
         "hyper": "#8172B3"}
_TRAIN = "#C44E52"
_FROZEN = "#555555"
INCH = 0.62          # inches per data unit
MARGIN = 0.25
_FONTS = {"index": (8, "normal"), "node": (10, "bold"), "box": (9, "bold"), "caption": (9.5, "normal"),
          "legend": (8, "normal")}
_RC: dict[RcKeyType, Any] = {"font.family": "DejaVu Sans", "text.hinting": "no_hinting", "text.hinting_factor": 1, "svg.hashsalt": "tnpeft", "svg.fonttype": "path", "path.simplify": False}


@dataclass(frozen=True)
class Shape:
    """A drawn symbol: ``disk`` (a node or a copy-tensor dot; ``r`` its radius) or ``box``."""

    id: str
    kind: str
    x: float
    y: float
    r: float = 0.0
    half_w: float = 0.0
    half_h: float = 0.0


@dataclass(frozen=True)
class Segment:
    """One drawn line (a polyline, in data units) and the ids of the two shapes it joins (an open
    leg's free end is ``in:<index>`` / ``out:<index>``)."""

    points: tuple[Point, ...]
    ends: tuple[str, str]
    inds: tuple[str, ...]


@dataclass(frozen=True)
class TextBox:
    """A drawn text with its box ``(x0, y0, x1, y1)`` in data units, measured by the renderer."""

    text: str
    role: str
    box: tuple[float, float, float, float]


@dataclass
class Diagram:
    """A rendered tensor diagram: the matplotlib figure and its geometry."""

    figure: Figure
    shapes: dict[str, Shape] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    texts: list[TextBox] = field(default_factory=list)
    spread: float = 1.0

    def save(self, path: str | Path, *, dpi: int = 150) -> Path:
        """Write the figure (``.svg``, ``.png`` or ``.pdf``); SVG and PDF carry no date, so equal
        graphs give equal files."""
        import matplotlib

        path = output_path(path)
        with matplotlib.rc_context(_RC):
            meta = {"Date": None} if path.suffix.lower() == ".svg" else (
                {"CreationDate": None} if path.suffix.lower() == ".pdf" else None)
            self.figure.savefig(path, dpi=dpi, metadata=meta)
        return path


@contextmanager
def _rc() -> Iterator[None]:
    """The diagram's rc settings, in force for the block (only :data:`_RC`'s keys are saved and
    restored: much cheaper than ``matplotlib.rc_context``, which copies every setting)."""
    import matplotlib

    saved = {k: matplotlib.rcParams[k] for k in _RC}
    matplotlib.rcParams.update(_RC)
    try:
        yield
    finally:
        matplotlib.rcParams.update(saved)


@lru_cache(maxsize=1 << 16)
def _measure(text: str, role: str) -> tuple[float, float]:
    """Width and height of ``text`` in data units, as the renderer lays it out."""
    with _rc():
        fig, renderer, probes = _scratch()
        t = probes[role]
        t.set_text(text)
        bb = t.get_window_extent(renderer)
    return bb.width / fig.dpi / INCH, bb.height / fig.dpi / INCH


@lru_cache(maxsize=1)
def _scratch() -> tuple[Figure, RendererAgg, dict[str, Text]]:
    """A figure that is never drawn, its renderer and one text per role (reused for every measure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _rc():
        fig = Figure(figsize=(2, 2), dpi=100)
        renderer = FigureCanvasAgg(fig).get_renderer()
        probes = {role: fig.text(0, 0, "", fontsize=size, fontweight=weight, ha="center", va="center")
                  for role, (size, weight) in _FONTS.items()}
    return fig, renderer, probes


def _caption(graph: Graph, title: str | None) -> str:
    name = title or graph.name or "adapter"
    mode = " (transforms the layer input)" if graph.mode == "input" else ""
    gen = f", generating {graph.num_generated():,} values" if graph.hypernetworks else ""
    return (f"{name}: {graph.in_features:,} → {graph.out_features:,}{mode}\n"
            f"scale {graph.scale:.4g} · {graph.num_parameters():,} trainable parameters{gen}")


def _legend_items(graph: Graph, layout: Layout) -> list[tuple[str, str]]:
    kinds = {v.kind for v in layout.vertices.values()}
    items: list[tuple[str, str]] = [(k, k) for k in ("dense", "diagonal", "unitary", "nonlinear") if k in kinds]
    if "dot" in kinds:
        items.append(("dot", "copy tensor"))
    if "hyper" in kinds:
        items.append(("hyper", "hyper-network"))
    trained = [bool(n.num_parameters()) and k not in graph.generated for k, n in graph.nodes.items()]
    frozen = [not t and k not in graph.generated for t, k in zip(trained, graph.nodes)]
    return items + [(k, text) for k, text, on in (("trainable", "trainable", any(trained)),
                                                  ("frozen", "generated", bool(graph.generated)),
                                                  ("frozen", "frozen", any(frozen))) if on]


def tensor_diagram(graph: Graph, *, title: str | None = None) -> Diagram:
    """Lay out and draw ``graph``; return the figure with its measured geometry (nothing is saved)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spread = 1.0
    for attempt in range(6):   # more room until every label finds a free spot beside its line
        layout = build_layout(graph, _measure, spread)
        labels, failed = place_labels(layout, _measure, far=attempt == 5)
        if not failed:
            break
        spread *= 1.25 if attempt < 4 else 1.0
    xs, ys = _extent(layout, labels)
    cx = (xs[0] + xs[1]) / 2
    cap = _caption(graph, title)
    cw, ch = _measure(cap, "caption")
    labels.append(Label(cap, "caption", cx, ys[1] + 0.3 + ch / 2, cw, ch))
    legend = _legend_labels(_legend_items(graph, layout), cx, ys[0] - 0.35)
    labels += [lab for _, lab in legend]
    if failed:   # labels that found no room in the drawing are named under it
        note = "not labelled in the drawing: " + "; ".join(failed)
        nw, nh = _measure(note, "legend")
        labels.append(Label(note, "legend", cx, min(lab.box[1] for lab in labels) - 0.12 - nh / 2, nw, nh))
    x0 = min([xs[0]] + [lab.box[0] - 0.3 for lab in labels if lab.role in ("caption", "legend")]) - MARGIN
    x1 = max([xs[1]] + [lab.box[2] for lab in labels if lab.role in ("caption", "legend")]) + MARGIN
    y0 = min(lab.box[1] for lab in labels) - MARGIN
    y1 = max(lab.box[3] for lab in labels) + MARGIN

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=((x1 - x0) * INCH, (y1 - y0) * INCH), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal", adjustable="box")
        ax.axis("off")
        diagram = Diagram(fig, spread=spread)
        _draw(ax, graph, layout, diagram)
        for kind, lab in legend:
            if kind is not None:
                _legend_symbol(ax, kind, lab.x - lab.w / 2 - 0.2, lab.y)
        artists = []
        for lab in labels:
            size, weight = _FONTS[lab.role]
            color = "#333333" if lab.role in ("index", "legend") else "black"
            artists.append((lab, ax.text(lab.x, lab.y, lab.text, fontsize=size, fontweight=weight, ha="center",
                                         va="center", color="white" if lab.role == "box" else color, zorder=6)))
        renderer = canvas.get_renderer()
        inv = ax.transData.inverted()
        for lab, art in artists:
            bb = art.get_window_extent(renderer).transformed(inv)
            diagram.texts.append(TextBox(lab.text, lab.role, (bb.x0, bb.y0, bb.x1, bb.y1)))
    return diagram


def _extent(layout: Layout, labels: list[Label]) -> tuple[tuple[float, float], tuple[float, float]]:
    xs, ys = [], []
    for v in layout.vertices.values():
        xs += [v.x - v.half_w, v.x + v.half_w]
        ys += [v.y - v.half_h, v.y + v.half_h]
    for link in layout.links:
        for line in link.lines:
            xs += [p[0] for p in line]
            ys += [p[1] for p in line]
    for lab in labels:
        xs += [lab.box[0], lab.box[2]]
        ys += [lab.box[1], lab.box[3]]
    return (min(xs), max(xs)), (min(ys), max(ys))


def _legend_labels(items: list[tuple[str, str]], cx: float, top: float) -> list[tuple[str | None, Label]]:
    sizes = [_measure(text, "legend") for _, text in items]
    step = [0.38 + w + 0.3 for w, _ in sizes]
    x = cx - (sum(step) - 0.3) / 2
    out: list[tuple[str | None, Label]] = []
    for (kind, text), (w, h), st in zip(items, sizes, step):
        out.append((kind, Label(text, "legend", x + 0.38 + w / 2, top - 0.2, w, h)))
        x += st
    return out


def _draw(ax: Axes, graph: Graph, layout: Layout, diagram: Diagram) -> None:
    # the limits are set: shapes go in with add_artist, which skips add_patch's costly data-limit update
    from matplotlib.patches import Circle, FancyBboxPatch, Polygon

    for link in layout.links:
        dashed = link.style == "arrow"
        for line in link.lines:
            ax.plot([p[0] for p in line], [p[1] for p in line], color=_FILL["hyper"] if dashed else "black",
                    lw=1.4 if dashed else 1.2, ls="--" if dashed else "-", zorder=1, solid_capstyle="butt")
            diagram.segments.append(Segment(tuple(line), (link.a, link.b), link.inds))
        if dashed:   # an arrowhead where the route meets the filled node
            node = layout.vertices[link.b if layout.vertices[link.a].kind == "hyper" else link.a]
            tip, back = _arrow_tip(link.route, node)
            if tip is not None:
                ax.add_artist(Polygon(back + [tip], closed=True, color=_FILL["hyper"], zorder=2))
    for v in layout.vertices.values():
        if v.kind == "dot":
            ax.add_artist(Circle((v.x, v.y), DOT_R, color="black", zorder=4))
            diagram.shapes[v.id] = Shape(v.id, "disk", v.x, v.y, r=DOT_R)
        elif v.kind == "hyper":
            ax.add_artist(FancyBboxPatch((v.x - v.half_w + 0.05, v.y - v.half_h + 0.05), 2 * v.half_w - 0.1,
                                        2 * v.half_h - 0.1, boxstyle="round,pad=0.05", facecolor=_FILL["hyper"],
                                        edgecolor=_TRAIN, lw=2.0, zorder=3))
            diagram.shapes[v.id] = Shape(v.id, "box", v.x, v.y, half_w=v.half_w, half_h=v.half_h)
        elif v.kind in _FILL:
            nd = graph.nodes[v.id]
            _symbol(ax, v.x, v.y, v.half_w, v.kind, bool(nd.num_parameters()) and v.id not in graph.generated)
            diagram.shapes[v.id] = Shape(v.id, "disk", v.x, v.y, r=v.half_w)


def _arrow_tip(route: list[Point], node: Vertex) -> tuple[Point | None, list[Point]]:
    pts = route if math.hypot(route[-1][0] - node.x, route[-1][1] - node.y) < 1e-9 else route[::-1]
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    L = math.hypot(x1 - x0, y1 - y0)
    if L <= node.half_w + 0.15:
        return None, []
    ux, uy = (x1 - x0) / L, (y1 - y0) / L
    tip = (x1 - ux * (node.half_w + 0.02), y1 - uy * (node.half_w + 0.02))
    bx, by = tip[0] - ux * 0.16, tip[1] - uy * 0.16
    return tip, [(bx - uy * 0.06, by + ux * 0.06), (bx + uy * 0.06, by - ux * 0.06)]


def _symbol(ax: Axes, x: float, y: float, r: float, kind: str, trainable: bool) -> None:
    from matplotlib.patches import Circle, Rectangle, Wedge

    edge = _TRAIN if trainable else _FROZEN
    lw = 2.2 if trainable else 1.3
    if kind == "dense":
        ax.add_artist(Circle((x, y), r, facecolor=_FILL[kind], edgecolor=edge, lw=lw, zorder=3))
    elif kind == "diagonal":
        ax.add_artist(Circle((x, y), r, facecolor="white", edgecolor=edge, lw=lw, zorder=3))
        d = r * 0.7
        ax.plot([x - d, x + d], [y - d, y + d], color=edge, lw=lw, zorder=4)
    elif kind == "unitary":
        ax.add_artist(Circle((x, y), r, facecolor="white", edgecolor="none", zorder=3))
        ax.add_artist(Wedge((x, y), r, 90, 270, facecolor=_FILL[kind], edgecolor="none", zorder=3.5))
        ax.add_artist(Circle((x, y), r, facecolor="none", edgecolor=edge, lw=lw, zorder=4))
    else:  # nonlinear: the delay symbol, flat towards its input (below), round towards its output
        ax.add_artist(Rectangle((x - r, y - r), 2 * r, r, facecolor=_FILL[kind], edgecolor="none", zorder=3))
        ax.add_artist(Wedge((x, y), r, 0, 180, facecolor=_FILL[kind], edgecolor="none", zorder=3))
        t = [math.pi * k / 24 for k in range(25)]
        xs = [x - r, x + r, x + r] + [x + r * math.cos(a) for a in t] + [x - r, x - r]
        ys = [y - r, y - r, y] + [y + r * math.sin(a) for a in t] + [y, y - r]
        ax.plot(xs, ys, color=edge, lw=lw, zorder=4)


def _legend_symbol(ax: Axes, kind: str, x: float, y: float) -> None:
    from matplotlib.patches import Circle, FancyBboxPatch

    if kind in ("dense", "diagonal", "unitary", "nonlinear"):
        _symbol(ax, x, y, 0.13, kind, False)
    elif kind == "dot":
        ax.add_artist(Circle((x, y), DOT_R, color="black", zorder=4))
    elif kind == "hyper":
        ax.add_artist(FancyBboxPatch((x - 0.13, y - 0.09), 0.26, 0.18, boxstyle="round,pad=0.02",
                                    facecolor=_FILL["hyper"], edgecolor="none", zorder=3))
    else:
        ax.plot([x - 0.15, x + 0.15], [y, y], color=_TRAIN if kind == "trainable" else _FROZEN,
                lw=2.2 if kind == "trainable" else 1.3)


def draw_graph(graph: Graph, path: str | Path | None = None, *, title: str | None = None,
               dpi: int = 150) -> Figure:
    """Draw ``graph``; save to ``path`` (``.svg``, ``.png`` or ``.pdf``) if given; return the figure."""
    diagram = tensor_diagram(graph, title=title)
    if path is not None:
        diagram.save(path, dpi=dpi)
    return diagram.figure
