"""The contraction engine's options: the cotengra optimizer is chosen per adapter, is part of the plan
cache key, and its contraction tree stays on the plan; failures are tnpeft errors."""

import pytest
import torch
from conftest import tiny_gpt2

import tnpeft
from tnpeft.contract import ContractionPlan, plan_for, plan_stats, reset_plan_cache
from tnpeft.errors import ConfigError
from tnpeft.graph import GraphModule


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
    assert p1 is p2 and p3 is not p1 and p3.optimize == "optimal"
    assert plan_stats().plans_built == 2 and plan_stats().cache_hits == 1


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
    direct = GraphModule(g, dtype=torch.float64, optimize=opt)
    direct.load_state_dict(g.module.double().state_dict())
    x = torch.randn(3, 16, dtype=torch.float64)
    torch.testing.assert_close(direct(x), g.module(x))
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
