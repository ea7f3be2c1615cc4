"""The reproductions of the reliability review, each ending in a tnpeft error that names the field,
node or file — or in the correct result — with the model bit-identical whenever a call failed."""

from __future__ import annotations

import copy
import json
import os
import threading
import time

import pytest
import torch
from conftest import tiny_gpt2
from safetensors.torch import load, save
from snapshots import same_snapshot, snapshot

import tnpeft
from tnpeft import AdapterConfig, inject, load_adapter, merge, save_adapter, unmerge
from tnpeft.errors import (
    AdapterFileError,
    AdapterStateError,
    BudgetError,
    ConfigError,
    GraphError,
    TNPeftError,
    WriteError,
)
from tnpeft.fileio import sha256
from tnpeft.nn import tn_layers
from tnpeft.runtime import GraphModule

C_ATTN = "transformer.h.0.attn.c_attn"


def tiny(seed: int = 0):
    return tiny_gpt2(seed)


def fails_cleanly(model, call, error=TNPeftError, match: str | None = None):
    """``call()`` raises ``error`` (matching ``match``) and leaves ``model`` exactly as it was."""
    before = snapshot(model)
    with pytest.raises(error, match=match) as e:
        call()
    assert same_snapshot(before, snapshot(model)), "a failed call changed the model"
    return e.value


def saved(tmp_path, name="a", seed=3, **hp):
    model = inject(tiny(), AdapterConfig("lora", ["c_attn"], **{"r": 2, "init_b": "normal", **hp}),
                   rng=torch.Generator().manual_seed(seed))
    d = tmp_path / name
    save_adapter(model, d)
    return model, d


def rewrite(d, edit_tensors=None, edit_cfg=None):
    """Edit a saved adapter's tensors and config consistently (the checksum follows)."""
    cfg = json.loads((d / "adapter_config.json").read_text())
    tensors = load((d / "adapter_model.safetensors").read_bytes())
    if edit_tensors:
        tensors = edit_tensors(tensors) or tensors
    if edit_cfg:
        edit_cfg(cfg)
    blob = save(tensors)
    cfg["weights_sha256"] = sha256(blob)
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    (d / "adapter_model.safetensors").write_bytes(blob)
    return d


