"""The graph IR: validation, counts, JSON, quimb, forward against independent references."""

import json
import time

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnpeft
from tnpeft import Dense, Diagonal, Graph, Nonlinear, Unitary, load_graph, save_graph
from tnpeft.adapters import lora
from tnpeft.errors import (
    DanglingIndexError,
    GraphError,
    IndexSizeError,
    NodeKindError,
    NotMergeableError,
    UnreachableLegError,
)
from tnpeft.runtime import GraphModule
from tnpeft.testing.strategies import linear_graphs


def full_einsum(module: GraphModule, x: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: the whole network as one torch.einsum call (no tnpeft planning involved)."""
    graph = module.graph
    names = [n for n in graph.nodes]
    letters = {}
    for n in names:
        for i in graph.nodes[n].inds:
            letters.setdefault(i, chr(ord("a") + len(letters)))
    terms = ["".join(letters[i] for i in graph.nodes[n].inds) for n in names]
    ops = [module.tensor(n) for n in names]
    if x is None:
        eq = ",".join(terms) + "->" + letters[graph.out_index] + letters[graph.in_index]
    else:
        eq = "Z" + letters[graph.in_index] + "," + ",".join(terms) + "->Z" + letters[graph.out_index]
        ops = [x] + ops
    return torch.einsum(eq, *ops)


def test_lora_structure_and_count():
    g = lora(768, 3072, r=8)
    assert list(g.nodes) == ["A", "B"]
    assert g.nodes["A"].shape == (8, 768) and g.nodes["B"].shape == (3072, 8)
    assert g.num_parameters() == 8 * (768 + 3072)
    assert g.scale == 16 / 8
    assert g.is_linear


def test_num_parameters_is_instant_for_huge_layers():
    t0 = time.perf_counter()
    g = lora(256_000, 2_048, r=64)
    n = g.num_parameters()
    assert n == 64 * (256_000 + 2_048)
    assert not any(isinstance(v, torch.Tensor) for v in vars(g).values())  # a graph holds no tensors
    assert time.perf_counter() - t0 < 1.0


@given(st.integers(1, 64), st.integers(1, 300), st.integers(1, 300))
def test_lora_count_closed_form(r, n, m):
    assert lora(n, m, r=r).num_parameters() == r * (n + m)


@given(linear_graphs())
def test_forward_and_dense_match_a_single_einsum(g):
    gm = GraphModule(g)
    torch.manual_seed(0)
    x = torch.randn(5, g.in_features, dtype=torch.float32)
    ref = full_einsum(gm, x) * g.scale
    torch.testing.assert_close(gm(x), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gm.dense(), full_einsum(gm), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gm(x), x @ gm.dense(scaled=True).T, atol=1e-5, rtol=1e-4)


@given(linear_graphs())
def test_json_round_trip(g):
    g2 = Graph.from_json(g.to_json())
    assert g2 == g
    assert g2.to_dict() == g.to_dict()
    assert g2.num_parameters() == g.num_parameters()
    json.loads(g.to_json())  # plain JSON


@given(linear_graphs())
def test_to_quimb_has_same_tensors_and_contracts_to_dense(g):
    gm = GraphModule(g)
    tn = gm.to_quimb()
    assert len(tn.tensors) == len(g.nodes)
    for name, node in g.nodes.items():
        (t,) = tn.select_tensors(name)
        assert tuple(t.inds) == node.inds
        assert node.kind.upper() in t.tags
        np.testing.assert_allclose(t.data, gm.tensor(name).detach().numpy())
    dense = tn.contract(output_inds=(g.out_index, g.in_index))
    data = dense.data if hasattr(dense, "data") else dense
    np.testing.assert_allclose(data, gm.dense().detach().numpy(), atol=1e-5, rtol=1e-4)


def test_diagonal_is_a_hyperedge_scale():
    n, m, r = 6, 5, 3
    g = Graph([Dense("Q", ("r", "in"), (r, n)), Diagonal("L", ("r",), (r,), init="normal"),
               Dense("P", ("out", "r"), (m, r))])
    gm = GraphModule(g)
    P, L, Q = gm.tensor("P"), gm.tensor("L"), gm.tensor("Q")
    torch.testing.assert_close(gm.dense(), P @ torch.diag(L) @ Q)
    assert g.num_parameters() == r * (n + m) + r


def test_unitary_node_has_orthonormal_columns_and_counts():
    g = Graph([Unitary("V", ("in", "k"), (10, 4), param="householder"), Diagonal("S", ("k",), (4,), init="normal"),
               Unitary("U", ("out", "k"), (7, 4), param="householder")])
    gm = GraphModule(g)
    for name in ("U", "V"):
        t = gm.tensor(name)
        torch.testing.assert_close(t.T @ t, torch.eye(4), atol=1e-5, rtol=0)
    assert g.num_parameters() == 10 * 4 + 4 + 7 * 4
    U, S, V = gm.tensor("U"), gm.tensor("S"), gm.tensor("V")
    torch.testing.assert_close(gm.dense(), U @ torch.diag(S) @ V.T, atol=1e-5, rtol=1e-4)


def test_nonlinear_stage_matches_manual_computation():
    g = Graph([Dense("A", ("r", "in"), (3, 6)), Nonlinear.elementwise("act", {"r": 3}, ("s",), fn="tanh"),
               Dense("B", ("out", "s"), (4, 3))], scale=0.5)
    gm = GraphModule(g)
    x = torch.randn(2, 7, 6)
    A, B = gm.tensor("A"), gm.tensor("B")
    torch.testing.assert_close(gm(x), 0.5 * torch.tanh(x @ A.T) @ B.T)
    assert not g.is_linear
    with pytest.raises(NotMergeableError, match="act"):
        gm.dense()
    assert list(g.nodes) == ["A", "act", "B"]


def test_plan_contracts_x_with_A_first_for_lora():
    g = lora(768, 768, r=8)
    gm = GraphModule(g)
    (plan,) = gm.plan(512)
    assert plan.order == "(B·(x·A))"
    # the first pairwise step consumes x and A and yields the rank-8 intermediate
    assert plan.largest_intermediate == 512 * 768
    assert plan.flops < 2 * 512 * 768 * 768  # x·(A·B) or a dense product would cost more
    assert "flops" in plan.describe()


# ---------------------------------------------------------------- validation errors
def test_index_with_two_sizes_names_nodes_and_index():
    with pytest.raises(IndexSizeError) as e:
        Graph([Dense("A", ("r", "in"), (4, 8)), Dense("B", ("out", "r"), (8, 5))])
    assert e.value.index == "r" and e.value.node == "B"
    assert "'r'" in str(e.value) and "'A'" in str(e.value) and "'B'" in str(e.value)


def test_dangling_index():
    with pytest.raises(DanglingIndexError) as e:
        Graph([Dense("A", ("r", "in", "z"), (4, 8, 2)), Dense("B", ("out", "r"), (8, 4))])
    assert e.value.index == "z" and e.value.node == "A"


def test_unreachable_leg_and_disconnected_nodes():
    with pytest.raises(UnreachableLegError) as e:
        Graph([Dense("A", ("r", "in"), (4, 8)), Dense("B", ("x", "r"), (8, 4))])
    assert e.value.index == "out"
    with pytest.raises(UnreachableLegError) as e:
        Graph([Dense("A", ("out", "in"), (4, 8)), Dense("C", ("u", "v"), (2, 2)), Dense("D", ("v", "u"), (2, 2))])
    assert e.value.node in ("C", "D")


def test_size_must_be_positive_and_kind_must_exist():
    with pytest.raises(IndexSizeError) as e:
        Dense("A", ("r", "in"), (0, 8))
    assert e.value.node == "A" and e.value.index == "r"
    with pytest.raises(NodeKindError) as e:
        Graph.from_dict({**lora(4, 4, r=1).to_dict(), "nodes": [{"kind": "tucker", "name": "A", "inds": ["in", "out"],
                                                                  "sizes": [4, 4]}]})
    assert e.value.node == "A" and "tucker" in str(e.value)


def test_in_features_mismatch_names_the_holder():
    with pytest.raises(IndexSizeError) as e:
        Graph([Dense("A", ("r", "in"), (4, 8)), Dense("B", ("out", "r"), (8, 4))], in_features=9)
    assert e.value.node == "A" and e.value.index == "in"


_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in ("in", "out"))


@given(r=st.integers(1, 6), n=st.integers(1, 9), m=st.integers(1, 9), bad=st.integers(1, 9), name=_names)
def test_hypothesis_size_clash_is_reported(r, n, m, bad, name):
    if bad == r:
        bad = r + 1
    with pytest.raises(IndexSizeError) as e:
        Graph([Dense("A", (name, "in"), (r, n)), Dense("B", ("out", name), (m, bad))])
    assert e.value.index == name and e.value.node == "B" and repr(name) in str(e.value)


@given(extra=_names, size=st.integers(1, 5), r=st.integers(1, 5))
def test_hypothesis_dangling_index_is_reported(extra, size, r):
    if extra == "r":
        extra = "r_"
    with pytest.raises(DanglingIndexError) as e:
        Graph([Dense("A", ("r", "in", extra), (r, 3, size)), Dense("B", ("out", "r"), (3, r))])
    assert e.value.index == extra and e.value.node == "A"


@given(size=st.one_of(st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=3), st.none()))
def test_hypothesis_bad_sizes_are_reported(size):
    with pytest.raises(GraphError) as e:
        Dense("N1", ("a", "b"), (2, size))
    assert e.value.node == "N1"


@given(st.sampled_from(["1a", "", "a.b", "x y", "-"]))
def test_bad_names(bad):
    with pytest.raises(GraphError):
        Dense(bad, ("a",), (2,))
    with pytest.raises(GraphError) as e:
        Dense("N", (bad, "b"), (2, 2))
    assert e.value.node == "N"


@given(st.dictionaries(st.sampled_from(["kind", "name", "inds", "sizes", "init", "bogus"]),
                       st.one_of(st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=3), st.none()),
                       max_size=6))
def test_hypothesis_random_node_dicts_never_leak_raw_errors(d):
    try:
        tnpeft.graph.node_from_dict(d)
    except GraphError:
        pass


@given(st.dictionaries(st.sampled_from(["in_index", "out_index", "scale", "dropout", "name", "meta", "nodes"]),
                       st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.lists(st.integers(), max_size=2),
                                 st.none(), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1)),
                       max_size=4))
def test_hypothesis_random_graph_fields_raise_graph_error(fields):
    d = {**lora(4, 3, r=2).to_dict(), **fields}
    try:
        Graph.from_dict(d)
    except GraphError:
        pass


def test_from_json_rejects_garbage_with_graph_error():
    for text in ("", "[]", "{", '{"format": "x"}', json.dumps({**lora(4, 4, r=1).to_dict(), "version": 99}),
                 json.dumps({**lora(4, 4, r=1).to_dict(), "nodes": "A"})):
        with pytest.raises(GraphError):
            Graph.from_json(text)


def test_input_feature_mismatch_at_forward():
    g = lora(8, 4, r=2)
    gm = GraphModule(g)
    with pytest.raises(GraphError, match="'in'"):
        gm(torch.randn(3, 9))


@given(__import__("tnpeft.testing.strategies", fromlist=["graphs"]).graphs())
def test_json_round_trip_of_any_graph_keeps_values_layout_and_forward(g):
    gm = GraphModule(g)
    g2 = Graph.from_json(g.to_json())
    g2m = GraphModule(g2)
    assert g2 == g and g2.in_inds == g.in_inds and g2.out_inds == g.out_inds and g2.mode == g.mode
    g2m.load_state_dict(gm.state_dict())
    x = torch.randn(3, g.in_features)
    torch.testing.assert_close(g2m(x), gm(x))


def test_nonlinear_graph_json_round_trip(tmp_path):
    g = Graph([Dense("A", ("r", "in"), (3, 6)), Nonlinear.elementwise("act", {"r": 3}, ("s",), fn="gelu"),
               Dense("B", ("out", "s"), (4, 3), init="normal")], scale=0.5, name="two_stage")
    gm = GraphModule(g)
    save_graph(gm, tmp_path)
    g2, g2m = load_graph(tmp_path)
    assert g2 == g
    x = torch.randn(2, 6)
    torch.testing.assert_close(g2m(x), gm(x))


def test_multi_leg_graph_reshapes_like_a_tensor_train():
    # W[(o1,o2),(i1,i2)] = Σ_a G1[o1,i1,a] G2[a,o2,i2]: a two-core MPO update on a 6→6 layer
    g = Graph([Dense("G1", ("o1", "i1", "a"), (2, 3, 2), init="normal"),
               Dense("G2", ("a", "o2", "i2"), (2, 3, 2), init="normal")],
              in_index=("i1", "i2"), out_index=("o1", "o2"))
    gm = GraphModule(g)
    assert (g.in_features, g.out_features) == (6, 6)
    G1, G2 = gm.tensor("G1"), gm.tensor("G2")
    ref = torch.einsum("xia,ayj->xyij", G1, G2).reshape(6, 6)
    torch.testing.assert_close(gm.dense(), ref)
    x = torch.randn(4, 6)
    torch.testing.assert_close(gm(x), x @ ref.T)


def test_kronecker_adapter_is_the_outer_product_of_its_disconnected_factors(tmp_path):
    # KronA / LoKr: ΔW = kron(Aᵀ, Bᵀ) — two factors that share no index, each carrying open legs
    from conftest import tiny_gpt2

    def kron(in_features, out_features, a=(4, 2), b=(8, 48)):
        return Graph([Dense("A", ("i1", "o1"), (a[0], a[1]), init="normal"),
                      Dense("B", ("i2", "o2"), (b[0], b[1]), init="zeros")],
                     in_index=("i1", "i2"), out_index=("o1", "o2"), in_features=in_features,
                     out_features=out_features, name="kron")

    g = kron(32, 96)
    gm = GraphModule(g)
    assert len(g.schedule) == 1 and set(g.schedule[0].nodes) == {"A", "B"}
    with torch.no_grad():
        gm.B.weight.normal_()
    ref = torch.kron(gm.tensor("A").T, gm.tensor("B").T)
    torch.testing.assert_close(gm.dense(), ref, atol=0, rtol=0)
    x = torch.randn(5, 32)
    torch.testing.assert_close(gm(x), x @ ref.T)
    # it injects, trains, merges and saves like LoRA (the zero factor B makes it start at the base)
    base = tiny_gpt2()
    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig(kron, ["c_attn"]))
    ids = torch.randint(0, 97, (2, 8))
    torch.testing.assert_close(m(ids).logits, base(ids).logits)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        m(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    want = m(ids).logits
    assert (want - base(ids).logits).abs().max() > 1e-4
    tnpeft.save_adapter(m, tmp_path / "k")
    fresh = tnpeft.load_adapter(tiny_gpt2(), tmp_path / "k")
    torch.testing.assert_close(fresh(ids).logits, want)
    tnpeft.merge(fresh)
    torch.testing.assert_close(fresh(ids).logits, want, atol=1e-5, rtol=1e-5)


def test_a_factor_that_reads_no_input_joins_the_stage_of_a_linear_graph():
    # ΔW[(o1, o2), i] = A[i, o1] · v[o2]: v carries only an output leg
    g = Graph([Dense("A", ("in", "o1"), (6, 3), init="normal"), Dense("v", ("o2",), (2,), init="normal")],
              out_index=("o1", "o2"))
    gm = GraphModule(g)
    ref = torch.einsum("io,p->opi", gm.tensor("A"), gm.tensor("v")).reshape(6, 6)
    torch.testing.assert_close(gm.dense(), ref)
    with pytest.raises(UnreachableLegError, match="do not depend on the input") as e:
        Graph([Dense("A", ("r", "in"), (3, 6)), Nonlinear.elementwise("f", {"r": 3}, ("s",), fn="tanh"),
               Dense("B", ("s", "o1"), (3, 2)), Dense("v", ("o2",), (2,))], out_index=("o1", "o2"))
    assert e.value.node == "v"
