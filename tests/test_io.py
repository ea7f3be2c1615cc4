"""Saving and loading: exact round trips, atomic writes, and clear errors on bad files that leave
the model untouched."""

import copy
import json
import pathlib

import pytest
import torch
from conftest import tiny_gpt2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tnpeft
from tnpeft.errors import AdapterFileError
from tnpeft.nn import tn_layers

TARGETS = ["c_attn", "c_fc"]


def trained(tmp_path=None):
    base = tiny_gpt2()
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("lora", TARGETS, r=3, alpha=6, init_b="normal"))
    return base, m


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(model, snap):
    sd = model.state_dict()
    return set(sd) == set(snap) and all(torch.equal(sd[k], v) for k, v in snap.items())


def test_save_load_is_exact(tmp_path):
    base, m = trained()
    tnpeft.save_adapter(m, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    fresh = tnpeft.load_adapter(copy.deepcopy(base), tmp_path / "a")
    a, b = dict(tn_layers(m)), dict(tn_layers(fresh))
    assert a.keys() == b.keys()
    for k in a:
        for (n1, p1), (n2, p2) in zip(a[k].tn_adapters["default"].state_dict().items(),
                                      b[k].tn_adapters["default"].state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2)
    x = torch.randint(0, 97, (2, 9))
    assert torch.equal(fresh(x).logits, m(x).logits)
    assert tnpeft.trainable_parameters(fresh).trainable == 0  # is_trainable=False, like peft
    tnpeft.load_adapter(copy.deepcopy(base), tmp_path / "a", is_trainable=True)


def test_load_into_existing_adapter_replaces_values(tmp_path):
    base, m = trained()
    tnpeft.save_adapter(m, tmp_path / "a")
    other = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("lora", TARGETS, r=3, alpha=6))
    tnpeft.load_adapter(other, tmp_path / "a", is_trainable=True)
    x = torch.randint(0, 97, (2, 9))
    assert torch.equal(other(x).logits, m(x).logits)


def test_custom_graph_loads_without_its_builder(tmp_path):
    def two_stage(n, m, r=2):
        return tnpeft.Graph([tnpeft.Dense("A", ("r", "in"), (r, n)),
                             tnpeft.Nonlinear.elementwise("f", {"r": r}, ("s",), fn="tanh"),
                             tnpeft.Dense("B", ("out", "s"), (m, r), init="normal")])

    base = tiny_gpt2()
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig(two_stage, ["c_fc"]))
    tnpeft.save_adapter(m, tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "adapter_config.json").read_text())
    assert cfg["config"]["method"] == "custom:two_stage"
    fresh = tnpeft.load_adapter(copy.deepcopy(base), tmp_path / "c")
    x = torch.randint(0, 97, (2, 9))
    assert torch.equal(fresh(x).logits, m(x).logits)


def test_modules_to_save_are_trained_and_saved(tmp_path):
    base = tiny_gpt2()
    cfg = tnpeft.AdapterConfig("lora", ["c_attn"], modules_to_save=["ln_f"], r=2, init_b="normal")
    m = tnpeft.inject(copy.deepcopy(base), cfg)
    assert m.transformer.ln_f.weight.requires_grad
    with torch.no_grad():
        m.transformer.ln_f.weight.mul_(1.5)
    tnpeft.save_adapter(m, tmp_path / "s")
    fresh = tnpeft.load_adapter(copy.deepcopy(base), tmp_path / "s")
    assert torch.equal(fresh.transformer.ln_f.weight, m.transformer.ln_f.weight)


def corrupt_cases(d: pathlib.Path):
    w = d / "adapter_model.safetensors"
    c = d / "adapter_config.json"
    data, cfg = w.read_bytes(), json.loads(c.read_text())
    yield "truncated weights", lambda: w.write_bytes(data[: len(data) // 2]), "checksum"
    yield "flipped byte", lambda: w.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:]), "checksum"
    yield "truncated config", lambda: c.write_text(c.read_text()[:50]), "not valid JSON"
    yield "missing weights", lambda: w.unlink(), "does not exist"
    yield "wrong format", lambda: c.write_text(json.dumps({**cfg, "format": "other"})), "format"
    bad = json.loads(json.dumps(cfg))
    first = next(iter(bad["modules"]))
    bad["modules"][first]["nodes"][0]["sizes"][0] = 5  # rank 3 → 5 in both nodes: a valid graph,
    bad["modules"][first]["nodes"][1]["sizes"][1] = 5  # but the stored tensors have the old shape
    yield "graph shape edited", lambda: c.write_text(json.dumps(bad)), "shape"
    bad2 = json.loads(json.dumps(cfg))
    bad2["modules"]["transformer.h.9.attn.c_attn"] = bad2["modules"][first]
    yield "unknown module", lambda: c.write_text(json.dumps(bad2)), "transformer.h.9"
    bad3 = json.loads(json.dumps(cfg))
    bad3["modules"][first]["nodes"][0]["kind"] = "pickle"
    yield "unknown node kind", lambda: c.write_text(json.dumps(bad3)), "pickle"


