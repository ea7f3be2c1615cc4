"""``tnpeft.verify``: passes on good graphs, catches broken ones, and — with the hypothesis
strategies users get — holds for a thousand distinct random graphs."""

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import tnpeft
from tnpeft.cli import main
from tnpeft.graph import Dense, Graph, Unitary
from tnpeft.params.unitary import UNITARY_PARAMS, FrameModule, UnitaryParametrization, register_unitary
from tnpeft.testing.strategies import adapter_graphs, graphs


class NotOrthogonal(FrameModule):
    def __init__(self, n, k, batch=(), dtype=None, device=None, rng=None):
        super().__init__(n, k, batch)
        self.w = torch.nn.Parameter(torch.randn(*batch, n, k, dtype=dtype, generator=rng))

    def param(self):
        return self.w

    def _compute(self, flat):
        return flat


@pytest.fixture
def broken_params():
    register_unitary(UnitaryParametrization("not_orthogonal", lambda n, k: n * k,
                                            lambda n, k, batch=(), **kw: NotOrthogonal(n, k, batch, **kw)))
    register_unitary(UnitaryParametrization("miscounted", lambda n, k: n * k - 1,
                                            lambda n, k, batch=(), **kw: UNITARY_PARAMS["householder"].build(
                                                n, k, batch, **kw)))
    yield
    del UNITARY_PARAMS["not_orthogonal"], UNITARY_PARAMS["miscounted"]


def failing(report):
    return {c.name for c in report.failures}


def test_catches_a_unitary_that_is_not_orthogonal(broken_params):
    g = Graph([Unitary("V", ("in", "k"), (12, 3), param="not_orthogonal"), Dense("B", ("out", "k"), (5, 3))])
    r = tnpeft.verify(g)
    assert not r.ok and "orthogonality:V" in failing(r)


def test_catches_a_wrong_parameter_count(broken_params):
    g = Graph([Unitary("V", ("in", "k"), (12, 3), param="miscounted"), Dense("B", ("out", "k"), (5, 3))])
    r = tnpeft.verify(g)
    assert failing(r) == {"parameter_count"}


def dead_graph(init):
    return Graph([Dense("A", ("r", "in"), (3, 8)), Dense("Z", ("s", "r"), (3, 3), init=init, trainable=False),
                  Dense("B", ("out", "s"), (4, 3))])


def test_catches_dead_trainable_nodes():
    # Z is frozen at zero: the update is identically zero and no gradient reaches A or B
    assert failing(tnpeft.verify(dead_graph("zeros"))) == {"gradient_flow:A", "gradient_flow:B"}
    assert tnpeft.verify(dead_graph("ones")).ok


def test_report_formats_and_cli(capsys):
    r = tnpeft.verify(tnpeft.adapters.quantum_peft(32, 16, rank=4))
    assert r.ok and "✓ orthogonality:V" in str(r)
    assert json.loads(r.to_json())["ok"] is True
    assert main(["verify", "lora", "--in-features", "16", "--out-features", "8", "r=2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_verify_leaves_the_graph_untouched():
    g = tnpeft.adapters.lora(16, 8, r=2)
    before = {k: v.clone() for k, v in g.module.state_dict().items()}
    tnpeft.verify(g)
    assert all(torch.equal(v, g.module.state_dict()[k]) for k, v in before.items())


SEEN: set = set()


@settings(max_examples=1100, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs())
def test_a_thousand_distinct_random_graphs_pass_verify(g):
    SEEN.add(g.signature())
    r = tnpeft.verify(g)
    assert r.ok, str(r)


def test_the_strategies_produced_a_thousand_distinct_graphs():
    # runs after the property test above in file order
    assert len(SEEN) >= 1000, len(SEEN)


@given(adapter_graphs())
@settings(max_examples=30, deadline=None)
def test_builtin_adapter_strategy_graphs_inject_and_run(g):
    from torch import nn

    layer = tnpeft.TNLinear(nn.Linear(g.in_features, g.out_features if g.mode == "add" else 6))
    layer.add_adapter("a", g)
    x = torch.randn(3, g.in_features)
    assert layer(x).shape == (3, layer.out_features)
