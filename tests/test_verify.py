"""``tnpeft.verify``: checks the values an adapter holds — a graph's, a model's, a saved folder's —
and, with random values, its topology; passes on good graphs, catches broken ones (a NaN in one
saved tensor, a unitary node whose frame is not orthonormal any more, a wrong count, a dead node),
reports every figure beside its bound, lists skipped checks with the reason, and — with the
hypothesis strategies users get — holds for a thousand distinct random graphs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2
from hypothesis import HealthCheck, given, settings

import tnpeft
from tnpeft.cli import main
from tnpeft.errors import AdapterFileError
from tnpeft.graph import Dense, Graph, Nonlinear, Unitary
from tnpeft.params.unitary import UNITARY_PARAMS, FrameModule, UnitaryParametrization, register_unitary
from tnpeft.runtime import GraphModule
from tnpeft.storage import read_adapter_modules
from tnpeft.testing.strategies import adapter_graphs, graphs


class NotOrthogonal(FrameModule):
    def __init__(self, n, k, batch=(), dtype=None, device=None, rng=None):
        super().__init__(n, k, batch)
        self.w = torch.nn.Parameter(torch.randn(*batch, n, k, dtype=dtype, generator=rng))

    def free_tensor(self):
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
    # the line says which way it fails, with both figures: V holds 36 householder scalars (its
    # closed form claims 12·3 − 1), B 15
    assert "✗ parameter_count  held 51 ≠ closed form 50" in str(r)
    assert "✗ parameter_count  allocated 51 ≠ closed form 50" in str(r)
    assert {(c.values, c.value, c.threshold) for c in r.failures} == {("held", 51, 50), ("random", 51, 50)}


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


def test_every_figure_has_its_bound_and_both_kinds_of_values_are_checked():
    r = tnpeft.verify(tnpeft.adapters.quantum_peft(32, 16, rank=4))
    assert {c.values for c in r.checks} == {"held", "random"}
    for c in r.checks:
        assert c.threshold is not None and c.relation and c.quantity, c
    text = str(r)
    assert "the values it holds" in text and "random values (the topology; gradients of L = ⟨y, t⟩" in text
    assert "max|UᵀU − I|" in text and "≤ tol 1e-05" in text
    assert "Σ|∂L/∂θ|" in text and "> threshold 1e-10" in text
    assert "held 27 = closed form 27" in text


def test_skipped_checks_are_listed_with_the_reason():
    g = Graph([Dense("A", ("r", "in"), (3, 8)), Nonlinear.elementwise("f", {"r": 3}, ("s",), fn="tanh"),
               Dense("B", ("out", "s"), (4, 3))])
    r = tnpeft.verify(g)
    skipped = {c.name: c.message for c in r.skipped}
    assert set(skipped) == {"forward_vs_dense", "merge_roundtrip", "orthogonality"}
    assert "nonlinear node(s) ['f']" in skipped["forward_vs_dense"] and "no unitary node" in skipped["orthogonality"]
    assert r.ok and "skipped" in str(r) and "3 skipped" in str(r).splitlines()[0]


def test_a_trained_graph_holding_nan_fails():
    g = tnpeft.adapters.lora(16, 8, r=2)
    gm = GraphModule(g)
    with torch.no_grad():
        gm.B.weight[3, 1] = float("nan")
    r = tnpeft.verify(gm)
    finite = next(c for c in r.checks if c.name == "finite:B")
    assert not finite.passed and finite.value == 1 and "B.weight: 1 NaN of 16 values" in finite.message
    assert {c.values for c in r.failures} == {"held"}       # the topology is fine
    assert "✗ finite:B" in str(r) and "non-finite values 1 ≠ 0" in str(r)


def saved(model, path):
    tnpeft.save_adapter(model, path)
    return path


def test_a_saved_adapter_with_nan_in_one_tensor_fails(tmp_path, capsys):
    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora", ["c_attn"], r=2))
    layer = m.get_submodule("transformer.h.1.attn.c_attn")
    with torch.no_grad():
        layer.tn_adapters["default"].B.weight[5, 0] = float("nan")
    d = saved(m, tmp_path / "nan")
    with pytest.raises(AdapterFileError, match="NaN"):   # loading into a model still refuses it
        tnpeft.load_adapter(tiny_gpt2(), d)
    r = tnpeft.verify(d)
    assert not r.ok
    bad = {(c.module, c.name) for c in r.failures}
    assert ("transformer.h.1.attn.c_attn", "finite:B") in bad
    assert not any(c.module == "transformer.h.0.attn.c_attn" for c in r.failures)
    assert main(["verify", "--adapter-dir", str(d)]) == 1
    out = capsys.readouterr().out
    assert "✗ finite:B" in out and "B.weight: 1 NaN of 192 values" in out
    assert "✓ the values it holds — module transformer.h.0.attn.c_attn: all" in out


def frame_error(u: torch.Tensor) -> float:
    """max|UᵀU − I| computed here, from the frame itself."""
    u = u.detach().double()
    return (u.T @ u - torch.eye(u.shape[1], dtype=torch.float64)).abs().max().item()


def test_a_saved_exp_frame_whose_generator_was_overwritten_fails(tmp_path):
    # finite, plausible-looking parameters, and yet the matrix exponential of a skew generator of
    # norm ~1e8 is far from orthogonal in float64: only a check of the values held finds it
    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("quantum_peft", ["c_attn"], rank=4, param="exp"))
    frame = m.get_submodule("transformer.h.0.attn.c_attn").tn_adapters["default"].U
    d0 = saved(m, tmp_path / "good")
    with torch.no_grad():
        frame.skew_factor.mul_(1e8)
    d = saved(m, tmp_path / "overwritten")
    assert tnpeft.verify(d0).ok
    r = tnpeft.verify(d)
    (bad,) = r.failures
    assert (bad.name, bad.values, bad.module) == ("orthogonality:U", "held", "transformer.h.0.attn.c_attn")
    u = read_adapter_modules(d)["transformer.h.0.attn.c_attn"].tensor("U")
    assert bad.value == pytest.approx(frame_error(u)) and bad.value > 1e-2
    assert all(c.passed for c in r.checks if c.name.startswith("finite:"))


@pytest.fixture
def stored_param():
    """The ``stored`` parametrization of mypkg.frames, registered for one test only (it is not
    orthogonal by construction, so the random-graph strategies must not meet it)."""
    from mypkg.frames import STORED

    from tnpeft.params.unitary import UNITARY_PARAMS, register_unitary

    register_unitary(STORED)
    yield
    UNITARY_PARAMS.pop("stored", None)


def test_a_saved_frame_of_ones_own_parametrization_overwritten_by_a_non_orthogonal_matrix_fails(tmp_path,
                                                                                                 stored_param):
    from mypkg.topos import stored_svd

    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig(stored_svd, ["c_attn"], rank=4))
    d0 = saved(m, tmp_path / "good")
    frame = m.get_submodule("transformer.h.1.attn.c_attn").tn_adapters["default"].U
    with torch.no_grad():
        frame.matrix.copy_(torch.randn(frame.matrix.shape, generator=torch.Generator().manual_seed(3)))
    d = saved(m, tmp_path / "overwritten")
    held = lambda r: {(c.module, c.name) for c in r.failures if c.values == "held"}  # noqa: E731
    assert held(tnpeft.verify(d0)) == set()
    assert held(tnpeft.verify(d)) == {("transformer.h.1.attn.c_attn", "orthogonality:U")}
    # the parametrization stores the matrix as it is: with random values it is not orthogonal, and
    # verify says so for the topology as well
    random = {c.name for c in tnpeft.verify(d0).failures if c.values == "random"}
    assert random == {"orthogonality:U", "orthogonality:V"}
    # from the command line: the module that registers the parametrization is imported first
    tests = Path(__file__).resolve().parent
    run = subprocess.run([sys.executable, "-m", "tnpeft.cli", "verify", "--adapter-dir", str(d), "--import",
                          "mypkg.frames"], capture_output=True, text=True, cwd=tests,
                         env={**os.environ, "PYTHONPATH": str(tests)})
    assert run.returncode == 1, run.stderr
    assert "✗ orthogonality:U" in run.stdout and "the columns are not orthonormal" in run.stdout
    run = subprocess.run([sys.executable, "-m", "tnpeft.cli", "verify", "--adapter-dir", str(d)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "unknown param 'stored'" in run.stderr and "Traceback" not in run.stderr


def test_verify_reads_models_and_graph_files(tmp_path):
    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora", ["c_attn"], r=2))
    r = tnpeft.verify(m)
    assert r.ok and r.modules == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert len([c for c in r.checks if c.values == "random" and c.name == "parameter_count"]) == 1
    f = tmp_path / "g.json"
    f.write_text(tnpeft.adapters.oft(16, 16, block_size=4).to_json())
    assert tnpeft.verify(f).ok and not math.isnan(tnpeft.verify(f).checks[0].value)


def test_verify_leaves_the_graph_untouched():
    g = tnpeft.adapters.lora(16, 8, r=2)
    gm = GraphModule(g)
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    tnpeft.verify(gm)
    assert all(torch.equal(v, gm.state_dict()[k]) for k, v in before.items())


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


def test_a_unitary_parametrization_of_ones_own(tmp_path):
    # the docs' example (docs/custom.md): the Q factor of a free matrix, registered by name
    from mypkg.frames import QR

    from tnpeft.params.unitary import UNITARY_PARAMS, register_unitary

    register_unitary(QR)
    try:
        g = tnpeft.adapters.quantum_peft(24, 16, rank=4, param="qr")
        assert g.num_parameters() == 24 * 4 + 4 + 16 * 4
        r = tnpeft.verify(g)
        assert r.ok, str(r)
        o = tnpeft.adapters.oft(16, 16, block_size=4, param="qr")   # identity init: starts at the base model
        om = GraphModule(o)
        torch.testing.assert_close(om.dense(), torch.eye(16))
        assert tnpeft.verify(om).ok
        again = Graph.from_json(g.to_json())                        # the file names it; no code is loaded
        assert again.nodes["U"].param == "qr"
        tnpeft.save_graph(GraphModule(g), tmp_path / "g")
        assert tnpeft.verify(tmp_path / "g").ok
    finally:
        UNITARY_PARAMS.pop("qr", None)
