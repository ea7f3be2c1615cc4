"""Draw a graph's circuit-shaped parts as quantum circuits: a ``pauli`` unitary node of any size
(the whole cosine–sine construction, its parts shaded and named), a ``givens`` node, a QNN node,
a QPA hyper-network — each from the circuit description the node itself is computed from."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from tnpeft.circuits.circuit import Circuit, Gate, pauli_circuit
from tnpeft.circuits.frames import flatten_blocks, givens_circuit, pauli_frame
from tnpeft.draw.geometry import output_path
from tnpeft.errors import GraphError
from tnpeft.graph import Graph, Nonlinear, Unitary
from tnpeft.params.hypernetworks import QPAHyperNetwork
from tnpeft.params.qnn import QNNMap
from tnpeft.params.unitary import GivensFrame, PauliFrame, butterfly_pairs
from tnpeft.runtime import GraphModule
from tnpeft.storage import resolve_graph_module

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

_RY = "#DD8452"
_DATA = "#55A868"
_BANDS = ("#E8EEF7", "#F7EDE4")


def circuit_moments(n_qubits: int, layers: int) -> list[list[tuple[Any, ...]]]:
    """The power-of-two Pauli circuit as moments (columns) of gates: ``("ry", qubit, angle index)``
    and ``("cz", q1, q2)``, in the order the frame applies them."""
    return moments(pauli_circuit(n_qubits, layers))


def moments(circuit: Circuit) -> list[list[tuple[Any, ...]]]:
    """An uncontrolled circuit's gates grouped into columns: a new column starts when a gate of
    another kind follows, or a gate would share a qubit with one already in the column."""
    cols: list[list[tuple[Any, ...]]] = []
    busy: set[int] = set()
    kind = None
    for g in circuit.gates:
        if cols and g.name == kind and not busy & set(g.qubits):
            cols[-1].append(_entry(g))
        else:
            cols.append([_entry(g)])
            busy = set()
            kind = g.name
        busy |= set(g.qubits)
    return cols


def _entry(g: Gate) -> tuple[Any, ...]:
    if g.name != "ry":
        return (g.name, *g.qubits)
    assert g.angle is not None   # every RY gate has one
    return ("ry", g.qubits[0], g.angle[1])


def node_circuit(source: Graph | GraphModule, node: str) -> tuple[Circuit, list[str], list[float | None], str]:
    """What :func:`draw_circuit` draws for ``node``: the circuit, a part label per gate, the angle
    value per gate (``None`` for data inputs and unrotated gates) and a title."""
    graph, module = resolve_graph_module(source)
    if node in graph.hypernetworks:
        net = cast(QPAHyperNetwork, module.get_submodule(node))
        theta = net.theta.detach().to(torch.float64).tolist()
        c = net.circuit
        return (c, [""] * len(c.gates), _values(c, theta),
                f"{node}: QPA hyper-network circuit on {c.n_qubits} qubits, {net.shape.layers} blocks of RY + CX "
                f"ladder; probabilities of its first {net.shape.n_chunks} basis states feed the mapping network")
    if node not in graph.nodes:
        raise GraphError(f"no node or hyper-network named {node!r}; the graph has {list(graph.nodes)}"
                         f"{' and ' + str(list(graph.hypernetworks)) if graph.hypernetworks else ''}", node=node)
    nd = graph.nodes[node]
    m = module.get_submodule(node) if node not in graph.generated else None
    if isinstance(nd, Nonlinear) and nd.fn == "qnn":
        qnn = cast(QNNMap, m)
        c = qnn.circuit
        theta = qnn.theta.detach().to(torch.float64).tolist()
        o = qnn.opts
        return (c, [""] * len(c.gates), _values(c, theta),
                f"{node}: QNN on {c.n_qubits} qubits — {c.n_inputs} features angle-encoded (x), {o.layers} "
                f"trainable layer(s), {o.entangler.upper()} ladder, read-out {o.readout}, fusion {o.fusion}")
    if isinstance(nd, Unitary) and isinstance(m, (PauliFrame, GivensFrame)):
        n, k = nd.sizes[-2:]
        if m.theta.shape[-1] == 0:
            raise GraphError(f"node {node!r} is a {n}×{k} frame: it has no angles and no gates (it is the constant "
                             "1), so there is no circuit to draw", node=node)
        theta = m.angles().detach().to(torch.float64).reshape(-1, m.theta.shape[-1])[0].tolist()
        batch = f" (batch element 0 of {tuple(nd.batch_shape)})" if nd.batch_shape else ""
        if isinstance(m, PauliFrame):
            rows = m.rows          # a pow2 frame: the circuit of the padded rows, projected to n rows
            tagged = flatten_blocks(pauli_frame(rows, m.layers), k)
            c = Circuit(max(1, (rows - 1).bit_length()), tuple(g for g, _ in tagged), len(theta))
            how = ("its power-of-two circuit" if n & (n - 1) == 0 else "the whole cosine–sine split" if rows == n
                   else f"padded to {rows} rows, projected to {n}")
            legend = "; ● control on 1, ○ on 0" if c.is_controlled else ""
            title = (f"{node}: Pauli frame {n}×{k} as one circuit on {c.n_qubits} qubits ({how}, {m.layers} layer(s))"
                     f"{batch}{legend}")
            labels = [lab for _, lab in tagged] if c.is_controlled else [""] * len(tagged)
            return c, labels, _values(c, theta), title
        pairs = butterfly_pairs(n, m.n_layers)
        c = givens_circuit(n, pairs)
        layer_of = [f"layer {i} (rows i ↔ i + {1 << (b[0] - a[0]).bit_length() - 1 if a else 0})"
                    for i, (a, b) in enumerate(pairs) for _ in a]
        return (c, layer_of, _values(c, theta),
                f"{node}: Givens butterfly {n}×{k} on {c.n_qubits} qubits, {m.n_layers} layer(s){batch}")
    what = f"a {nd.kind} node" + (f" with param {nd.param!r}" if isinstance(nd, Unitary) else "")
    raise GraphError(f"node {node!r} is {what}; the circuit view draws unitary nodes with param 'pauli' or "
                     "'givens', 'qnn' nonlinear nodes and hyper-networks", node=node)


def _values(c: Circuit, theta: list[float]) -> list[float | None]:
    return [theta[g.angle[1]] * g.factor if g.name == "ry" and g.angle is not None and g.angle[0] == "param" else None
            for g in c.gates]


def _common_controls(circuit: Circuit, labels: list[str]) -> list[tuple[tuple[int, int], ...]]:
    """Per gate: the controls every gate of its part shares (drawn once for the part)."""
    common: dict[str, set[tuple[int, int]]] = {}
    for g, lab in zip(circuit.gates, labels):
        common[lab] = set(g.controls) if lab not in common else common[lab] & set(g.controls)
    return [tuple(sorted(common[lab])) if lab else () for lab in labels]


def _columns(c: Circuit, labels: list[str], shared: list[tuple[tuple[int, int], ...]]) -> list[int]:
    """A column per gate: as early as the gates before it on its span allow (controls drawn with
    the part excluded); a new part of the construction starts a new column."""
    free = [0] * c.n_qubits
    cols = []
    start = 0
    for i, g in enumerate(c.gates):
        if i and labels[i] != labels[i - 1]:
            start = max(free)
        qs = list(g.qubits) + [q for q, v in g.controls if (q, v) not in shared[i]]
        lo, hi = min(qs), max(qs)
        col = max([start] + free[lo:hi + 1])
        for q in range(lo, hi + 1):
            free[q] = col + 1
        cols.append(col)
    return cols


def draw_circuit(source: Graph | GraphModule, node: str, path: str | Path | None = None, *, dpi: int = 150) -> Figure:
    """Draw ``node`` of a graph (its ``module``'s values) or of a :class:`GraphModule` (e.g. a
    trained layer's ``layer.tn_adapters[name]``) as its circuit, with the current angles: a
    ``pauli`` unitary node of any size (the whole construction, its parts shaded and named), a
    ``givens`` node, a ``qnn`` node (data inputs as ``x_j``) or a QPA hyper-network. Qubit ``n−1``
    (the most significant bit of a row index) is drawn on top."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    circuit, labels, values, title = node_circuit(source, node)
    nq = circuit.n_qubits
    shared = _common_controls(circuit, labels)
    cols = _columns(circuit, labels, shared) if circuit.gates else []
    width = (max(cols) + 1) if cols else 1
    step = 0.62 if width < 80 else 0.5
    fig_w = min(120.0, max(6.0, 1.6 + step * width))
    fig, ax = plt.subplots(figsize=(fig_w, 2.2 + 0.5 * nq))
    ax.axis("off")
    y = {q: (nq - 1 - q) * -1.0 for q in range(nq)}          # qubit n−1 on top
    for q in range(nq):
        ax.plot([-0.7, width - 0.3], [y[q], y[q]], color="black", lw=0.9, zorder=1)
        ax.text(-0.8, y[q], f"q{q}", ha="right", va="center", fontsize=8)
    # the parts of the construction as shaded bands with their names
    spans: list[tuple[str, int, int, tuple[tuple[int, int], ...]]] = []
    for lab, col, common in zip(labels, cols, shared):
        if lab and spans and spans[-1][0] == lab:
            spans[-1] = (lab, spans[-1][1], max(spans[-1][2], col), common)
        elif lab:
            spans.append((lab, col, col, common))
    for i, (lab, a, b, common) in enumerate(spans):
        ax.add_patch(Rectangle((a - 0.45, -nq + 0.45), b - a + 0.9, nq + 0.1, facecolor=_BANDS[i % 2],
                               edgecolor="none", zorder=0))
        cond = ", ".join(f"q{q}={v}" for q, v in common)
        text = lab + (f"; all gates controlled on {cond}" if cond else "")
        ax.text((a + b) / 2, 0.55 + 1.0 * (i % 2), textwrap.fill(text, max(22, int(2.8 * (b - a + 1)))),
                ha="center", va="bottom", fontsize=6.5, color="#333333", linespacing=1.0)
        for q, val in common:   # the part's shared controls: one bar on the control wire
            ax.plot([a - 0.35, b + 0.35], [y[q], y[q]], color="black", lw=3.0, zorder=2, solid_capstyle="butt")
            ax.plot([a - 0.35, b + 0.35], [y[q], y[q]], "o", ms=6, mfc="black" if val else "white", mec="black",
                    zorder=4)
    for g, col, v, common in zip(circuit.gates, cols, values, shared):
        own = [(q, val) for q, val in g.controls if (q, val) not in common]
        qs = list(g.qubits) + [q for q, _ in own]
        ax.plot([col, col], [y[min(qs, key=lambda q: y[q])], y[max(qs, key=lambda q: y[q])]], color="black", lw=1.0,
                zorder=2)
        for q, val in own:
            ax.plot(col, y[q], "o", ms=5.5, mfc="black" if val else "white", mec="black", zorder=4)
        if g.name == "ry":
            assert g.angle is not None   # every RY gate has one
            t = g.qubits[0]
            data = g.angle[0] == "input"
            ax.add_patch(Rectangle((col - 0.34, y[t] - 0.24), 0.68, 0.48, facecolor=_DATA if data else _RY,
                                   edgecolor="black", lw=0.8, zorder=3))
            text = f"x{g.angle[1]}" if data else f"{v:.2f}"
            ax.text(col, y[t] + 0.02, f"RY\n{text}", ha="center", va="center", fontsize=5.5, zorder=5)
        elif g.name == "cz":
            for q in g.qubits:
                ax.plot(col, y[q], "o", ms=5.5, color="black", zorder=4)
        else:  # cx: control dot, target ⊕
            c, t = g.qubits
            ax.plot(col, y[c], "o", ms=5.5, color="black", zorder=4)
            ax.add_patch(Circle((col, y[t]), 0.2, facecolor="white", edgecolor="black", lw=1.0, zorder=4))
            ax.plot([col - 0.2, col + 0.2], [y[t], y[t]], color="black", lw=1.0, zorder=5)
            ax.plot([col, col], [y[t] - 0.2, y[t] + 0.2], color="black", lw=1.0, zorder=5)
    top = 2.6 if spans else 0.6
    ax.set_xlim(-1.3, width)
    ax.set_ylim(-nq + 0.3, top)
    ax.set_title(textwrap.fill(title, max(60, int(fig_w * 11))), fontsize=9)
    fig.tight_layout()
    if path is not None:
        path = output_path(path)
        plt.rcParams["svg.hashsalt"] = "tnpeft"
        fig.savefig(path, dpi=dpi, metadata={"Date": None} if str(path).endswith(".svg") else None)
    return fig
