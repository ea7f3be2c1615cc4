"""A gallery of topologies: the built-in adapters at GPT-2 sizes (tnpeft's own, peft's
tensor-network tuners, the literature) and four user-style graphs that a new topology is likely to
resemble — a TT-LoRA tensor train, a QuanTA-like circuit of two-axis gates, a Kronecker product of
two disconnected factors and a graph with hyperedges — and, in :data:`SHARING`, adapters whose
tensors are shared across the layers of a small model. The docs' diagrams (``docs/diagrams/``) and
the geometric diagram tests draw exactly these.

    from tnpeft.testing.gallery import GALLERY
    graph = GALLERY["ttlora"]()
"""

from __future__ import annotations

from typing import Any, Callable

from tnpeft.adapters import (
    adalora,
    boft,
    fourierft,
    hra,
    ia3,
    layer_sites,
    loha,
    lokr,
    lora,
    loretta_adp,
    loretta_rep,
    lortta,
    metatt,
    mpo,
    oft,
    qpa,
    quanta,
    quantum_peft,
    qwthn,
    tensor_ring,
    vera,
)
from tnpeft.graph import Dense, Graph


def ttlora(in_factors: tuple[int, ...] = (8, 8, 12), out_factors: tuple[int, ...] = (8, 8, 12),
           bond: int = 4) -> Graph:
    """TT-LoRA: ``ΔW`` reshaped to a tensor with legs ``i1 … ik, o1 … om`` and written as one
    tensor train — the input cores ``G1…Gk`` first, then the output cores — with bond ``bond``;
    the last core starts at zero. 768 = 8·8·12 by default."""
    legs = [(f"i{t + 1}", s) for t, s in enumerate(in_factors)] + [(f"o{t + 1}", s) for t, s in enumerate(out_factors)]
    nodes = []
    for t, (leg, s) in enumerate(legs):
        inds, sizes = [leg], [s]
        if t:
            inds.insert(0, f"a{t}")
            sizes.insert(0, bond)
        if t < len(legs) - 1:
            inds.append(f"a{t + 1}")
            sizes.append(bond)
        nodes.append(Dense(f"G{t + 1}", tuple(inds), tuple(sizes), init="zeros" if t == len(legs) - 1 else "normal"))
    return Graph(nodes, in_index=tuple(n for n, _ in legs[:len(in_factors)]),
                 out_index=tuple(n for n, _ in legs[len(in_factors):]), name="tt-lora")


def quanta_like(axes: tuple[int, int, int] = (8, 8, 12)) -> Graph:
    """A QuanTA-like adapter: the hidden size read as three axes, with one gate (a 4-leg tensor)
    on each pair of axes — ``(1, 2)``, then ``(1, 3)``, then ``(2, 3)`` — as a circuit on qudits."""
    a, b, c = axes
    return Graph([Dense("T12", ("i1", "i2", "a1", "a2"), (a, b, a, b)),
                  Dense("T13", ("a1", "i3", "o1", "b3"), (a, c, a, c)),
                  Dense("T23", ("a2", "b3", "o2", "o3"), (b, c, b, c), init="zeros")],
                 in_index=("i1", "i2", "i3"), out_index=("o1", "o2", "o3"), name="quanta-like")


def kronecker(a: tuple[int, int] = (4, 2), b: tuple[int, int] = (8, 48)) -> Graph:
    """A Kronecker adapter (KronA / LoKr): ``ΔW = kron(Aᵀ, Bᵀ)`` — two factors that share no index,
    each with an input and an output leg; ``B`` starts at zero."""
    return Graph([Dense("A", ("i1", "o1"), a), Dense("B", ("i2", "o2"), b, init="zeros")],
                 in_index=("i1", "i2"), out_index=("o1", "o2"), name="kronecker")


def hyperedges(n1: int = 16, n2: int = 12, m: int = 32, r: int = 6, s: int = 3) -> Graph:
    """A CP factorisation — index ``r`` shared by three factors (a hyperedge) — beside a low-rank
    path that shares the input leg ``i1`` with it and the output leg ``out`` (two open legs held by
    two nodes each)."""
    return Graph([Dense("A", ("i1", "r"), (n1, r)), Dense("B", ("i2", "r"), (n2, r)),
                  Dense("C", ("out", "r"), (m, r), init="zeros"),
                  Dense("D", ("out", "s"), (m, s), init="zeros"), Dense("E", ("s", "i1"), (s, n1))],
                 in_index=("i1", "i2"), name="hyperedges")


GALLERY: dict[str, Callable[[], Graph]] = {
    "lora": lambda: lora(768, 768, r=8),
    "adalora": lambda: adalora(768, 768, r=12, target_r=8),
    "quantum_peft": lambda: quantum_peft(768, 768, rank=8),
    "oft": lambda: oft(768, 768, block_size=32),
    "oft_butterfly": lambda: oft(768, 768, block_size=32, butterfly=True),
    "qwthn": lambda: qwthn(768, 2304, r=8),
    "qpa": lambda: qpa(768, 50257, r=4, chunk_size=2048),
    "mpo": lambda: mpo(768, 2304, r=8),
    "mpo3": lambda: mpo(768, 2304, r=8, cores=3),
    "mpo4": lambda: mpo(768, 2304, r=16, cores=4),
    "ttlora": ttlora,
    "quanta": quanta_like,
    "kronecker": kronecker,
    "hyperedges": hyperedges,
    # peft's tensor-network tuners
    "loha": lambda: loha(768, 768, r=8),
    "lokr": lambda: lokr(768, 768, r=8),
    "ia3": lambda: ia3(768, 2304),
    "ia3_feedforward": lambda: ia3(3072, 768, feedforward=True),
    "oft_peft": lambda: oft(768, 768, block_size=32, param="cayley_neumann"),
    "boft": lambda: boft(768, 768, block_size=4),
    "hra": lambda: hra(768, 768, r=8),
    "fourierft": lambda: fourierft(768, 768, n_frequency=1000),
    "vera": lambda: vera(768, 2304, r=256),
    # the literature
    "quanta_builtin": lambda: quanta(768, 768),
    "tensor_ring": lambda: tensor_ring(768, 768, r=4, in_cores=3, out_cores=3),
    "loretta_rep": lambda: loretta_rep(768, 768),
    "loretta_adp": lambda: loretta_adp(768, 768),
    "metatt": lambda: metatt(768, 768, r=8),
    "lortta": lambda: lortta(768, 768, r=8, heads=12),
}


def model_graphs(builder: Callable[..., Graph], layers: int = 2, kinds: tuple[str, ...] = ("q_proj", "v_proj"),
                 sizes: dict[str, tuple[int, int]] | None = None, **hparams: Any) -> dict[str, Graph]:
    """The graphs a model-wide builder gives the targets ``model.layers.<l>.<kind>`` of a small model
    (``sizes``: ``(in, out)`` per kind, 768 → 768 by default), as ``inject`` builds them."""
    paths = {f"model.layers.{i}.{k}": (sizes or {}).get(k, (768, 768)) for i in range(layers) for k in kinds}
    sites = layer_sites(paths)
    return {p: builder(n, m, site=sites[p], **hparams) for p, (n, m) in paths.items()}


#: adapters sharing tensors across layers, as ``{path: graph}`` (drawn by ``tnpeft.draw.sharing_diagram``)
SHARING: dict[str, Callable[[], dict[str, Graph]]] = {
    "vera_sharing": lambda: model_graphs(vera, r=256, sizes={"q_proj": (768, 768), "v_proj": (768, 256)}),
    "metatt_sharing": lambda: model_graphs(metatt, layers=3, r=8),
}
