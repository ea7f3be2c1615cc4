"""The contraction engine's options: the cotengra optimizer is chosen per adapter, is part of the plan
cache key, and its contraction tree stays on the plan; failures are tnpeft errors."""

import math

import pytest
import torch
from conftest import tiny_gpt2
from hypothesis import given, settings
from hypothesis import strategies as st

import tnpeft
from tnpeft.contract import ContractionPlan, plan_for, plan_stats, reset_plan_cache
from tnpeft.errors import ConfigError
from tnpeft.runtime import GraphModule


def chain():
    return [("a", "b"), ("b", "c"), ("c", "d")], ("a", "d"), {"a": 5, "b": 7, "c": 3, "d": 11}


def test_plan_keeps_its_cotengra_tree():
    inputs, output, sizes = chain()
    plan = ContractionPlan(inputs, output, sizes, optimize="greedy")
    assert plan.tree is not None and plan.optimize == "greedy"
    assert plan.flops == int(plan.tree.total_flops()) and plan.tree.contraction_width() > 0
    assert len(plan.tree.get_path()) == len(plan.path)
    xs = [torch.randn(sizes[i], sizes[j], dtype=torch.float64) for i, j in inputs]
    torch.testing.assert_close(plan(*xs), xs[0] @ xs[1] @ xs[2])
    single = ContractionPlan([("a", "b")], ("b", "a"), {"a": 2, "b": 3})
    assert single.tree is None


def test_the_optimizer_is_part_of_the_cache_key():
    inputs, output, sizes = chain()
    reset_plan_cache()
    p1 = plan_for(inputs, output, sizes, optimize="greedy")
    p2 = plan_for(inputs, output, sizes, optimize="greedy")
    p3 = plan_for(inputs, output, sizes, optimize="optimal")
    assert p1.plan is p2.plan and p3.plan is not p1.plan and p3.optimize == "optimal"
    assert plan_stats().plans_built == 2 and plan_stats().cache_hits == 1
    # an optimizer object is keyed by its settings, not its identity
    import cotengra as ctg

    a = plan_for(inputs, output, sizes, optimize=ctg.HyperOptimizer(max_repeats=3, methods=["greedy"], progbar=False))
    b = plan_for(inputs, output, sizes, optimize=ctg.HyperOptimizer(max_repeats=3, methods=["greedy"], progbar=False))
    c = plan_for(inputs, output, sizes, optimize=ctg.HyperOptimizer(max_repeats=5, methods=["greedy"], progbar=False))
    assert a.plan is b.plan and c.plan is not a.plan


def test_plans_are_shared_by_structure_and_show_each_callers_names():
    reset_plan_cache()
    sizes = {"x": 5, "in": 6, "r": 2, "out": 3}
    mine = plan_for([("x", "in"), ("r", "in"), ("out", "r")], ("x", "out"), sizes, names=["x", "A", "B"])
    other_sizes = {"n": 5, "p": 6, "k": 2, "q": 3}
    theirs = plan_for([("n", "p"), ("k", "p"), ("q", "k")], ("n", "q"), other_sizes, names=["h", "U", "V"])
    assert theirs.plan is mine.plan and plan_stats().plans_built == 1     # one plan: the same network renamed
    assert mine.order == "(B·(x·A))" and theirs.order == "(V·(h·U))"
    assert "A[r,in]" in mine.describe() and "U[k,p]" in theirs.describe() and "A[" not in theirs.describe()
    xs = [torch.randn(5, 6), torch.randn(2, 6), torch.randn(3, 2)]
    torch.testing.assert_close(theirs(*xs), xs[0] @ xs[1].T @ xs[2].T)
    assert plan_for([("n", "p"), ("k", "p"), ("q", "k")], ("n", "q"), {**other_sizes, "k": 4}).plan is not mine.plan


def test_adapter_config_hands_its_optimizer_to_every_plan():
    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("quantum_peft", ["c_attn"], rank=3, optimize="greedy"))
    layer = next(layer for _, layer in tnpeft.nn.tn_layers(m))
    module = layer.tn_adapters["default"]
    assert module.optimize == "greedy"
    assert all(p.optimize == "greedy" for p in module.plan(64))
    assert tnpeft.nn.adapter_config(m)["optimize"] == "greedy"
    ids = torch.randint(0, 97, (2, 8))
    m(ids)
    # an optimizer object (not saved, but usable directly on a module)
    import cotengra as ctg

    opt = ctg.HyperOptimizer(max_repeats=4, methods=["greedy"], progbar=False)
    g = tnpeft.adapters.lora(16, 12, r=2, init_b="normal")
    gm = GraphModule(g)
    direct = GraphModule(g, dtype=torch.float64, optimize=opt)
    direct.load_state_dict(gm.double().state_dict())
    x = torch.randn(3, 16, dtype=torch.float64)
    torch.testing.assert_close(direct(x), gm(x))
    assert direct.plan(3)[0].optimize is opt


def test_a_bad_optimizer_is_named_when_configured():
    with pytest.raises(ConfigError, match="'no-such-preset'") as e:
        tnpeft.AdapterConfig("lora", ["c_attn"], optimize="no-such-preset")
    assert e.value.field == "optimize"
    with pytest.raises(ConfigError) as e:
        tnpeft.AdapterConfig("lora", ["c_attn"], optimize=3)
    assert e.value.field == "optimize"
    inputs, output, sizes = chain()
    with pytest.raises(ConfigError, match="cannot plan"):
        ContractionPlan(inputs, output, sizes, optimize="no-such-preset")