# ------------------------------------------------------------------ silent corruption or wrong results
def test_loading_into_a_merged_adapter_is_refused_and_unmerge_restores_the_base(tmp_path):
    _, d = saved(tmp_path, seed=7)
    m = inject(tiny(), AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"))
    w0 = m.get_submodule(C_ATTN).base_layer.weight.detach().clone()
    merge(m)
    e = fails_cleanly(m, lambda: load_adapter(m, d), AdapterStateError, "merged")
    assert "'default'" in str(e)
    unmerge(m)
    torch.testing.assert_close(m.get_submodule(C_ATTN).base_layer.weight, w0, atol=1e-6, rtol=0)
    load_adapter(m, d)                                     # unmerged: the values are replaced
    fresh = load_adapter(tiny(), d)
    with torch.no_grad():
        torch.testing.assert_close(m(torch.arange(8)[None]).logits, fresh(torch.arange(8)[None]).logits,
                                   atol=1e-5, rtol=0)


def test_adapters_loaded_for_inference_follow_the_models_eval_mode(tmp_path):
    trained, d = saved(tmp_path, dropout=0.1)
    x = torch.randint(0, 97, (2, 9))
    f = load_adapter(tiny().eval(), d)
    assert not any(mod.training for mod in f.modules())
    with torch.no_grad():
        assert torch.equal(f(x).logits, f(x).logits)
    # and a model in training mode gets adapters in training mode (dropout on)
    g = load_adapter(tiny().train(), d)
    assert all(mod.training for mod in g.modules())
    # the same through peft's format
    peft_dir = tmp_path / "peft"
    tnpeft.export_peft(trained, peft_dir)
    h = tnpeft.import_peft(tiny().eval(), peft_dir)
    assert not any(mod.training for mod in h.modules())
    with torch.no_grad():
        assert torch.equal(h(x).logits, h(x).logits)
    i = inject(tiny().eval(), AdapterConfig("lora", ["c_fc"], r=2, dropout=0.5))
    assert not any(mod.training for mod in i.modules())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_that_overflow_the_parameters_dtype_are_refused(tmp_path, dtype):
    _, d = saved(tmp_path)
    big = 1e300 if dtype == torch.float64 else 3.4e38
    rewrite(d, lambda t: {k: (torch.full_like(v, big, dtype=dtype) if k.endswith("B.weight") else v.to(dtype))
                          for k, v in t.items()})
    if dtype == torch.float64:
        m = tiny()
        e = fails_cleanly(m, lambda: load_adapter(m, d), AdapterFileError, "too large for float32")
        assert "B.weight" in str(e)
    else:   # 3.4e38 is a float32 value: it loads as it is (finite), nothing is silently made inf
        m = load_adapter(tiny(), d)
        assert all(torch.isfinite(p).all() for p in m.parameters())


def test_graph_files_check_finiteness_after_the_cast(tmp_path):
    g = tnpeft.adapters.lora(8, 6, r=2)
    tnpeft.save_graph(tnpeft.GraphModule(g), tmp_path / "g")
    t = load((tmp_path / "g" / "graph.safetensors").read_bytes())
    blob = save({k: torch.full_like(v, 1e300, dtype=torch.float64) for k, v in t.items()})
    (tmp_path / "g" / "graph.safetensors").write_bytes(blob)
    meta = json.loads((tmp_path / "g" / "graph.json").read_text())
    meta["weights_sha256"] = sha256(blob)
    (tmp_path / "g" / "graph.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterFileError, match="too large for float32"):
        tnpeft.load_graph(tmp_path / "g")


def _peft_dir(tmp_path, cfg_edit=None, tensors_edit=None):
    trained, _ = saved(tmp_path)
    d = tmp_path / "peft"
    tnpeft.export_peft(trained, d)
    cfg = json.loads((d / "adapter_config.json").read_text())
    if cfg_edit:
        cfg_edit(cfg)
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    if tensors_edit:
        t = load((d / "adapter_model.safetensors").read_bytes())
        (d / "adapter_model.safetensors").write_bytes(save(tensors_edit(t)))
    return d


@pytest.mark.parametrize("field,value,match", [
    ("use_rslora", "false", "'use_rslora'"), ("lora_alpha", "16", "'lora_alpha'"), ("r", 2.5, "'r'"),
    ("lora_dropout", 1.5, "'lora_dropout'"), ("rank_pattern", {"(": 4}, "regular expression"),
    ("rank_pattern", {"c_attn": "4"}, "'rank_pattern'"), ("alpha_pattern", [1], "'alpha_pattern'"),
    ("use_dora", True, "'use_dora'"), ("fan_in_fan_out", "yes", "'fan_in_fan_out'")])
def test_wrongly_typed_peft_config_fields_are_refused(tmp_path, field, value, match):
    d = _peft_dir(tmp_path, lambda c: c.update({field: value}))
    m = tiny()
    fails_cleanly(m, lambda: tnpeft.import_peft(m, d), AdapterFileError, match)


@pytest.mark.parametrize("edit,match", [
    (lambda t: {k: (torch.full_like(v, 1e300, dtype=torch.float64) if "lora_A" in k else v) for k, v in t.items()},
     "too large for float32"),
    (lambda t: {k: (torch.tensor(1.0) if "lora_A" in k else v) for k, v in t.items()}, "0-D"),
    (lambda t: {k: v.to(torch.float8_e4m3fn) for k, v in t.items()}, "float8"),
    (lambda t: {k: torch.full_like(v, float("nan")) for k, v in t.items()}, "NaN")])
def test_peft_tensors_are_checked_like_adapter_files(tmp_path, edit, match):
    d = _peft_dir(tmp_path, tensors_edit=edit)
    m = tiny()
    fails_cleanly(m, lambda: tnpeft.import_peft(m, d), AdapterFileError, match)


def test_quantized_angles_stay_finite_in_float32_and_absurd_bits_are_refused():
    for bits in (130, 200, 1024):
        with pytest.raises(GraphError, match="'bits'") as e:
            tnpeft.adapters.quantum_peft(16, 16, rank=4, bits=bits)
        assert e.value.node in ("U", "V")
    g = tnpeft.adapters.quantum_peft(16, 16, rank=4, bits=52)
    for dtype in (torch.float32, torch.float64):
        module = tnpeft.GraphModule(g, dtype=dtype)
        for node in ("U", "V"):
            u = module.tensor(node).double()
            assert torch.isfinite(u).all()
            torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), atol=1e-5, rtol=0)
        x = torch.randn(3, 16, dtype=dtype)
        assert torch.isfinite(module(x)).all()
    # 20 bits and fewer are rounded in the parameters' dtype, more in float64: same levels
    from tnpeft.params.unitary import quantize_ste

    theta = torch.linspace(-3.1, 3.1, 101)
    for bits in (3, 20, 21, 40, 52):
        step = 2 * torch.pi / 2 ** bits
        want = torch.round(theta.double() / step) * step
        torch.testing.assert_close(quantize_ste(theta, bits).double(), want, atol=1e-6, rtol=0)


