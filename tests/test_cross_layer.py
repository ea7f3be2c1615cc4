"""Tensors shared across layers: VeRA's frozen projections, MetaTT's and LoRTA's model-wide
tensors. One copy of the values in the model, its state dict and the saved file; counted once (the
closed forms); each layer's update equal to a dense reference built from the shared tensors and
the layer's index; save/load in a fresh process, delete_adapter and add_weighted_adapter."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2
from safetensors.torch import load_file

import tnpeft
from tnpeft.cli import main
from tnpeft.graph import count_parameters
from tnpeft.nn import adapter_modules

TARGETS = ["c_attn", "c_fc"]          # GPT-2: 32 → 96 and 32 → 128, two layers each
IDS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))


def adapted(method, **hp):
    model = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig(method, TARGETS, **hp))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "tn_adapters" in n or "tnpeft_shared" in n:
                p.normal_(0.0, 0.3, generator=g)
    return model


def shared(model, key):
    return model.tnpeft_shared["default"].tensor(key).detach().double()


def reference_logits(model, delta):
    """The base model with ``W += ΔW(layer l, kind μ)`` written into each target by hand."""
    base = tiny_gpt2().double()
    kinds = {k: i for i, k in enumerate(TARGETS)}
    for path, _ in adapter_modules(model).items():
        parts = path.split(".")
        layer, kind = int(parts[2]), parts[-1]
        conv = base.get_submodule(path)
        n, m = conv.weight.shape                               # Conv1D stores (in, out)
        with torch.no_grad():
            conv.weight += delta(layer, kinds[kind], n, m).T
    with torch.no_grad():
        return base(IDS).logits


def test_vera_shares_one_pair_of_projections_sliced_per_layer():
    model = adapted("vera", r=4)
    a, b = shared(model, "vera_A"), shared(model, "vera_B")
    assert a.shape == (4, 32) and b.shape == (128, 4)           # the widest target's sizes
    keys = [k for k in model.state_dict() if "vera_A" in k or "vera_B" in k or k.endswith((".A.weight", ".B.weight"))]
    assert keys == ["tnpeft_shared.default.vera_A.weight", "tnpeft_shared.default.vera_B.weight"]
    mods = adapter_modules(model)

    def delta(layer, kind, n, m):
        mod = mods[f"transformer.h.{layer}.{'attn' if kind == 0 else 'mlp'}.{TARGETS[kind]}"]
        lb, ld = mod.tensor("b").detach().double(), mod.tensor("d").detach().double()
        return lb[:, None] * b[:m] @ (ld[:, None] * a[:, :n])
    with torch.no_grad():
        got = model.double()(IDS).logits
    torch.testing.assert_close(got, reference_logits(model, delta), atol=1e-9, rtol=0)
    # counted once, frozen projections not at all: Σ (M + r) over the four layers
    graphs = {p: m.graph for p, m in mods.items()}
    assert tnpeft.trainable_parameters(model).trainable == count_parameters(graphs) == 2 * (96 + 4) + 2 * (128 + 4)


def test_metatt_is_one_tensor_train_over_layer_and_matrix_counted_from_one_graph():
    r = 3
    model = adapted("metatt", r=r)
    g1, g2, g3, g4 = (shared(model, f"G{k}") for k in range(1, 5))
    assert g2.shape == (r, 2, r) and g3.shape == (r, 2, r)     # L = 2 layers, 2 projection kinds
    scale = 16.0 / r

    def delta(layer, kind, n, m):
        return scale * torch.einsum("ia,ab,bc,co->oi", g1[:n], g2[:, layer], g3[:, kind], g4[:, :m])
    with torch.no_grad():
        got = model.double()(IDS).logits
    torch.testing.assert_close(got, reference_logits(model, delta), atol=1e-9, rtol=0)
    one = next(iter(adapter_modules(model).values())).graph
    closed = r * 32 + (2 + 2) * r * r + r * 128                 # r N + (L + M) r² + r M_out
    graphs = {p: m.graph for p, m in adapter_modules(model).items()}
    assert one.num_parameters() == count_parameters(graphs) == tnpeft.trainable_parameters(model).trainable == closed


def test_lortta_is_one_cp_tensor_over_out_head_dim_matrix_layer():
    r, heads = 3, 4
    model = adapted("lortta", r=r, heads=heads)
    a, ch, b, cm, cl = (shared(model, k) for k in ("A", "CH", "B", "CM", "CL"))

    def delta(layer, kind, n, m):
        w = torch.einsum("or,hr,rd,r,r->ohd", a[:m], ch, b, cm[kind], cl[layer])
        return (16.0 / r) * w.reshape(m, n)
    with torch.no_grad():
        got = model.double()(IDS).logits
    torch.testing.assert_close(got, reference_logits(model, delta), atol=1e-9, rtol=0)
    graphs = {p: m.graph for p, m in adapter_modules(model).items()}
    assert count_parameters(graphs) == tnpeft.trainable_parameters(model).trainable == r * (128 + 8 + heads + 2 + 2)


@pytest.mark.parametrize("method,hp", [("vera", {"r": 4}), ("metatt", {"r": 3})])
def test_saved_once_and_reloaded_in_a_fresh_process(method, hp, tmp_path, capsys):
    model = adapted(method, **hp)
    with torch.no_grad():
        want = model(IDS).logits
    tnpeft.save_adapter(model, tmp_path / "a")
    keys = list(load_file(str(tmp_path / "a" / "adapter_model.safetensors")))
    n_shared = len(model.tnpeft_shared["default"].specs)
    assert sum(k.startswith("tnpeft_shared.") for k in keys) == n_shared
    assert not any(k.endswith((".A.weight", ".B.weight", ".G1.weight")) and not k.startswith("tnpeft_shared.")
                   for k in keys)
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import tiny_gpt2
        import tnpeft
        m = tnpeft.load_adapter(tiny_gpt2(), {str(tmp_path / 'a')!r})
        ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.save(m(ids).logits, {str(tmp_path / 'y.pt')!r})
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), want, atol=0, rtol=0)
    assert tnpeft.verify(tmp_path / "a").ok                   # the saved folder, shared tensors read once
    assert main(["count", "--adapter-dir", str(tmp_path / "a"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == tnpeft.trainable_parameters(model).trainable


def test_delete_add_weighted_merge_with_shared_tensors():
    model = adapted("metatt", r=3)
    tnpeft.inject(model, tnpeft.AdapterConfig("vera", TARGETS, r=4), adapter_name="v")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".v." in n or "tnpeft_shared.v." in n:
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(2))
    assert sorted(model.tnpeft_shared) == ["default", "v"]
    report = tnpeft.add_weighted_adapter(model, ["default", "v"], [1.0, -0.5], "sum", combination_type="cat")
    assert report.exact
    for path, mod in adapter_modules(model, "sum").items():
        want = adapter_modules(model)[path].dense(scaled=True) - 0.5 * adapter_modules(model, "v")[path].dense(scaled=True)
        torch.testing.assert_close(mod.dense(scaled=True), want, atol=1e-6, rtol=0)
    tnpeft.set_adapter(model, "default")
    with torch.no_grad():
        y = model(IDS).logits
        tnpeft.merge(model)
        torch.testing.assert_close(model(IDS).logits, y, atol=1e-5, rtol=0)
        tnpeft.unmerge(model)
    tnpeft.delete_adapter(model, "v")
    assert sorted(model.tnpeft_shared) == ["default"] and "v" not in tnpeft.adapter_names(model)
    tnpeft.delete_adapter(model, "default")
    assert "tnpeft_shared" not in dict(model.named_children())
    plain = copy.deepcopy(model)
    assert not any("tnpeft_shared" in k for k in plain.state_dict())


def test_output_maps_combine_and_export_through_the_weights(tmp_path):
    # IA³ (output mode, scaling the bias) and BOFT (a post map leaving it) on GPT-2: merged exports carry
    # the scaled bias; an additive combination refuses a map that changes the bias
    model = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("ia3", ["c_attn"]))
    tnpeft.inject(model, tnpeft.AdapterConfig("boft", ["c_attn"], block_size=4), adapter_name="b")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "tn_adapters" in n or n.endswith("c_attn.base_layer.bias"):    # GPT-2's biases start at zero
                p.normal_(1.0 if n.endswith(("l.weight", "s.weight")) else 0.0, 0.3,
                          generator=torch.Generator().manual_seed(len(n)))
    for name in ("default", "b"):
        tnpeft.set_adapter(model, name)
        with torch.no_grad():
            want = model(IDS).logits
        out = tnpeft.export_peft(model, tmp_path / name, adapter_name=name)
        assert out.merged
        plain = tiny_gpt2()
        plain.load_state_dict(load_file(str(tmp_path / name / "model.safetensors")), strict=False)
        with torch.no_grad():
            torch.testing.assert_close(plain(IDS).logits, want, atol=1e-5, rtol=0)
    with pytest.raises(tnpeft.NotMergeableError, match="bias"):
        tnpeft.add_weighted_adapter(model, ["default"], [1.0], "c", combination_type="cat")
    report = tnpeft.add_weighted_adapter(model, ["b"], [1.0], "c", combination_type="cat")
    tnpeft.set_adapter(model, "c")
    with torch.no_grad():
        got = model(IDS).logits
    tnpeft.set_adapter(model, "b")
    with torch.no_grad():
        torch.testing.assert_close(got, model(IDS).logits, atol=1e-5, rtol=0)
    assert report.exact
