"""Draw an adapter graph as a tensor diagram.

Notation (as in the Quantum-PEFT and tensor-network literature): a filled circle is a dense
tensor, an open circle with a slash a diagonal one, a half-filled circle a unitary (orthonormal
columns), a delay symbol (flat back, round front) a nonlinear map. Edges carry their index name and
size; open legs run to the figure's edges (input on the left, output on the right); an index shared
by three or more nodes meets at a small black dot (a copy tensor), except that a diagonal node on
an index shared with two others is drawn inline between them. Trainable nodes have a coloured
outline. A hyper-network (QPA's) is a box above the nodes it fills, with dashed arrows. The layout
is deterministic and runs left to right in data-flow order.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from tnpeft.graph import Graph

_FILL = {"dense": "#4C72B0", "diagonal": "white", "unitary": "#DD8452", "nonlinear": "#55A868",
         "hypernetwork": "#8172B3"}
_TRAIN = "#C44E52"
_FROZEN = "#555555"
R = 0.28


def _levels(graph: Graph) -> dict[str, int]:
    """Column of each node: one right of the rightmost earlier node (in data-flow order) it shares an
    index with, so chains run left to right and nodes that share nothing stack in one column."""
    level: dict[str, int] = {}
    for n in graph.nodes:
        inds = set(graph.nodes[n].inds)
        prev = [level[m] for m in level if inds & set(graph.nodes[m].inds)]
        level[n] = max(prev) + 1 if prev else 0
    return level


def _symbol(ax, x, y, kind: str, trainable: bool) -> None:
    from matplotlib.patches import Circle, FancyBboxPatch, Wedge

    edge = _TRAIN if trainable else _FROZEN
    lw = 2.4 if trainable else 1.4
    if kind == "dense":
        ax.add_patch(Circle((x, y), R, facecolor=_FILL[kind], edgecolor=edge, lw=lw, zorder=3))
    elif kind == "diagonal":
        ax.add_patch(Circle((x, y), R, facecolor="white", edgecolor=edge, lw=lw, zorder=3))
        d = R * 0.7
        ax.plot([x - d, x + d], [y - d, y + d], color=edge, lw=lw, zorder=4)
    elif kind == "unitary":
        ax.add_patch(Circle((x, y), R, facecolor="white", edgecolor=edge, lw=lw, zorder=3))
        ax.add_patch(Wedge((x, y), R, 90, 270, facecolor=_FILL[kind], edgecolor="none", zorder=3.5))
        ax.add_patch(Circle((x, y), R, facecolor="none", edgecolor=edge, lw=lw, zorder=4))
    else:  # nonlinear: the delay symbol
        ax.add_patch(FancyBboxPatch((x - R, y - R), R, 2 * R, boxstyle="square,pad=0", facecolor=_FILL[kind],
                                    edgecolor=edge, lw=lw, zorder=3))
        ax.add_patch(Wedge((x, y), R, -90, 90, facecolor=_FILL[kind], edgecolor=edge, lw=lw, zorder=3))


def _delay_marker():
    """The delay symbol as a marker path: a flat back and a round front."""
    import numpy as np
    from matplotlib.path import Path as MPath

    t = np.linspace(-np.pi / 2, np.pi / 2, 16)
    verts = [(-1.0, -1.0), (0.0, -1.0)] + [(np.cos(a), np.sin(a)) for a in t] + [(0.0, 1.0), (-1.0, 1.0), (-1.0, -1.0)]
    return MPath(verts, closed=True)


def draw_graph(graph: Graph, path: str | Path | None = None, *, title: str | None = None,
               dpi: int = 150) -> Figure:
    """Draw ``graph``; save to ``path`` (``.svg``, ``.png`` or ``.pdf``) if given; return the figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyBboxPatch

    order = list(graph.nodes)
    level = _levels(graph)
    cols: dict[int, list[str]] = defaultdict(list)
    for n in order:
        cols[level[n]].append(n)
    pos: dict[str, tuple[float, float]] = {}
    for c, names in cols.items():
        for j, n in enumerate(names):
            pos[n] = (1.8 * c, (len(names) - 1) / 2 * 1.4 - 1.4 * j)
    width = 1.8 * (max(cols) if cols else 0)
    left, right = -1.6, width + 1.6
    heights = [len(v) for v in cols.values()]
    fig_h = 2.2 + 1.0 * max(heights) + (1.2 if graph.hypernetworks else 0.0)
    name = title or graph.name or "adapter"
    mode = "  (transforms the layer input)" if graph.mode == "input" else ""
    gen = f" generating {graph.num_generated():,} values" if graph.hypernetworks else ""
    caption = (f"{name}: {graph.in_features:,} → {graph.out_features:,}, scale {graph.scale:.4g}, "
               f"{graph.num_parameters():,} trainable parameters{gen}{mode}")
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * (right - left), 0.085 * len(caption)), fig_h))
    ax.set_aspect("equal")
    ax.axis("off")
    size = graph.size_dict

    holders: dict[str, list[str]] = defaultdict(list)
    for n in order:
        for i in graph.nodes[n].inds:
            holders[i].append(n)

    def label(x, y, ind, dy=0.16):
        ax.text(x, y + dy, f"{ind}={size[ind]}", ha="center", va="bottom", fontsize=8, color="#333333", zorder=5)

    def edge(a, b, ind, bend=0.0):
        (x1, y1), (x2, y2) = a, b
        if bend:
            import numpy as np

            t = np.linspace(0, 1, 30)
            xs = x1 + (x2 - x1) * t
            ys = y1 + (y2 - y1) * t + bend * 4 * t * (1 - t)
            ax.plot(xs, ys, color="black", lw=1.2, zorder=1)
            label(xs[15], ys[15], ind)
        else:
            ax.plot([x1, x2], [y1, y2], color="black", lw=1.2, zorder=1)
            label((x1 + x2) / 2, (y1 + y2) / 2, ind)

    pair_count: dict[tuple[str, str], int] = defaultdict(int)

    def link(a: str, b: str, ind: str) -> None:
        key = tuple(sorted((a, b)))
        k = pair_count[key]
        pair_count[key] += 1
        gap = abs(order.index(a) - order.index(b))
        same_row = pos[a][1] == pos[b][1]
        bend = (0.45 * ((k + 1) // 2) * (1 if k % 2 else -1)) if k else (0.7 if gap > 1 and same_row else 0.0)
        edge(pos[a], pos[b], ind, bend=bend)

    for ind, hs in holders.items():
        hs = sorted(hs, key=lambda h: (pos[h][0], order.index(h)))
        is_in, is_out = ind in graph.in_inds, ind in graph.out_inds
        diags = [h for h in hs if graph.nodes[h].kind == "diagonal"]
        others = [h for h in hs if h not in diags]
        if is_in or is_out or len(hs) == 2:
            for a, b in zip(hs, hs[1:]):  # a chain through the holders, in data-flow order
                link(a, b, ind)
        elif len(diags) == 1 and len(others) == 2:
            a, b = others
            link(a, diags[0], ind)
            link(diags[0], b, ind)
        else:  # a hyperedge: a copy-tensor dot
            xs = [pos[h][0] for h in hs]
            ys = [pos[h][1] for h in hs]
            hub = (sum(xs) / len(xs), min(ys) - 0.75)
            ax.plot(*hub, "o", color="black", ms=5, zorder=4)
            for h in hs:
                ax.plot([pos[h][0], hub[0]], [pos[h][1], hub[1]], color="black", lw=1.2, zorder=1)
            label(hub[0], hub[1], ind, dy=-0.38)

    for legs, x_edge, side in ((graph.in_inds, left, -1), (graph.out_inds, right, 1)):
        for k, ind in enumerate(legs):
            hs = sorted(holders[ind], key=lambda h: (pos[h][0], order.index(h)))
            h = hs[0] if side < 0 else hs[-1]
            x, y = pos[h]
            yy = y + ((len(legs) - 1) / 2 - k) * 0.5
            ax.plot([x_edge, x], [yy, y], color="black", lw=1.2, zorder=1)
            ax.text(x_edge + side * 0.05, yy + 0.06, f"{ind}={size[ind]}", fontsize=8,
                    ha="left" if side < 0 else "right", va="bottom", color="#333333")
    for n in order:
        node = graph.nodes[n]
        _symbol(ax, *pos[n], node.kind, bool(node.num_parameters()) and n not in graph.generated)
        text = f"{n}\n({node.fn})" if node.kind == "nonlinear" else n
        ax.text(pos[n][0], pos[n][1] - R - 0.1, text, ha="center", va="top", fontsize=10, fontweight="bold", zorder=5)

    top = max(p[1] for p in pos.values()) if pos else 0.0
    for gname, gen in graph.hypernetworks.items():  # a hyper-network box above the nodes it fills
        xs = [pos[o][0] for o in gen.outputs]
        gx, gy = sum(xs) / len(xs), top + 1.25
        ax.add_patch(FancyBboxPatch((gx - 0.55, gy - 0.25), 1.1, 0.5, boxstyle="round,pad=0.05",
                                    facecolor=_FILL["hypernetwork"], edgecolor=_TRAIN, lw=2.4, zorder=3))
        ax.text(gx, gy, f"{gname} ({gen.kind})", ha="center", va="center", fontsize=9, fontweight="bold",
                color="white", zorder=4)
        for o in gen.outputs:
            ox, oy = pos[o]
            ax.annotate("", xy=(ox, oy + R + 0.02), xytext=(gx, gy - 0.3),
                        arrowprops={"arrowstyle": "->", "ls": "--", "color": _FILL["hypernetwork"], "lw": 1.4}, zorder=2)
        pos[f"__{gname}"] = (gx, gy + 0.3)
    handles = [Line2D([], [], marker="o", ls="", mfc=_FILL["dense"], mec="black", ms=10, label="dense"),
               Line2D([], [], marker="$\\oslash$", ls="", color="black", ms=12, label="diagonal"),
               Line2D([], [], marker="o", ls="", mfc=_FILL["unitary"], mec="black", ms=10, fillstyle="left",
                      markerfacecoloralt="white", label="unitary"),
               Line2D([], [], marker=_delay_marker(), ls="", mfc=_FILL["nonlinear"], mec="black", ms=11,
                      label="nonlinear"),
               Line2D([], [], marker="s", ls="", mfc=_FILL["hypernetwork"], mec="black", ms=10, label="hyper-network"),
               Line2D([], [], color=_TRAIN, lw=2.4, label="trainable"),
               Line2D([], [], color=_FROZEN, lw=1.4, label="frozen")]
    present = {graph.nodes[n].kind for n in order} | ({"hyper-network"} if graph.hypernetworks else set())
    handles = [h for h in handles if h.get_label() in present or h.get_label() in ("trainable", "frozen")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(handles), fontsize=8,
              frameon=False, handletextpad=0.3, columnspacing=1.0)
    ax.set_title(caption, fontsize=10)
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(left - 0.2, right + 0.2)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 0.9)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        plt.rcParams["svg.hashsalt"] = "tnpeft"  # deterministic SVG ids
        fig.savefig(path, dpi=dpi, metadata={"Date": None} if path.suffix == ".svg" else None)
    return fig
