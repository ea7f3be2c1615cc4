"""The tensor-network literature built in — QuanTA, TT-LoRA, the tensor ring, LoRETTA (both
forms), MetaTT, LoRTA — and Hadamard / Kronecker products of sub-networks: counts in closed form
beside the graph's count, updates against independent dense constructions, ``tnpeft verify``."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnpeft
from tnpeft.adapters import (
    METHODS,
    hadamard,
    kronecker,
    layer_sites,
    lora,
    loretta_adp,
    loretta_rep,
    lortta,
    metatt,
    mpo,
    quanta,
    tensor_ring,
    ttlora,
)
from tnpeft.cli import main
from tnpeft.graph import count_parameters
from tnpeft.runtime import GraphModule

NEW = ["loha", "lokr", "ia3", "boft", "hra", "fourierft", "vera", "metatt", "lortta", "quanta", "ttlora",
       "tensor_ring", "loretta_rep", "loretta_adp"]


def module(g, seed=0):
    m = GraphModule(g, dtype=torch.float64, rng=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed + 1))
    return m


def tt_count(modes, r, ring=False):
    if ring:
        return r * r * sum(modes)
    d = len(modes)
    return modes[0] * r + sum(r * r * n for n in modes[1:-1]) + r * modes[-1] if d > 1 else modes[0]


@given(st.lists(st.sampled_from([2, 3, 4, 5]), min_size=2, max_size=4), st.lists(st.sampled_from([2, 3, 4]),
       min_size=1, max_size=3), st.integers(1, 4))
@settings(max_examples=20, deadline=None)
def test_tensor_train_and_ring_counts_are_the_closed_forms(ins, outs, r):
    n, m = math.prod(ins), math.prod(outs)
    assert ttlora(n, m, r=r, in_cores=len(ins), out_cores=len(outs), in_factors=ins,
                  out_factors=outs).num_parameters() == tt_count(ins + outs, r)
    assert tensor_ring(n, m, r=r, in_cores=len(ins), out_cores=len(outs), in_factors=ins,
                       out_factors=outs).num_parameters() == tt_count(ins + outs, r, ring=True)


def test_tt_lora_and_ring_equal_the_contracted_train():
    g = tensor_ring(12, 6, r=3, in_factors=(3, 4), out_factors=(2, 3))
    m = module(g)
    cores = [m.tensor(f"G{k}").detach() for k in range(1, 5)]
    full = torch.einsum("aib,bjc,ckd,dla->ijkl", *cores)           # the trace closes the ring
    torch.testing.assert_close(m.dense(), full.reshape(12, 6).T)
    t = ttlora(12, 6, r=3, in_factors=(3, 4), out_factors=(2, 3))
    mt = module(t)
    c = [mt.tensor(f"G{k}").detach() for k in range(1, 5)]
    torch.testing.assert_close(mt.dense(), torch.einsum("ib,bjc,ckd,dl->ijkl", *c).reshape(12, 6).T)


@pytest.mark.parametrize("axes", [(4, 4), (2, 3, 4), (2, 2, 3, 2)])
def test_quanta_applies_its_gates_in_order_and_counts_pairs(axes):
    n = math.prod(axes)
    g = quanta(n, n, axes=axes)
    d = len(axes)
    assert g.num_parameters() == sum((axes[i] * axes[j]) ** 2 for i, j in itertools.combinations(range(d), 2))
    m = module(g)
    x = torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    # QuanTA's order: pairs with the last axis first; each gate (out_b, out_a, in_b, in_a) on axes (a, b)
    z = x.reshape(5, *axes)
    for a, b in itertools.combinations(range(-1, -d - 1, -1), 2):
        a, b = d + a, d + b
        gate = m.tensor(f"T{a + 1}{b + 1}").detach()
        z = torch.movedim(z, (1 + b, 1 + a), (-2, -1))
        z = torch.einsum("...ba,cdba->...cd", z, gate)
        z = torch.movedim(z, (-2, -1), (1 + b, 1 + a))
    torch.testing.assert_close(m(x), z.reshape(5, n))


def test_loretta_counts_and_forms():
    g = loretta_rep(64, 48, r=8, tt_rank=3, cores=2)
    assert g.num_parameters() == tt_count([8, 8, 8], 3) + tt_count([8, 8, 6], 3)   # in (8·8)·r 8, r 8·out (8·6)
    a = loretta_adp(64, 48, bottleneck=16, tt_rank=3)
    assert a.num_parameters() == tt_count([8, 8, 4, 4], 3) + tt_count([4, 4, 8, 6], 3) + 16 + 48
    assert not a.is_linear                                     # the biases and tanh: not mergeable
    m = module(a)
    x = torch.randn(3, 64, dtype=torch.float64)
    d = [m.tensor(f"D{k}").detach() for k in range(1, 5)]
    u = [m.tensor(f"U{k}").detach() for k in range(1, 5)]
    h = torch.einsum("nij,ia,ajb,bkc,cl->nkl", x.reshape(3, 8, 8), *d).reshape(3, 16)
    h = torch.tanh(h + m.bD.bias)
    y = torch.einsum("nkl,kb,blc,cod,dp->nop", h.reshape(3, 4, 4), *u).reshape(3, 48) + m.bU.bias
    torch.testing.assert_close(m(x), y)


def test_metatt_and_lortta_counts_come_from_one_graph():
    paths = {f"m.layers.{i}.{k}": (64, 64) for i in range(5) for k in ("q", "k", "v")}
    sites = layer_sites(paths)
    mt = {p: metatt(64, 64, r=4, site=s) for p, s in sites.items()}
    one = next(iter(mt.values()))
    assert count_parameters(mt) == one.num_parameters() == 4 * 64 + (5 + 3) * 16 + 4 * 64
    lr = {p: lortta(64, 64, r=4, heads=8, site=s) for p, s in sites.items()}
    assert count_parameters(lr) == next(iter(lr.values())).num_parameters() == 4 * (64 + 8 + 8 + 3 + 5)
    assert sum(g.num_parameters() for g in mt.values()) == 15 * count_parameters(mt)   # each graph: all of it


def test_hadamard_and_kronecker_products_of_any_sub_networks():
    # a tensor train and an MPO LoRA on the same legs (i1, i2) → (o1, o2)
    a = module(ttlora(12, 10, r=2, in_factors=(3, 4), out_factors=(2, 5)))
    b = module(mpo(12, 10, r=4, in_factors=(3, 4), out_factors=(2, 5)), 3)
    h = module(hadamard(a.graph, b.graph), 7)
    with torch.no_grad():   # the product's nodes take the parts' values
        for k, part in (("1", a), ("2", b)):
            for name in part.graph.nodes:
                h.get_submodule(name + k).weight.copy_(part.tensor(name))
    torch.testing.assert_close(h.dense(scaled=True), a.dense(scaled=True) * b.dense(scaled=True))
    dots = [i for i in h.graph.in_inds if sum(i in n.inds for n in h.graph.nodes.values()) > 1]
    assert h.graph.in_inds == ("i1", "i2") and dots            # the shared open legs are copy tensors
    c, e = module(lora(3, 2, r=1, init_b="normal"), 1), module(lora(4, 5, r=2, init_b="normal"), 2)
    k = module(kronecker(c.graph, e.graph))
    with torch.no_grad():
        for s, part in (("1", c), ("2", e)):
            for name in part.graph.nodes:
                k.get_submodule(name + s).weight.copy_(part.tensor(name))
    torch.testing.assert_close(k.dense(scaled=True), torch.kron(c.dense(scaled=True), e.dense(scaled=True)))


@pytest.mark.parametrize("name", NEW + ["oft"])
def test_every_new_builtin_passes_verify(name, capsys):
    n, m = (64, 64)
    hp = {"lortta": {"heads": 4}, "fourierft": {"n_frequency": 50}, "vera": {"r": 16},
          "oft": {"block_size": 8, "param": "cayley_neumann"}}.get(name, {})
    assert tnpeft.verify(METHODS[name].builder(n, m, **hp)).ok
    if name in ("boft", "vera", "metatt"):       # and from the command line
        args = [f"{k}={v}" for k, v in hp.items()]
        assert main(["verify", name, "--in-features", str(n), "--out-features", str(m), *args]) == 0
        capsys.readouterr()
