"""Which layers share which tensors: an adapter's shared tensors drawn once each (top row), every
adapted layer as a box (bottom row), a line from each shared tensor to every layer that uses it
(:func:`sharing_diagram`). Checked geometrically like the tensor diagrams."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from tnpeft.draw.tensor_diagram import INCH, MARGIN, STYLE, Diagram, Segment, Shape, TextBox, measure_text
from tnpeft.errors import GraphError
from tnpeft.graph import Graph, shared_nodes, shared_users
from tnpeft.storage import graph_modules

R = 0.3
MAX_LAYERS = 24


def _short(path: str) -> str:
    parts = path.split(".")
    return ".".join(parts[-3:]) if len(parts) > 3 else path


def sharing_diagram(source: Any, *, adapter_name: str = "default", title: str | None = None) -> Diagram:
    """The sharing map of an adapter: ``source`` is a ``{path: Graph}`` mapping, a model with
    injected adapters, a saved adapter folder (anything :func:`tnpeft.graph_modules` reads). Up to
    ``MAX_LAYERS`` layers are drawn (the rest counted in the caption)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, FancyBboxPatch

    graphs: Mapping[str, Graph] = (source if isinstance(source, Mapping) and all(isinstance(g, Graph) for g in source.values())
                                   else {p: m.graph for p, m in graph_modules(source, adapter_name).items()})
    nodes, users = shared_nodes(graphs), shared_users(graphs)
    if not nodes:
        raise GraphError("the adapter shares no tensor across layers: nothing to draw")
    paths = list(graphs)[:MAX_LAYERS]
    labels = [_short(p) for p in paths]
    box_w = max(measure_text(t, "box")[0] for t in labels) + 0.3
    box_h = 0.5
    step = max(box_w + 0.25, 1.0)
    width = step * len(paths)
    keys = sorted(nodes)
    kx = {k: width / 2 + (i - (len(keys) - 1) / 2) * max(1.6, width / max(1, len(keys))) for i, k in enumerate(keys)}
    bx = {p: step * (i + 0.5) for i, p in enumerate(paths)}
    top, low = 3.2, 0.0
    texts: list[tuple[str, str, float, float]] = []
    for k in keys:
        n = nodes[k]
        texts.append((f"{k} {'×'.join(map(str, n.sizes))}", "node", kx[k], top + R + 0.3))
    more = len(graphs) - len(paths)
    cap = (title or f"shared tensors of {len(graphs)} adapted layers") + (f" ({more} more not drawn)" if more else "")
    x0 = min([0.0] + [kx[k] - measure_text(t, "node")[0] / 2 for k, (t, *_) in zip(keys, texts)]) - MARGIN
    x1 = max([width] + [kx[k] + measure_text(t, "node")[0] / 2 for k, (t, *_) in zip(keys, texts)]) + MARGIN
    cw, ch = measure_text(cap, "caption")
    x0, x1 = min(x0, width / 2 - cw / 2 - MARGIN), max(x1, width / 2 + cw / 2 + MARGIN)
    y1 = top + R + 0.6 + ch + 0.3
    texts.append((cap, "caption", width / 2, top + R + 0.6 + ch / 2 + 0.15))
    with matplotlib.rc_context(STYLE['rc']):
        fig = Figure(figsize=((x1 - x0) * INCH, (y1 - low + box_h + MARGIN * 2) * INCH), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(x0, x1)
        ax.set_ylim(low - box_h / 2 - MARGIN, y1)
        ax.set_aspect("equal", adjustable="box")
        ax.axis("off")
        d = Diagram(fig)
        for k in keys:
            trained = nodes[k].trainable
            ax.add_patch(Circle((kx[k], top), R, facecolor=STYLE['fill'].get(nodes[k].kind, "white"),
                                edgecolor=STYLE['trainable'] if trained else STYLE['frozen'], lw=2.2 if trained else 1.3, ls=(0, (2.0, 1.2)),
                                zorder=3))
            d.shapes[f"shared:{k}"] = Shape(f"shared:{k}", "disk", kx[k], top, r=R)
            for path, _ in users.get(k, []):
                if path in bx:
                    line = ((kx[k], top - R), (bx[path], low + box_h / 2))
                    ax.plot(*zip(*line), color="black", lw=1.0, zorder=1)
                    d.segments.append(Segment(line, (f"shared:{k}", f"layer:{path}"), (k,)))
        for path, text in zip(paths, labels):
            ax.add_patch(FancyBboxPatch((bx[path] - box_w / 2, low - box_h / 2), box_w, box_h,
                                        boxstyle="round,pad=0.0,rounding_size=0.08", facecolor="#EEF2F7",
                                        edgecolor="#4C72B0", lw=1.0, zorder=2))
            d.shapes[f"layer:{path}"] = Shape(f"layer:{path}", "box", bx[path], low, half_w=box_w / 2, half_h=box_h / 2)
            texts.append((text, "box", bx[path], low))
        renderer = canvas.get_renderer()
        inv = ax.transData.inverted()
        for text, role, x, y in texts:
            size = {"node": 9, "caption": 9.5, "box": 8}[role]
            art = ax.text(x, y, text, fontsize=size, fontweight="bold" if role == "node" else "normal", ha="center",
                          va="center", color="black", zorder=6)
            bb = art.get_window_extent(renderer).transformed(inv)
            d.texts.append(TextBox(text, role, (bb.x0, bb.y0, bb.x1, bb.y1)))
    return d


def draw_sharing(source: Any, path: str | Path, **kwargs: Any) -> Path:
    """Draw :func:`sharing_diagram` of ``source`` to ``path`` (``.svg``, ``.png``, ``.pdf``)."""
    return sharing_diagram(source, **kwargs).save(path)
