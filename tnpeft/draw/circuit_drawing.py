"""Draw a Pauli-parameterized unitary node as its quantum circuit (RY rotations and CZ gates),
following the circuit description the frame itself is computed from
(:func:`tnpeft.params.circuit.pauli_circuit`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tnpeft.errors import GraphError
from tnpeft.graph import Graph, GraphModule, Unitary, resolve_graph_module
from tnpeft.params.circuit import Circuit, circuit_angle_count, pauli_circuit

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def circuit_moments(n_qubits: int, layers: int) -> list[list[tuple]]:
    """The Pauli circuit as moments (columns) of gates: ``("ry", qubit, angle index)`` and
    ``("cz", q1, q2)``, in the order the frame applies them."""
    return moments(pauli_circuit(n_qubits, layers))


def moments(circuit: Circuit) -> list[list[tuple]]:
    """A circuit's gates grouped into columns: a new column starts when a gate of another kind
    follows, or a gate would share a qubit with one already in the column."""
    cols: list[list[tuple]] = []
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


def _entry(g) -> tuple:
    return ("ry", g.qubits[0], g.angle[1]) if g.name == "ry" else (g.name, *g.qubits)


def draw_circuit(source: Graph | GraphModule, node: str, path: str | Path | None = None, *, dpi: int = 150) -> Figure:
    """Draw unitary node ``node`` (param ``pauli``) of a graph (its ``module``'s values) or of a
    :class:`GraphModule` (e.g. a trained layer's ``layer.tn_adapters[name]``) as its circuit,
    with the current angles. For a non-power-of-two size the circuit of the power-of-two block
    ``B₁`` is drawn (the cosine–sine split around it is named in the title)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    graph, module = resolve_graph_module(source)
    if node not in graph.nodes:
        raise GraphError(f"no node named {node!r}; the graph has {list(graph.nodes)}", node=node)
    nd = graph.nodes[node]
    if not isinstance(nd, Unitary) or nd.param != "pauli":
        raise GraphError(f"node {node!r} is a {nd.kind} node{' with param ' + repr(nd.param) if isinstance(nd, Unitary) else ''}; "
                         "the circuit view draws unitary nodes with param 'pauli'", node=node)
    n, k = nd.sizes[-2:]
    layers = nd.options.get("layers", 1)
    n1 = 1 << (n.bit_length() - 1)
    q = n1.bit_length() - 1
    frame = module.get_submodule(node)
    theta = frame.theta.detach().reshape(-1, frame.theta.shape[-1])[0]
    theta = theta[: circuit_angle_count(q, layers)].tolist()
    cols = circuit_moments(q, layers)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 0.9 + 0.55 * max(q, 1)))
    ax.axis("off")
    for w in range(q):
        ax.plot([-0.6, len(cols) - 0.4], [-w, -w], color="black", lw=1, zorder=1)
        ax.text(-0.7, -w, f"q{w}", ha="right", va="center", fontsize=9)
    for c, col in enumerate(cols):
        for gate in col:
            if gate[0] == "ry":
                _, wq, ai = gate
                ax.add_patch(plt.Rectangle((c - 0.32, -wq - 0.22), 0.64, 0.44, facecolor="#DD8452", edgecolor="black",
                                           zorder=3))
                ax.text(c, -wq + 0.02, f"RY\n{theta[ai]:.2f}", ha="center", va="center", fontsize=6.5, zorder=4)
            else:
                _, a, b = gate
                ax.plot([c, c], [-a, -b], color="black", lw=1.4, zorder=2)
                ax.plot([c, c], [-a, -b], "o", color="black", ms=6, zorder=3)
    split = "" if n == n1 else f"; N = {n} uses a cosine–sine split around this {n1}-row block"
    ax.set_title(f"{node}: Pauli circuit on {q} qubits, {layers} layer(s), first {k} columns{split}", fontsize=9)
    ax.set_xlim(-1.2, len(cols) - 0.3)
    ax.set_ylim(-q + 0.5, 0.6)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        plt.rcParams["svg.hashsalt"] = "tnpeft"
        fig.savefig(path, dpi=dpi, metadata={"Date": None} if str(path).endswith(".svg") else None)
    return fig
