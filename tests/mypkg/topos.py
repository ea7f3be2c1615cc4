"""Topologies of one's own, written the way the docs say: builders ``(in_features, out_features,
**hparams) -> Graph``."""

from tnpeft import Dense, Diagonal, Graph, Unitary
from tnpeft.adapters import factorize


def ttlora(in_features, out_features, cores=3, bond=4):
    """TT-LoRA: one tensor train, ``cores`` input cores then ``cores`` output cores."""
    legs = [(f"i{t + 1}", s) for t, s in enumerate(sorted(factorize(in_features, cores)))]
    legs += [(f"o{t + 1}", s) for t, s in enumerate(sorted(factorize(out_features, cores)))]
    nodes = []
    for t, (leg, s) in enumerate(legs):
        inds = ([f"a{t}"] if t else []) + [leg] + ([f"a{t + 1}"] if t < len(legs) - 1 else [])
        sizes = ([bond] if t else []) + [s] + ([bond] if t < len(legs) - 1 else [])
        nodes.append(Dense(f"G{t + 1}", tuple(inds), tuple(sizes), init="zeros" if t == len(legs) - 1 else "normal"))
    return Graph(nodes, in_index=tuple(n for n, _ in legs[:cores]), out_index=tuple(n for n, _ in legs[cores:]),
                 name="ttlora")


def kron(in_features, out_features, a_in=4, a_out=2):
    """A Kronecker adapter: ΔW = kron(Aᵀ, Bᵀ), two disconnected factors."""
    return Graph([Dense("A", ("i1", "o1"), (a_in, a_out)),
                  Dense("B", ("i2", "o2"), (in_features // a_in, out_features // a_out), init="zeros")],
                 in_index=("i1", "i2"), out_index=("o1", "o2"), name="kron")


def stored_svd(in_features, out_features, rank=4):
    """U Λ Vᵀ with frames of the ``stored`` parametrization (mypkg.frames)."""
    from mypkg import frames  # noqa: F401  (registers "stored")

    return Graph([Unitary("V", ("in", "k"), (in_features, rank), param="stored"),
                  Diagonal("L", ("k",), (rank,), init="normal"),
                  Unitary("U", ("out", "k"), (out_features, rank), param="stored")], name="stored_svd")
