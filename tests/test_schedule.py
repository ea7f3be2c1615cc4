"""The schedule's view of disconnected linear graphs: factors that share no index are an outer
(Kronecker) product, whatever legs each carries; what cannot be contracted is refused with a
message that says what to do."""

import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnpeft.errors import GraphError, UnreachableLegError
from tnpeft.graph import Dense, Graph, Nonlinear
from tnpeft.runtime import GraphModule


@st.composite
def factor_products(draw):
    """1–3 factors sharing no index; each has 0–2 input and 0–2 output legs (at least one leg)."""
    names = iter(string.ascii_lowercase)
    factors, ins, outs = [], [], []
    for k in range(draw(st.integers(1, 3))):
        n_in, n_out = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        if n_in + n_out == 0:
            n_out = 1
        legs_in = [f"i{next(names)}" for _ in range(n_in)]
        legs_out = [f"o{next(names)}" for _ in range(n_out)]
        sizes = {x: draw(st.integers(1, 3)) for x in legs_in + legs_out}
        order = draw(st.permutations(legs_in + legs_out))
        factors.append(Dense(f"F{k}", tuple(order), tuple(sizes[x] for x in order), init="normal"))
        ins += legs_in
        outs += legs_out
    if not ins:   # the layer input must reach some factor
        f = factors[0]
        factors[0] = Dense(f.name, f.inds + ("iz",), f.sizes + (2,), init="normal")
        ins.append("iz")
    if not outs:
        f = factors[-1]
        factors[-1] = Dense(f.name, f.inds + ("oz",), f.sizes + (2,), init="normal")
        outs.append("oz")
    in_order = draw(st.permutations(ins))
    out_order = draw(st.permutations(outs))
    return Graph(factors, in_index=tuple(in_order), out_index=tuple(out_order), name="product")


@settings(max_examples=60, deadline=None)
@given(factor_products())
def test_disconnected_factors_contract_as_their_outer_product(g):
    # an independent reference: one einsum over all factors, legs in the graph's order
    gm = GraphModule(g)
    letters = {i: chr(ord("a") + k) for k, i in enumerate(g.size_dict)}
    eq = ",".join("".join(letters[i] for i in g.nodes[n].inds) for n in g.nodes)
    eq += "->" + "".join(letters[i] for i in g.out_inds + g.in_inds)
    ref = torch.einsum(eq, *[gm.tensor(n).detach() for n in g.nodes]).reshape(g.out_features, g.in_features)
    torch.testing.assert_close(gm.dense().detach(), ref, atol=1e-5, rtol=1e-5)
    x = torch.randn(3, g.in_features)
    torch.testing.assert_close(gm(x).detach(), x @ ref.T, atol=1e-5, rtol=1e-5)


def test_a_factor_with_input_legs_only_is_a_kronecker_factor():
    # ΔW[out, (i1, i2)] = a[i1] · B[i2, out] = kron(aᵀ as a row, Bᵀ)
    g = Graph([Dense("a", ("i1",), (4,), init="normal"), Dense("B", ("i2", "out"), (3, 5), init="normal")],
              in_index=("i1", "i2"))
    gm = GraphModule(g)
    a, b = gm.tensor("a").detach(), gm.tensor("B").detach()
    torch.testing.assert_close(gm.dense().detach(), torch.kron(a[None, :], b.T.contiguous()))


def test_a_closed_sub_network_is_refused_saying_what_to_do():
    with pytest.raises(UnreachableLegError, match=r"\['c', 'd'\] carry no open leg.*join them to the other nodes") as e:
        Graph([Dense("A", ("out", "in"), (5, 4)), Dense("c", ("z",), (3,)), Dense("d", ("z",), (3,))])
    assert e.value.node == "c"


def test_what_cannot_be_contracted_is_refused_saying_what_to_do():
    # C reads the layer input with A, so its o2 travels through the stage that feeds f
    with pytest.raises(GraphError, match=r"carries \('r', 'o2'\); \['o2'\] reach it through node\(s\) \['C'\].*"
                                         r"list \['o2'\] among its inputs") as e:
        Graph([Dense("A", ("i1", "r"), (4, 3)), Nonlinear.elementwise("f", {"r": 3}, ("s",), fn="tanh"),
               Dense("B", ("s", "o1"), (3, 2)), Dense("C", ("i2", "o2"), (5, 6))],
              in_index=("i1", "i2"), out_index=("o1", "o2"))
    assert e.value.node == "f"
    with pytest.raises(GraphError, match=r"the layer input carries \('i1', 'i2'\).*list \['i2'\] among its inputs"):
        Graph([Nonlinear.elementwise("f", {"i1": 4}, ("s",), fn="tanh"), Dense("B", ("s", "i2", "out"), (4, 3, 5))],
              in_index=("i1", "i2"))
    # in a graph with nonlinear nodes, a part that reads no activation has no place in the sequence
    with pytest.raises(UnreachableLegError, match="do not depend on the input"):
        Graph([Dense("A", ("in", "r"), (4, 3)), Nonlinear.elementwise("f", {"r": 3}, ("s",), fn="tanh"),
               Dense("B", ("s", "o1"), (3, 5)), Dense("C", ("o2", "z"), (2, 2)), Dense("D", ("z",), (2,))],
              out_index=("o1", "o2"))
