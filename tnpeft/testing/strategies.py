"""hypothesis strategies that generate valid adapter graphs.

    from hypothesis import given
    from tnpeft.testing.strategies import linear_graphs, networks

    @given(linear_graphs())
    def test_my_property(graph): ...
"""

from __future__ import annotations

from hypothesis import strategies as st

from tnpeft.adapters import adalora, lora, mpo, oft, qpa, quantum_peft, qwthn
from tnpeft.graph import Dense, Diagonal, Graph, Node
from tnpeft.params import UNITARY_PARAMS


@st.composite
def linear_graphs(draw: st.DrawFn, max_nodes: int = 4, max_bond: int = 5, max_features: int = 8) -> Graph:
    """Random valid linear graphs: 1–``max_nodes`` dense nodes in a chain (so the network is
    connected), extra bonds that close cycles, open legs on one or two nodes, and optionally a
    diagonal node sitting on a bond as a hyperedge. Every node gets a ``"normal"`` init so the
    update is non-zero."""
    n = draw(st.integers(1, max_nodes))
    inds: list[dict[str, int]] = [dict() for _ in range(n)]

    def size() -> int:
        return draw(st.integers(1, max_bond))

    n_in = draw(st.integers(1, max_features))
    n_out = draw(st.integers(1, max_features))
    for i in range(n - 1):
        s = size()
        inds[i][f"b{i}"] = s
        inds[i + 1][f"b{i}"] = s
    inds[0]["in"] = n_in
    inds[-1]["out"] = n_out
    if n > 1 and draw(st.booleans()):
        inds[draw(st.integers(1, n - 1))]["in"] = n_in
    if n > 1 and draw(st.booleans()):
        inds[draw(st.integers(0, n - 2))]["out"] = n_out
    for k in range(draw(st.integers(0, 2)) if n > 1 else 0):
        i, j = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        s = size()
        inds[i][f"e{k}"] = s
        inds[j][f"e{k}"] = s
    nodes: list[Node] = []
    for i, d in enumerate(inds):
        names = list(d)
        order = draw(st.permutations(names))
        nodes.append(Dense(f"T{i}", tuple(order), tuple(d[x] for x in order), init="normal"))
    bonds = [(k, v) for d in inds for k, v in d.items() if k not in ("in", "out")]
    if len(bonds) > 0 and draw(st.booleans()):   # len: a bare list gives draw() a wrong type context
        bond, dim = draw(st.sampled_from(bonds))
        nodes.append(Diagonal("D", (bond,), (dim,), init="normal"))
    scale = draw(st.sampled_from([1.0, 0.5, 2.0]))
    return Graph(nodes, scale=scale, name="random")


@st.composite
def adapter_graphs(draw: st.DrawFn, max_features: int = 48) -> Graph:
    """A built-in adapter (LoRA, AdaLoRA, Quantum-PEFT with any parametrization, OFT, QPA,
    QWTHN with either fusion, MPO) with random sizes and hyper-parameters."""
    n = draw(st.integers(2, max_features))
    m = draw(st.integers(2, max_features))
    kind = draw(st.sampled_from(["lora", "adalora", "quantum_peft", "oft", "qpa", "qwthn", "mpo"]))
    if kind == "qpa":
        return qpa(n, m, r=draw(st.integers(1, 4)), chunk_size=draw(st.integers(1, 64)),
                   qnn_layers=draw(st.integers(1, 4)), preset=draw(st.sampled_from(["tnpeft", "reference"])),
                   hidden=draw(st.sampled_from([(8,), (16, 8), (32, 64, 128, 128, 64, 32, 32)])))
    if kind in ("qwthn", "mpo"):
        r = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
        common = {"r": r, "cores": draw(st.integers(1, 3)), "bond": draw(st.integers(1, 4))}
        if kind == "mpo":
            return mpo(n, m, **common)
        return qwthn(n, m, **common, fusion=draw(st.sampled_from(["product", "linear"])),
                     qnn_layers=draw(st.integers(1, 3)), entangler=draw(st.sampled_from(["cz", "cx"])))
    if kind == "lora":
        return lora(n, m, r=draw(st.integers(1, 8)), alpha=draw(st.sampled_from([1.0, 8.0, 16.0])),
                    use_rslora=draw(st.booleans()))
    if kind == "adalora":
        r = draw(st.integers(1, 8))
        return adalora(n, m, r=r, target_r=draw(st.integers(1, r)))
    if kind == "quantum_peft":
        k = draw(st.integers(1, min(n, m, 6)))
        param = draw(st.sampled_from(sorted(UNITARY_PARAMS)))
        kk = draw(st.one_of(st.none(), st.integers(1, k)))
        bits = draw(st.one_of(st.none(), st.integers(2, 6))) if param in ("pauli", "givens") else None
        return quantum_peft(n, m, rank=k, layers=draw(st.integers(1, 3)), param=param, intrinsic_rank=kk, bits=bits)
    n = max(n, 2)
    s = draw(st.sampled_from([d for d in range(2, n + 1) if n % d == 0]))
    butterfly = n // s >= 2 and draw(st.booleans())
    return oft(n, m, block_size=s, butterfly=butterfly,
               param=draw(st.sampled_from(["cayley", "exp", "householder", "givens"])))