@pytest.mark.parametrize("case", range(8))
def test_bad_files_give_clear_errors_and_leave_model_untouched(tmp_path, case):
    base, m = trained()
    tnpeft.save_adapter(m, tmp_path / "a")
    name, spoil, msg = list(corrupt_cases(tmp_path / "a"))[case]
    spoil()
    target = copy.deepcopy(base)
    snap = snapshot(target)
    with pytest.raises(AdapterFileError, match=msg):
        tnpeft.load_adapter(target, tmp_path / "a")
    assert same(target, snap), name
    assert not list(tn_layers(target))


def test_mismatched_model_is_refused(tmp_path):
    _, m = trained()
    tnpeft.save_adapter(m, tmp_path / "a")
    from transformers import GPT2Config, GPT2LMHeadModel

    other = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=48, n_head=2, vocab_size=97, n_positions=32))
    snap = snapshot(other)
    with pytest.raises(AdapterFileError, match="maps 48"):
        tnpeft.load_adapter(other, tmp_path / "a")
    assert same(other, snap)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), mode=st.sampled_from(["cut", "flip", "extend"]))
def test_hypothesis_damaged_weights_never_load(tmp_path_factory, cut, flip, mode):
    base, m = trained()
    d = tmp_path_factory.mktemp("a")
    tnpeft.save_adapter(m, d)
    w = d / "adapter_model.safetensors"
    data = w.read_bytes()
    if mode == "cut":
        data = data[: cut % len(data)]
    elif mode == "flip":
        i = flip % len(data)
        data = data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:]
    else:
        data = data + b"\0" * (1 + cut % 64)
    w.write_bytes(data)
    target = copy.deepcopy(base)
    snap = snapshot(target)
    with pytest.raises(AdapterFileError):
        tnpeft.load_adapter(target, d)
    assert same(target, snap)


def test_checksum_is_not_the_only_guard(tmp_path):
    # a consistent file (checksum updated) with a wrong shape or dtype is still refused
    from safetensors.torch import load, save

    from tnpeft.fileio import sha256

    base, m = trained()
    d = tmp_path / "a"
    tnpeft.save_adapter(m, d)
    tensors = load((d / "adapter_model.safetensors").read_bytes())
    k = next(iter(tensors))
    for bad_value, msg in ((torch.zeros(1, 1), "shape"), (torch.zeros_like(tensors[k], dtype=torch.int32), "dtype"),
                           (torch.full_like(tensors[k], float("nan")), "NaN")):
        blob = save({**tensors, k: bad_value})
        (d / "adapter_model.safetensors").write_bytes(blob)
        cfg = json.loads((d / "adapter_config.json").read_text())
        cfg["weights_sha256"] = sha256(blob)
        (d / "adapter_config.json").write_text(json.dumps(cfg))
        target = copy.deepcopy(base)
        with pytest.raises(AdapterFileError, match=msg):
            tnpeft.load_adapter(target, d)
        assert not list(tn_layers(target))


def test_interrupted_save_keeps_previous_adapter(tmp_path, monkeypatch):
    base, m = trained()
    d = tmp_path / "a"
    tnpeft.save_adapter(m, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    import tnpeft.fileio as fio

    real = fio.os.replace

    def crash(src, dst):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(fio.os, "replace", crash)
    with torch.no_grad():
        next(iter(m.parameters())).add_(0)
    with pytest.raises(KeyboardInterrupt):
        tnpeft.save_adapter(m, d)
    monkeypatch.setattr(fio.os, "replace", real)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # no temp files left, old files intact
    tnpeft.load_adapter(copy.deepcopy(base), d)


def test_no_pickle_anywhere_in_the_package():
    root = pathlib.Path(tnpeft.__file__).parent
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, f


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_a_save_killed_at_any_rename_leaves_an_adapter_that_loads(tmp_path, monkeypatch, crash_at):
    base, m = trained()
    d = tmp_path / "a"
    tnpeft.save_adapter(m, d)
    old = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for _, layer in tn_layers(m):
            layer.tn_adapters["default"].B.weight.add_(1.0)
    import tnpeft.fileio as fio

    real, calls = fio.os.replace, []

    def dying(src, dst):
        calls.append(dst)
        if len(calls) == crash_at:
            raise KeyboardInterrupt("killed")
        return real(src, dst)

    monkeypatch.setattr(fio.os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        tnpeft.save_adapter(m, d)
    monkeypatch.setattr(fio.os, "replace", real)
    fresh = tnpeft.load_adapter(copy.deepcopy(base), d)  # the previous adapter, intact
    m.load_state_dict(old)
    x = torch.randint(0, 97, (2, 9))
    assert torch.equal(fresh(x).logits, m(x).logits)
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    tnpeft.save_adapter(m, d)  # and the next save completes and tidies up
    assert sorted(p.name for p in d.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
