"""Draw a Pauli-parameterized unitary node as its quantum circuit (RY rotations and CZ gates)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tnpeft.errors import GraphError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from tnpeft.graph import Graph


def circuit_moments(n_qubits: int, layers: int) -> list[list[tuple]]:
    """The circuit as moments (columns) of gates: ``("ry", qubit, angle index)`` and
    ``("cz", q1, q2)``, in the order :func:`tnpeft.params.unitary.apply_circuit` applies them."""
    moments: list[list[tuple]] = [[("ry", q, q) for q in range(n_qubits)]]
    a = n_qubits
    for _ in range(layers):
        for parity in (0, 1):
            pairs = list(range(parity, n_qubits - 1, 2))
            if not pairs:
                continue
            moments.append([("cz", p, p + 1) for p in pairs])
            col = []
            for p in pairs:
                for q in (p, p + 1):
                    col.append(("ry", q, a))
                    a += 1
            moments.append(col)
    return moments


def draw_circuit(graph: Graph, node: str, path: str | Path | None = None, *, dpi: int = 150) -> Figure:
    """Draw unitary node ``node`` of ``graph`` (param ``pauli``) as its circuit, with the current
    angles. For a non-power-of-two size the circuit of the power-of-two block ``B₁`` is drawn (the
    cosine–sine split around it is named in the title)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from tnpeft.graph.nodes import Unitary
    from tnpeft.params.unitary import circuit_angle_count

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
    theta = graph.module.get_submodule(node).theta.detach().reshape(-1, graph.module.get_submodule(node).theta.shape[-1])[0]
    theta = theta[: circuit_angle_count(q, layers)].tolist()
    moments = circuit_moments(q, layers)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(moments), 0.9 + 0.55 * max(q, 1)))
    ax.axis("off")
    for w in range(q):
        ax.plot([-0.6, len(moments) - 0.4], [-w, -w], color="black", lw=1, zorder=1)
        ax.text(-0.7, -w, f"q{w}", ha="right", va="center", fontsize=9)
    for c, col in enumerate(moments):
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
    ax.set_xlim(-1.2, len(moments) - 0.3)
    ax.set_ylim(-q + 0.5, 0.6)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        plt.rcParams["svg.hashsalt"] = "tnpeft"
        fig.savefig(path, dpi=dpi, metadata={"Date": None} if str(path).endswith(".svg") else None)
    return fig