def test_the_engines_batch_index_cannot_be_used_by_a_graph():
    with pytest.raises(GraphError, match="reserved") as e:
        tnpeft.Graph([tnpeft.Dense("A", ("__batch__", "in"), (3, 4)), tnpeft.Dense("B", ("out", "__batch__"), (5, 3))])
    assert e.value.node == "A" and e.value.index == "__batch__"
    g = tnpeft.Graph([tnpeft.Dense("A", ("batch", "in"), (3, 4)), tnpeft.Dense("B", ("out", "batch"), (5, 3))])
    gm = GraphModule(g)
    gm = tnpeft.GraphModule(g, dtype=torch.float64)
    x = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(gm(x), x @ gm.dense().T)


def test_merge_of_an_unknown_adapter_raises_like_set_adapter():
    m = inject(tiny(), AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"))
    for call in (lambda: merge(m, ["nope"]), lambda: tnpeft.set_adapter(m, "nope"),
                 lambda: tnpeft.delete_adapter(m, "nope"), lambda: merge(m, ["default", "nope"])):
        fails_cleanly(m, call, AdapterStateError, "'nope'")


# ------------------------------------------------------------------ failed calls must not change the model
def test_an_absurd_rank_is_refused_before_allocation_and_leaves_the_model_alone():
    m = tiny()
    e = fails_cleanly(m, lambda: inject(m, AdapterConfig("lora", ["c_attn"], r=10**9)), BudgetError)
    assert "'A'" in str(e) and C_ATTN in str(e) and not list(tn_layers(m))
    m2 = inject(tiny(), AdapterConfig("lora", ["c_fc"], r=2))
    fails_cleanly(m2, lambda: inject(m2, AdapterConfig("lora", ["c_attn", "c_fc"], r=10**9), adapter_name="big"),
                  BudgetError)


@pytest.mark.parametrize("name", ["a.b", "__class__", "training", "_private", "keys", "", "1x", "forward"])
def test_reserved_and_malformed_adapter_names_are_refused(tmp_path, name):
    _, d = saved(tmp_path)
    m = tiny()
    e = fails_cleanly(m, lambda: load_adapter(m, d, adapter_name=name), ConfigError)
    assert e.field == "adapter_name"
    fails_cleanly(m, lambda: inject(m, AdapterConfig("lora", ["c_attn"], r=1), adapter_name=name), ConfigError)
    fails_cleanly(m, lambda: tnpeft.import_peft(m, d, adapter_name=name), ConfigError)


def test_a_file_whose_adapter_name_is_reserved_is_refused(tmp_path):
    _, d = saved(tmp_path)
    rewrite(d, edit_cfg=lambda c: c.update(adapter_name="__class__"))
    m = tiny()
    fails_cleanly(m, lambda: load_adapter(m, d), AdapterFileError, "adapter_name")


@pytest.mark.parametrize("saved_path", [C_ATTN, "transformer", "transformer.h.0", C_ATTN + ".base_layer",
                                        "lm_head"])
def test_modules_to_save_that_overlap_the_adapted_layers_are_refused(tmp_path, saved_path):
    _, d = saved(tmp_path)
    plain = tiny()

    def edit(t):
        try:
            module = plain.get_submodule(saved_path)
        except AttributeError:
            module = plain.get_submodule(C_ATTN)
        for k, v in module.state_dict().items():
            t[f"modules_to_save.{saved_path}.{k}"] = v
    rewrite(d, edit, lambda c: c["config"].update(modules_to_save=[saved_path]))
    m = tiny()
    if saved_path == "lm_head":      # a whole module apart from the adapted ones: fine
        load_adapter(m, d)
        return
    fails_cleanly(m, lambda: load_adapter(m, d), AdapterFileError, "modules_to_save")
    with pytest.raises(tnpeft.TargetModuleError, match="modules_to_save"):
        inject(tiny(), AdapterConfig("lora", ["c_attn"], r=1, modules_to_save=[saved_path.split(".")[-1]]))


def test_paths_inside_an_adapted_layer_are_refused(tmp_path):
    _, d = saved(tmp_path)
    m = inject(tiny(), AdapterConfig("qpa", ["c_attn"], r=2, chunk_size=16, hidden=[8]))
    for inner in (C_ATTN + ".base_layer", C_ATTN + ".tnpeft_adapters.default.G.mlp.0"):
        dd = tmp_path / inner.replace(".", "_")
        _, dd = saved(tmp_path, dd.name)

        def move(t, inner=inner):
            return {k.replace(C_ATTN, inner) if k.startswith(C_ATTN + ".") else k: v for k, v in t.items()}

        def move_cfg(c, inner=inner):
            c["modules"] = {(inner if p == C_ATTN else p): g for p, g in c["modules"].items()}
        rewrite(dd, move, move_cfg)
        e = fails_cleanly(m, lambda dd=dd: load_adapter(m, dd, adapter_name="other"), AdapterFileError)
        assert "inside the adapted layer" in str(e) or "no module" in str(e)
    # import_peft refuses the same paths
    trained, _ = saved(tmp_path, "p")
    pdir = tmp_path / "peft_inner"
    tnpeft.export_peft(trained, pdir)
    t = load((pdir / "adapter_model.safetensors").read_bytes())
    (pdir / "adapter_model.safetensors").write_bytes(save({k.replace("c_attn.", "c_attn.base_layer."): v
                                                           for k, v in t.items()}))
    fails_cleanly(m, lambda: tnpeft.import_peft(m, pdir, adapter_name="other"), AdapterFileError, "inside")


# ------------------------------------------------------------------ raw tracebacks that are tnpeft errors now
@pytest.mark.parametrize("name", ["training", "forward", "_modules", "__init__", "state_dict", "graph", "dense",
                                  "_x"])
def test_node_names_that_shadow_module_attributes_are_refused(name):
    with pytest.raises(GraphError, match="reserved") as e:
        tnpeft.Graph([tnpeft.Dense(name, ("r", "in"), (2, 4)), tnpeft.Dense("B", ("out", "r"), (4, 2))])
    assert e.value.node == name
    with pytest.raises(GraphError, match="reserved"):
        tnpeft.HyperNetwork(name, ("A",))


def test_every_graph_module_attribute_is_a_reserved_name():
    from tnpeft.graph.names import reserved_name

    g = tnpeft.adapters.lora(4, 4, r=1)
    attrs = set(dir(tnpeft.GraphModule)) | set(vars(tnpeft.GraphModule(g)))
    assert all(reserved_name(a) for a in attrs)


def test_graphs_with_more_than_52_indices_contract_exactly():
    n = 70
    nodes = [tnpeft.Dense("N0", ("in", "i1"), (3, 2), init="normal")]
    nodes += [tnpeft.Dense(f"N{k}", (f"i{k}", f"i{k + 1}"), (2, 2), init="normal") for k in range(1, n - 1)]
    nodes += [tnpeft.Dense(f"N{n - 1}", (f"i{n - 1}", "out"), (2, 4), init="normal")]
    g = tnpeft.Graph(nodes)
    gm = GraphModule(g)
    gm = tnpeft.GraphModule(g, dtype=torch.float64)
    want = gm.tensor("N0")
    for k in range(1, n):
        want = want @ gm.tensor(f"N{k}")
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(gm(x), x @ want)
    torch.testing.assert_close(gm.dense(), want.T)
    # one node with 60 legs, contracted with neighbours holding them all at once
    legs = tuple(f"j{k}" for k in range(60))
    star = tnpeft.Graph([tnpeft.Dense("C", ("in",) + legs, (3,) + (1,) * 60, init="normal"),
                         tnpeft.Dense("O", legs + ("out",), (1,) * 60 + (2,), init="normal")])
    starm = GraphModule(star)
    starm = tnpeft.GraphModule(star, dtype=torch.float64)
    c = starm.tensor("C").reshape(3, 1)
    o = starm.tensor("O").reshape(1, 2)
    torch.testing.assert_close(starm(x), x @ c @ o)


def test_float8_and_integer_weights_are_refused(tmp_path):
    for dtype in (torch.float8_e4m3fn, torch.int32, torch.bool):
        _, d = saved(tmp_path, f"w{str(dtype)[6:]}")
        rewrite(d, lambda t, dtype=dtype: {k: v.to(dtype) for k, v in t.items()})
        m = tiny()
        fails_cleanly(m, lambda d=d, m=m: load_adapter(m, d), AdapterFileError, "dtype")


def test_concurrent_saves_and_loads_never_mix_two_saves(tmp_path):
    model, d = saved(tmp_path)
    stop = threading.Event()
    versions = {}

    def saver():
        m = copy.deepcopy(model)
        k = 0
        while not stop.is_set():
            k += 1
            with torch.no_grad():
                for _, layer in tn_layers(m):
                    layer.tn_adapters["default"].A.weight.fill_(k)
                    layer.tn_adapters["default"].B.weight.fill_(-k)
            save_adapter(m, d)

    th = threading.Thread(target=saver)
    th.start()
    loads, errors = 0, 0
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 3 or loads < 20:
            try:
                m = load_adapter(tiny(), d)
            except AdapterFileError:
                errors += 1
                continue
            loads += 1
            vals = {v.flatten()[0].item() for _, layer in tn_layers(m)
                    for v in (layer.tn_adapters["default"].A.weight, -layer.tn_adapters["default"].B.weight)}
            assert len(vals) == 1 or not vals <= set(range(1, 10**6)), f"mixed saves: {vals}"
            versions[len(versions)] = vals
    finally:
        stop.set()
        th.join()
    assert loads >= 20 and errors <= loads     # a clean error now and then, never mixed weights


def test_saving_onto_a_file_or_under_a_file_names_the_path(tmp_path):
    model, _ = saved(tmp_path)
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(WriteError, match="a_file") as e:
        save_adapter(model, f)
    assert e.value.path == str(f)
    with pytest.raises(WriteError, match="a_file"):
        save_adapter(model, f / "sub")
    (tmp_path / "d" / "adapter_config.json").mkdir(parents=True)
    with pytest.raises(WriteError, match="is a folder"):
        save_adapter(model, tmp_path / "d")
    with pytest.raises(WriteError):
        tnpeft.save_graph(tnpeft.GraphModule(tnpeft.adapters.lora(4, 4, r=1)), f)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path, umask):
    model, _ = saved(tmp_path)
    old = os.umask(umask)
    try:
        save_adapter(model, tmp_path / "out")
        tnpeft.save_graph(tnpeft.GraphModule(tnpeft.adapters.lora(4, 4, r=1)), tmp_path / "g")
        tnpeft.export_peft(model, tmp_path / "p")
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in ("out", "g", "p")]
    assert len(files) == 6
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_a_failed_inject_after_a_half_built_attach_leaves_nothing(monkeypatch):
    # the allocator failing on the second layer: the first must not stay wrapped
    m = tiny()
    real = tnpeft.GraphModule.__init__
    calls = []

    def failing(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        real(self, *a, **kw)

    monkeypatch.setattr(tnpeft.GraphModule, "__init__", failing)
    e = fails_cleanly(m, lambda: inject(m, AdapterConfig("lora", ["c_attn"], r=2)), ConfigError, "allocated")
    assert "transformer.h.1.attn.c_attn" in str(e)
