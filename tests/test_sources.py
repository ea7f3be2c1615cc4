"""``tnpeft.graph_modules``: every tool that takes "an adapter" reads it the same way — a graph, a
module, a mapping, a model with injected adapters, a saved adapter folder, a graph folder or a
graph JSON file — and files written by tnpeft 0.1 (older field and parameter names) still load."""

import json
import pickle

import pytest
import torch
from conftest import tiny_gpt2

import tnpeft
from tnpeft.adapters import lora, qpa
from tnpeft.errors import AdapterFileError, AdapterStateError, ConfigError, GraphError
from tnpeft.graph import Graph
from tnpeft.runtime import GraphModule
from tnpeft.storage import graph_modules, load_graph, save_graph


def same_values(a: GraphModule, b: GraphModule) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].double(), sb[k].double()) for k in sa)


def test_every_kind_of_source_gives_the_same_modules(tmp_path):
    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"))
    from_model = graph_modules(m)
    assert sorted(from_model) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    tnpeft.save_adapter(m, tmp_path / "a")
    from_dir = graph_modules(tmp_path / "a")
    assert sorted(from_dir) == sorted(from_model)
    assert all(same_values(from_dir[p], from_model[p]) for p in from_model)
    assert all(v.param_dtype == torch.float64 for v in from_dir.values())

    g = lora(6, 4, r=2, init_b="normal")
    gm = GraphModule(g)
    fresh = graph_modules(g)[""]                     # a graph holds no values: a new module of its default init
    assert fresh is not gm and fresh.graph == g and fresh is not graph_modules(g)[""]
    assert graph_modules(gm) == {"": gm}
    assert graph_modules({"x": gm})["x"] is gm
    save_graph(gm, tmp_path / "g")
    assert same_values(graph_modules(tmp_path / "g")[""], gm)
    (tmp_path / "g.json").write_text(g.to_json())
    assert graph_modules(tmp_path / "g.json")[""].graph == g


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(AdapterStateError, match="no adapter named 'nope'"):
        graph_modules(tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora", ["c_attn"])), "nope")
    with pytest.raises(ConfigError, match="cannot read an adapter from a int"):
        graph_modules(3)
    with pytest.raises(ConfigError, match="module 'x'"):
        graph_modules({"x": 3})
    with pytest.raises(AdapterFileError, match="neither a saved adapter folder"):
        graph_modules(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "tnpeft.graph", "version": 1, "nodes": []}))
    with pytest.raises(AdapterFileError, match="bad.json"):
        graph_modules(tmp_path / "bad.json")


def test_a_graph_is_a_value_shared_by_independent_modules():
    g = lora(6, 4, r=2)
    a, b = GraphModule(g), GraphModule(g, dtype=torch.float64)
    assert b.dense().dtype == torch.float64 and a.graph is b.graph
    with torch.no_grad():
        a.B.weight.fill_(1.0)                        # two callers of one graph share no tensors
    assert b.B.weight.abs().sum() == 0 and a.B.weight.abs().sum() > 0
    with pytest.raises(GraphError, match="cannot be changed"):
        g.scale = 2.0
    with pytest.raises(TypeError):
        g.nodes["A"] = g.nodes["B"]                  # read-only views
    assert g == lora(6, 4, r=2) and hash(g) == hash(lora(6, 4, r=2)) and len({g, lora(6, 4, r=2)}) == 1
    assert g.replace(scale=2.0).scale == 2.0 != g.scale
    assert pickle.loads(pickle.dumps(g)) == g


def test_files_of_tnpeft_0_1_still_load(tmp_path):
    # an adapter saved before the renames: config "adapter", skew factor "generator", QPA "generators"
    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("oft", ["c_fc"], block_size=8))
    for _, layer in tnpeft.nn.tn_layers(m):
        with torch.no_grad():
            layer.tn_adapters["default"].R1.skew_factor.normal_(0, 0.1)
    d = tnpeft.save_adapter(m, tmp_path / "new")
    cfg = json.loads((d / "adapter_config.json").read_text())
    from safetensors.torch import load_file, save

    tensors = {k.replace(".skew_factor", ".generator"): v for k, v in load_file(d / "adapter_model.safetensors").items()}
    blob = save(tensors, metadata={"format": "pt"})
    old = tmp_path / "old"
    old.mkdir()
    (old / "adapter_model.safetensors").write_bytes(blob)
    import hashlib

    cfg["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    cfg["config"]["adapter"] = cfg["config"].pop("method")
    for gd in cfg["modules"].values():
        gd["meta"] = {"adapter": "oft"}
    (old / "adapter_config.json").write_text(json.dumps(cfg))
    fresh = tnpeft.load_adapter(tiny_gpt2(), old)
    ids = torch.randint(0, 97, (2, 8))
    torch.testing.assert_close(fresh(ids).logits, m(ids).logits)
    assert tnpeft.nn.adapter_method(fresh) == "oft"

    q = qpa(8, 8, r=2, chunk_size=4, hidden=[4])
    d = q.to_dict()
    d["generators"] = d.pop("hypernetworks")
    assert Graph.from_dict(d) == q
    save_graph(GraphModule(q), tmp_path / "q")
    assert load_graph(tmp_path / "q").graph == q
    with pytest.raises(GraphError, match="both present"):
        Graph.from_dict({**d, "hypernetworks": d["generators"]})