@st.composite
def networks(draw):
    """Random networks of 2–4 operands over up to 7 indices (hyperedges, summed-out and kept indices)."""
    letters = "abcdefg"
    sizes = {i: draw(st.integers(1, 3)) for i in letters}
    n_ops = draw(st.integers(2, 4))
    ops = [tuple(draw(st.lists(st.sampled_from(letters), min_size=1, max_size=4, unique=True))) for _ in range(n_ops)]
    present = sorted({i for o in ops for i in o})
    out = tuple(draw(st.lists(st.sampled_from(present), max_size=len(present), unique=True)))
    return ops, out, sizes


@settings(max_examples=60, deadline=None)
@given(net=networks(), force_bmm=st.booleans(), seed=st.integers(0, 2**16))
def test_plans_equal_einsum_through_every_kernel(net, force_bmm, seed):
    import tnpeft.contract.kernels as plan_mod

    ops, out, sizes = net
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(*[sizes[i] for i in o], generator=g, dtype=torch.float64) for o in ops]
    want = torch.einsum(",".join("".join(o) for o in ops) + "->" + "".join(out), *xs)
    old = plan_mod.MAX_KERNEL_DIMS
    plan_mod.MAX_KERNEL_DIMS = 0 if force_bmm else old       # every step as a batched matrix product
    try:
        got = ContractionPlan(ops, out, sizes, optimize="greedy")(*xs)
    finally:
        plan_mod.MAX_KERNEL_DIMS = old
    torch.testing.assert_close(got, want)


def test_any_number_of_distinct_indices_is_planned():
    n = 120
    inputs = [(f"i{k}", f"i{k + 1}") for k in range(n)]
    sizes = {f"i{k}": 2 for k in range(n + 1)}
    plan = ContractionPlan(inputs, ("i0", f"i{n}"), sizes, optimize="greedy")
    xs = [torch.randn(2, 2, dtype=torch.float64) / 1.5 for _ in range(n)]
    want = xs[0]
    for t in xs[1:]:
        want = want @ t
    torch.testing.assert_close(plan(*xs), want)
    assert len(plan.equation.split("->")[0].split(",")) == n     # printable, with symbols beyond the 52 letters


@st.composite
def _accumulating_networks(draw):
    """A row index ``n`` on the first operand, output legs spread over the operands, each operand
    joined to an earlier one by a bond (some by two): networks whose last step may or may not be
    one matrix product."""
    n_ops = draw(st.integers(2, 3))
    outs = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=3, unique=True))
    bonds = iter("efghij")
    ops: list[list[str]] = [["n"]] + [[] for _ in range(n_ops - 1)]
    for k in range(1, n_ops):
        for _ in range(draw(st.integers(1, 2))):
            b = next(bonds)
            ops[draw(st.integers(0, k - 1))].append(b)
            ops[k].append(b)
    for o in outs:
        ops[draw(st.integers(0, n_ops - 1))].append(o)
    sizes = {i: draw(st.integers(1, 4)) for i in "abcdefghij"} | {"n": draw(st.integers(1, 5))}
    return [tuple(draw(st.permutations(o))) for o in ops], ("n", *outs), sizes


@settings(max_examples=60, deadline=None)
@given(_accumulating_networks(), st.floats(-2, 2), st.booleans())
def test_accumulate_equals_out_plus_the_scaled_contraction(net, alpha, grad):
    """``accumulate`` is ``out + α·contract(…)`` whether or not its last step runs as one ``addmm``
    into ``out`` (any number of output indices), with gradients on or off."""
    inputs, output, sizes = net
    plan = ContractionPlan(inputs, output, sizes)
    arrays = [torch.randn([sizes[i] for i in t], dtype=torch.float64) for t in inputs]
    rows = sizes["n"]
    cols = math.prod(sizes[i] for i in output[1:])
    out = torch.randn(rows, cols, dtype=torch.float64)
    eq = ",".join("".join(t) for t in inputs) + "->" + "".join(output)
    want = out + alpha * torch.einsum(eq, *arrays).reshape(rows, cols)
    with torch.set_grad_enabled(grad):
        leaves = [a.clone().requires_grad_(grad) for a in arrays]
        got = plan.accumulate(out.clone(), *leaves, alpha=alpha)
    torch.testing.assert_close(got.detach(), want)
    if grad:        # the gradients too, against einsum's
        w = torch.randn_like(want)
        mine = torch.autograd.grad((got * w).sum(), leaves, allow_unused=True)
        ref_leaves = [a.clone().requires_grad_() for a in arrays]
        ref = torch.autograd.grad((torch.einsum(eq, *ref_leaves).reshape(rows, cols) * alpha * w).sum(), ref_leaves)
        for m, r in zip(mine, ref):
            torch.testing.assert_close(m if m is not None else torch.zeros_like(r), r)


def test_an_mpo_cores_last_step_accumulates_as_one_matrix_product():
    # (n, o1, b) · (b, o2) → (n, o1, o2): rows n·o1, columns o2, read in order
    plan = ContractionPlan([("n", "o1", "b"), ("b", "o2")], ("n", "o1", "o2"), {"n": 3, "o1": 4, "b": 2, "o2": 5})
    assert plan._last_linear == ("a", (0, 1, 2), (0, 1), 2)
    # interleaved free indices (o2 of the second operand between the first's) cannot be one product
    mixed = ContractionPlan([("n", "o1", "b"), ("b", "o2")], ("n", "o2", "o1"), {"n": 3, "o1": 4, "b": 2, "o2": 5})
    assert mixed._last_linear is None