@st.composite
def networks(draw: st.DrawFn, max_nodes: int = 6, max_bond: int = 4, max_leg: int = 5) -> Graph:
    """Random valid linear networks of any shape: trees and cycles of dense nodes, parallel bonds,
    hyperedges (an index on three or more nodes), input and output legs split over several nodes
    and shared by two, an index passing straight through, disconnected factors (a Kronecker
    product; a factor may carry input legs only), and diagonal nodes on bonds, hyperedges or legs."""
    n = draw(st.integers(1, max_nodes))
    inds: list[dict[str, int]] = [dict() for _ in range(n)]
    root = list(range(n))

    def find(a: int) -> int:
        while root[a] != a:
            a = root[a]
        return a

    def attach(name: str, size: int, holders: list[int]) -> None:
        for h in holders:
            inds[h][name] = size
        for h in holders[1:]:
            root[find(h)] = find(holders[0])

    for i in range(1, n):   # a random forest: mostly one tree
        if draw(st.integers(0, 5)):
            attach(f"b{i}", draw(st.integers(1, max_bond)), [i, draw(st.integers(0, i - 1))])
    for k in range(draw(st.integers(0, 2)) if n > 1 else 0):   # cycles and parallel bonds
        attach(f"e{k}", draw(st.integers(1, max_bond)),
               draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
    for k in range(draw(st.integers(0, 2)) if n > 2 else 0):   # hyperedges
        attach(f"h{k}", draw(st.integers(1, max_bond)),
               draw(st.lists(st.integers(0, n - 1), min_size=3, max_size=min(n, 4), unique=True)))
    legs: dict[str, list[str]] = {"i": [], "o": []}
    for side in ("i", "o"):
        for k in range(draw(st.integers(1, 3))):
            holders = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=min(n, 2), unique=True))
            attach(f"{side}{k}", draw(st.integers(1, max_leg)), holders)
            legs[side].append(f"{side}{k}")
    for c in sorted({find(i) for i in range(n)}):   # every factor feeds an output or reads an input
        has = {side: any(find(i) == c and any(x in legs[side] for x in inds[i]) for i in range(n)) for side in "io"}
        if not has["o"] and not (has["i"] and draw(st.booleans())):
            name = f"o{len(legs['o'])}"
            attach(name, draw(st.integers(1, max_leg)), [c])
            legs["o"].append(name)
    if draw(st.booleans()):   # an index in both legs: the update is block-diagonal in it
        attach("p", draw(st.integers(1, 3)), [draw(st.integers(0, n - 1))])
        legs["i"].append("p")
        legs["o"].append("p")
    nodes: list[Node] = []
    for i, d in enumerate(inds):
        order = draw(st.permutations(list(d)))
        nodes.append(Dense(f"T{i}", tuple(order), tuple(d[x] for x in order), init="normal"))
    sizes = {k: v for d in inds for k, v in d.items()}
    for k in range(draw(st.integers(0, 2))):
        ind = draw(st.sampled_from(sorted(sizes)))
        if not any(isinstance(x, Diagonal) and x.inds == (ind,) for x in nodes):
            nodes.append(Diagonal(f"D{k}", (ind,), (sizes[ind],), init="normal"))
    return Graph(nodes, in_index=tuple(legs["i"]), out_index=tuple(legs["o"]), name="network")


def graphs() -> st.SearchStrategy[Graph]:
    """Random valid graphs: user-style random networks or built-in adapters."""
    return st.one_of(linear_graphs(), adapter_graphs())
