"""The reproductions of the third reliability review (combination, export, compare, circuits,
drawing, loading, precision): each ends in a one-line tnpeft error naming the argument, file, field
or node — or in the correct result, checked against a reference computed by hand — and a failed
call leaves the model exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2
from snapshots import same_snapshot, snapshot
from torch import nn

import tnpeft
from tnpeft import AdapterConfig, inject
from tnpeft.algebra import compress, weighted_sum
from tnpeft.cli import main
from tnpeft.errors import (
    AdapterFileError,
    AdapterStateError,
    ConfigError,
    GraphError,
    NonFiniteError,
    TNPeftError,
)
from tnpeft.nn import tn_layers

C_ATTN = "transformer.h.0.attn.c_attn"


def fails_cleanly(model, call, error=TNPeftError, match: str | None = None, compare: bool = True):
    """``call()`` raises ``error`` in one line and leaves ``model`` exactly as it was (``compare``:
    by value — not for a model holding NaN, nor one on the meta device, whose values cannot be compared)."""
    before = snapshot(model) if compare else None
    with pytest.raises(error, match=match) as e:
        call()
    assert before is None or same_snapshot(before, snapshot(model)), "a failed call changed the model"
    assert "\n" not in str(e.value).strip()
    return e.value


def two_loras(seed: int = 0):
    m = inject(tiny_gpt2(), AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"), adapter_name="a",
               rng=torch.Generator().manual_seed(seed))
    return inject(m, AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"), adapter_name="b",
                  rng=torch.Generator().manual_seed(seed + 1))


def by_hand(m, name: str, path: str = C_ATTN) -> torch.Tensor:
    """``s · B A`` of a LoRA adapter, multiplied out by hand (float64)."""
    mod = m.get_submodule(path).tn_adapters[name]
    return mod.graph.scale * (mod.B.weight.double() @ mod.A.weight.double())


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


# ------------------------------------------------------------------ combinations that overflow or meet NaN
def test_a_cat_combination_that_overflows_float32_is_refused_naming_adapter_module_and_weight():
    m = two_loras()
    e = fails_cleanly(m, lambda: tnpeft.add_weighted_adapter(m, ["a"], [1e38], "s", combination_type="cat"),
                      ConfigError)
    assert e.field == "weights" and "'a' with weight 1e+38" in str(e) and "'s'" in str(e)
    assert "transformer.h." in str(e) and "float32" in str(e)


@pytest.mark.parametrize("ctype", ["svd", "linear", "cat"])
def test_huge_weights_are_refused_and_no_error_is_ever_nan(ctype):
    m = two_loras()
    e = fails_cleanly(m, lambda: tnpeft.add_weighted_adapter(m, ["a", "b"], [1e200, 1e200], "s",
                                                             combination_type=ctype), ConfigError)
    assert "1e+200" in str(e) and "error nan" not in str(e).lower()
    report = tnpeft.add_weighted_adapter(m, ["a", "b"], [1e3, -2.0], "fine", combination_type=ctype)
    assert all(np.isfinite(v["error"]) for v in report.modules.values())


def test_weighted_sum_of_graph_modules_that_overflows_is_refused():
    mod = tnpeft.GraphModule(tnpeft.adapters.lora(8, 8, r=2, init_b="normal"))
    with pytest.raises(NonFiniteError, match="float32"):
        weighted_sum([mod, mod], [1e308, 1e308], "cat")


def _poisoned(value: float):
    m = two_loras()
    with torch.no_grad():
        m.get_submodule(C_ATTN).tn_adapters["a"].A.weight[0, 0] = value
    return m


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("path", ["add_weighted_adapter", "weighted_sum", "compress", "export_peft"])
def test_every_svd_path_on_non_finite_values_is_a_tnpeft_error(path, value, tmp_path):
    m = _poisoned(value)
    mod = m.get_submodule(C_ATTN).tn_adapters["a"]
    calls = {
        "add_weighted_adapter": lambda: tnpeft.add_weighted_adapter(m, ["a"], [1.0], "s", combination_type="svd"),
        "weighted_sum": lambda: weighted_sum([mod], [1.0], "svd", rank=1),
        "compress": lambda: compress(mod, 1),
        "export_peft": lambda: tnpeft.export_peft(m, tmp_path / "p", adapter_name="a", max_rank=1),
    }
    e = fails_cleanly(m, calls[path], compare=value == value)
    assert "NaN or infinite" in str(e)
    if path in ("add_weighted_adapter", "export_peft"):
        assert C_ATTN in str(e)
    assert not (tmp_path / "p").exists()


def test_an_export_of_non_finite_values_writes_nothing(tmp_path):
    m = _poisoned(float("inf"))
    fails_cleanly(m, lambda: tnpeft.export_peft(m, tmp_path / "p", adapter_name="a"), NonFiniteError, "'a'")
    assert not (tmp_path / "p").exists() or not os.listdir(tmp_path / "p")


def test_compress_and_weighted_sum_name_what_is_not_a_module_with_values():
    g = tnpeft.adapters.lora(12, 10, r=2, init_b="normal")
    gm = tnpeft.GraphModule(g)
    want = gm.dense(scaled=True).detach().double()
    c = compress(gm, 2)
    torch.testing.assert_close(c.module.dense(scaled=True).detach().double(), want, atol=1e-6, rtol=0)
    s = weighted_sum([gm], [1.0])
    torch.testing.assert_close(s.module.dense(scaled=True).detach().double(), want, atol=1e-6, rtol=0)
    for call in (lambda: compress(g, 2), lambda: weighted_sum([g], [1.0])):   # a Graph holds no values
        with pytest.raises(GraphError, match="holds no values; pass the GraphModule"):
            call()
    for bad in (nn.Linear(4, 4), "lora"):
        with pytest.raises(GraphError, match="GraphModule"):
            compress(bad, 2)
        with pytest.raises(GraphError, match="GraphModule"):
            weighted_sum([bad], [1.0])


def test_numpy_weights_are_numbers_and_missing_weights_are_named():
    m = two_loras()
    tnpeft.add_weighted_adapter(m, ["a"], [np.float32(0.5)], "halved", combination_type="cat")
    torch.testing.assert_close(m.get_submodule(C_ATTN).tn_adapters["halved"].dense(scaled=True).double(),
                               0.5 * by_hand(m, "a"), atol=1e-6, rtol=0)
    e = fails_cleanly(m, lambda: tnpeft.add_weighted_adapter(m, ["a"], None, "s"), ConfigError)
    assert e.field == "weights" and "None" in str(e)
    e = fails_cleanly(m, lambda: tnpeft.add_weighted_adapter(m, ["a"], [np.bool_(True)], "s"), ConfigError)
    assert e.field == "weights"


def test_a_combination_leaves_a_frozen_adapter_frozen(tmp_path):
    m = two_loras()
    tnpeft.save_adapter(m, tmp_path / "a", adapter_name="a")
    fresh = tnpeft.load_adapter(tiny_gpt2(), tmp_path / "a")          # for inference: frozen
    assert not any(p.requires_grad for p in fresh.parameters())
    tnpeft.add_weighted_adapter(fresh, ["a"], [2.0], "twice", combination_type="cat")
    assert not any(p.requires_grad for p in fresh.parameters())
    assert [lay.active_adapters for _, lay in tn_layers(fresh)] == [["a"], ["a"]]


# ------------------------------------------------------------------ meta device, input dtypes
def _meta_model():
    with torch.device("meta"):
        base = nn.Sequential(nn.Linear(8, 8))
    return inject(base, AdapterConfig("lora", ["0"], r=2))


def test_meta_device_models_fail_in_one_line_or_work(tmp_path):
    m = _meta_model()
    y = m(torch.randn(3, 8, device="meta"))           # shape inference works
    assert y.shape == (3, 8) and y.is_meta
    fails_cleanly(m, lambda: m(torch.randn(3, 8)), AdapterStateError, "meta device", compare=False)
    fails_cleanly(m, lambda: tnpeft.save_adapter(m, tmp_path / "s"), AdapterStateError, "meta device", compare=False)
    assert not (tmp_path / "s").exists()
    real = inject(nn.Sequential(nn.Linear(8, 8)), AdapterConfig("lora", ["0"], r=2, init_b="normal"))
    tnpeft.save_adapter(real, tmp_path / "real")
    with torch.device("meta"):
        target = nn.Sequential(nn.Linear(8, 8))
    fails_cleanly(target, lambda: tnpeft.load_adapter(target, tmp_path / "real"), AdapterStateError, "meta device",
                  compare=False)
    assert not list(tn_layers(target))                 # the refused load left no adapter behind
    mod = m.get_submodule("0").tn_adapters["default"]
    with pytest.raises(GraphError, match="meta device"):
        weighted_sum([mod], [1.0])
    fails_cleanly(m, lambda: tnpeft.export_peft(m, tmp_path / "p"), AdapterStateError, "meta device", compare=False)


def test_a_graph_takes_input_of_any_float_dtype_and_names_what_it_refuses():
    g = tnpeft.adapters.lora(8, 6, r=2, init_b="normal")
    mod = tnpeft.GraphModule(g)
    x = torch.randn(4, 8, dtype=torch.float64)
    want = x @ mod.dense(scaled=True).detach().double().T
    torch.testing.assert_close(mod(x).double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mod(x.half()).double(), want, atol=2e-2, rtol=1e-2)
    for bad in (torch.ones(4, 8, dtype=torch.long), torch.ones(4, 8, dtype=torch.bool)):
        with pytest.raises(GraphError, match="floating-point") as e:
            mod(bad)
        assert e.value.index == "in"


# ------------------------------------------------------------------ drawing
def test_draw_into_a_path_under_a_file_names_the_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for extra in ([], ["--circuit", "V"]):
        code, err = run_cli(capsys, "draw", "quantum_peft", "--in-features", "4", "--out-features", "4", "rank=1",
                            "-o", str(tmp_path / "f" / "x.svg"), *extra)
        assert code == 2 and err.count("\n") == 0 and "is a file, not a folder" in err and str(tmp_path / "f") in err


def test_draw_circuit_of_a_one_by_one_frame_says_there_is_none(tmp_path, capsys):
    code, err = run_cli(capsys, "draw", "quantum_peft", "--in-features", "1", "--out-features", "4", "rank=1",
                        "--circuit", "V", "-o", str(tmp_path / "v.svg"))
    assert code == 2 and err.count("\n") == 0 and "'V'" in err and "1×1" in err


# ------------------------------------------------------------------ fields that blame the right thing
def test_qpa_with_a_huge_rank_blames_the_rank():
    for call in (lambda: tnpeft.adapters.qpa(32, 96, r=10**9),
                 lambda: inject(tiny_gpt2(), AdapterConfig("qpa", ["c_attn"], r=10**9))):
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.field == "r" and "r=1000000000" in str(e.value) and "chunk_size" not in str(e.value).split(":")[0]


def test_a_version_of_true_is_not_version_one(tmp_path):
    m = two_loras()
    tnpeft.save_adapter(m, tmp_path / "a", adapter_name="a")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    cfg["version"] = True
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterFileError, match="version True"):
        tnpeft.load_adapter(tiny_gpt2(), tmp_path / "a")
    d = tnpeft.adapters.lora(4, 4, r=1).to_dict()
    for v in (True, 1.0):
        with pytest.raises(GraphError, match="version"):
            tnpeft.Graph.from_dict({**d, "version": v})
    from tnpeft.quantum.export import export_circuits, read_index

    export_circuits(tnpeft.adapters.quantum_peft(8, 8, rank=2), tmp_path / "c")
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    (tmp_path / "c" / "index.json").write_text(json.dumps({**index, "version": True}))
    with pytest.raises(AdapterFileError, match="version True"):
        read_index(tmp_path / "c")


def test_taylor_order_zero_is_refused_as_its_message_says():
    with pytest.raises(GraphError, match="'order' must be a positive integer") as e:
        tnpeft.adapters.quantum_peft(16, 16, rank=2, param="taylor", order=0)
    assert e.value.node


# ------------------------------------------------------------------ compare
@pytest.mark.parametrize("args, field", [
    (["--adapters", "lora:r=2", "--lrs", "1e308"], "--lrs"),
    (["--adapters", "lora:r=2", "--seeds", "99999999999999999999"], "--seeds"),
    (["--adapters", "peft_lora:r=0"], "peft_lora's r"),
    (["--adapters", "peft_lora:alpha=nan"], "peft_lora's alpha"),
    (["--adapters", "peft_lora:dropout=1"], "peft_lora's dropout"),
])
def test_compare_arguments_out_of_range_are_one_line(args, field, tmp_path, capsys, monkeypatch):
    import tnpeft.train.comparison as comparison

    monkeypatch.setattr(comparison, "load_splits", lambda *a, **k: pytest.fail("data loaded before the check"))
    code, err = run_cli(capsys, "compare", *args, "--steps", "2", "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith("tnpeft: error:") and "\n" not in err and field in err


@pytest.fixture(scope="module")
def finished_comparison(tmp_path_factory):
    from test_compare import _csv, _tiny_bert

    root = tmp_path_factory.mktemp("cmp3")
    _tiny_bert(root / "model")
    _csv(root / "data.csv", 120)
    argv = ["compare", "--adapters", "lora:r=2", "--lrs", "1e-3", "--seeds", "0", "--model", str(root / "model"),
            "--data", str(root / "data.csv"), "--steps", "2", "--val-size", "20", "--test-size", "20",
            "--batch-size", "16", "--max-length", "16", "--json"]
    assert main(argv + ["--out", str(root / "out")]) == 0
    return root, argv


def _spoil(rec: dict, how: str) -> None:
    if how == "val oops":
        rec["val"] = "oops"
    elif how == "val missing":
        del rec["val"]
    elif how == "accuracy a string":
        rec["val"]["accuracy"] = "high"
    elif how == "parameters many":
        rec["adapter_parameters"] = "many"
    else:
        rec["test"] = "x"


@pytest.mark.parametrize("how, field", [("val oops", "val"), ("val missing", "val"), ("accuracy a string", "val"),
                                        ("parameters many", "adapter_parameters"), ("test x", "test")])
def test_a_corrupted_cell_record_that_keeps_its_hash_is_named(finished_comparison, how, field, tmp_path, capsys):
    root, argv = finished_comparison
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    name = "test.json" if how == "test x" else "cell.json"
    path = next(out.glob(f"cells/*/lr=*/seed=*/{name}"))
    rec = json.loads(path.read_text())
    _spoil(rec, how)
    path.write_text(json.dumps(rec))
    capsys.readouterr()
    code, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 2 and err.count("\n") == 0, err
    assert f"field {field!r}" in err and name in err and "delete it" in err


# ------------------------------------------------------------------ --import and half precision
def test_import_does_not_let_a_file_in_the_folder_replace_an_installed_package(tmp_path):
    (tmp_path / "qiskit.py").write_text("raise RuntimeError('the folder replaced qiskit')\n")
    (tmp_path / "mymod.py").write_text("import qiskit\nimport helper\nWHERE = qiskit.__file__\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    code = ("import sys, qiskit; from tnpeft.adapters.specs import import_user_module; "
            "m = import_user_module('mymod'); import os; "
            "print(m.WHERE.endswith(os.path.join('qiskit', '__init__.py')), sys.path[0] != os.getcwd())")
    paths = [str(Path(tnpeft.__file__).parents[1]), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}   # an empty entry would be the cwd
    # -P: the interpreter itself does not put the current folder first (as the tnpeft script does not)
    code2 = code.replace("import sys, qiskit;", "import sys;")        # qiskit not imported before either
    procs = [subprocess.Popen([sys.executable, "-P", "-c", c], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in (code, code2)]      # side by side
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.split() == ["True", "True"]


def test_bfloat16_merge_then_unmerge_restores_the_base_weight_exactly():
    m = tiny_gpt2().to(torch.bfloat16)
    inject(m, AdapterConfig("lora", ["c_attn"], r=4, init_b="normal"), adapter_name="a")
    inject(m, AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"), adapter_name="b")
    lay = m.get_submodule(C_ATTN)
    w0 = lay.base_layer.weight.detach().clone()
    tnpeft.set_adapter(m, ["a", "b"])
    tnpeft.merge(m)
    assert not torch.equal(lay.base_layer.weight, w0)
    lay.unmerge(["a"])                                   # b stays merged: as if b alone had been merged
    only_b = w0.clone()
    only_b += lay.delta_weight("b").to(torch.bfloat16)
    assert torch.equal(lay.base_layer.weight, only_b)
    tnpeft.unmerge(m)
    assert torch.equal(lay.base_layer.weight, w0)
    assert "tn_weight_before_merge" not in dict(lay.named_buffers())
    assert "tn_weight_before_merge" not in str(list(m.state_dict()))
