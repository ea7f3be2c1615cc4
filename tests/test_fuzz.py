"""Fuzzing of bad input: adapter files (structured edits of the JSON, consistent but wrong tensors),
graphs with the newer node kinds, and adapter configs. Every case must end in tnpeft's own error
(never a raw traceback) and leave the model untouched."""

from __future__ import annotations

import copy
import json

import torch
from conftest import tiny_gpt2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save

import tnpeft
from tnpeft.errors import TNPeftError
from tnpeft.fileio import sha256
from tnpeft.graph import Graph, Nonlinear
from tnpeft.nn.model import tn_layers

ADAPTERS = [("lora", {"r": 2}), ("qpa", {"r": 2, "chunk_size": 16, "qnn_layers": 2, "hidden": [8]}),
            ("qwthn", {"r": 4, "bond": 2}), ("quantum_peft", {"rank": 2})]
_SAVED: dict = {}


def _saved(kind: int):
    if kind not in _SAVED:
        name, hp = ADAPTERS[kind]
        m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig(name, ["c_attn"], **hp))
        _, state = tnpeft.nn.saving.adapter_state(m)
        import tempfile

        from tnpeft.nn.saving import save_adapter
        d = tempfile.mkdtemp()
        save_adapter(m, d)
        cfg = json.loads(open(f"{d}/adapter_config.json").read())
        blob = open(f"{d}/adapter_model.safetensors", "rb").read()
        _SAVED[kind] = (cfg, blob)
    return _SAVED[kind]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0, -1, 10**12, 2**63]),
                        st.floats(allow_nan=True), st.text(max_size=6), st.sampled_from(["__import__('os')", "pickle"]),
                        st.lists(st.integers(0, 4), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                  max_size=2))


def _load_fails_cleanly(tmp, cfg, blob) -> None:
    (tmp / "adapter_config.json").write_text(json.dumps(cfg))
    (tmp / "adapter_model.safetensors").write_bytes(blob)
    target = tiny_gpt2()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    try:
        tnpeft.load_adapter(target, tmp)
    except TNPeftError as e:
        assert str(e)                                             # a message, naming what is wrong
        assert not list(tn_layers(target))                        # no half-built adapter
        after = target.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        return
    # the edit was harmless (e.g. meta data): the model must then hold a working adapter
    assert list(tn_layers(target))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.integers(0, len(ADAPTERS) - 1), pick=st.integers(0, 10**6), value=JSON_VALUES,
       delete=st.booleans())
def test_structured_edits_of_the_config_never_leak_raw_errors(tmp_path_factory, kind, pick, value, delete):
    cfg, blob = _saved(kind)
    cfg = copy.deepcopy(cfg)
    paths = [p for p in _paths(cfg) if p]
    path = paths[pick % len(paths)]
    parent = cfg
    for k in path[:-1]:
        parent = parent[k]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    if path[0] != "weights_sha256":
        cfg["weights_sha256"] = sha256(blob)
    _load_fails_cleanly(tmp_path_factory.mktemp("a"), cfg, blob)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.integers(0, len(ADAPTERS) - 1), pick=st.integers(0, 10**6),
       edit=st.sampled_from(["drop", "extra", "shape", "dtype", "inf", "scalar", "huge"]))
def test_consistent_but_wrong_weight_files_are_refused(tmp_path_factory, kind, pick, edit):
    cfg, blob = _saved(kind)
    tensors = load(blob)
    k = sorted(tensors)[pick % len(tensors)]
    t = tensors[k]
    if edit == "drop":
        del tensors[k]
    elif edit == "extra":
        tensors[k + "_extra"] = t.clone()
    elif edit == "shape":
        tensors[k] = torch.zeros(t.numel() + 1)
    elif edit == "dtype":
        tensors[k] = t.to(torch.int64)
    elif edit == "inf":
        tensors[k] = torch.full_like(t, float("inf"))
    elif edit == "scalar":
        tensors[k] = torch.tensor(1.0)
    else:
        tensors[k] = torch.zeros(4096, 64)
    new = save(tensors)
    cfg = {**copy.deepcopy(cfg), "weights_sha256": sha256(new)}
    tmp = tmp_path_factory.mktemp("w")
    (tmp / "adapter_config.json").write_text(json.dumps(cfg))
    (tmp / "adapter_model.safetensors").write_bytes(new)
    target = tiny_gpt2()
    try:
        tnpeft.load_adapter(target, tmp)
    except tnpeft.AdapterFileError as e:
        assert k.split(".")[-1] in str(e) or "missing" in str(e) or "unexpected" in str(e)
        assert not list(tn_layers(target))
        return
    raise AssertionError(f"a {edit} edit of {k!r} was loaded")


def test_absurd_sizes_are_refused_before_anything_is_allocated(tmp_path):
    cfg, blob = _saved(2)
    cfg = copy.deepcopy(cfg)
    path = next(iter(cfg["modules"]))
    for n in cfg["modules"][path]["nodes"]:
        n["sizes"] = [10**9 if s > 1 else s for s in n["sizes"]]
    cfg["weights_sha256"] = sha256(blob)
    _load_fails_cleanly(tmp_path, cfg, blob)
    g = Graph.from_json(json.dumps(tnpeft.adapters.lora(10**6, 10**6, r=10**4).to_dict()))
    assert g.num_parameters() == 2 * 10**10                           # counted, never allocated


@settings(max_examples=80, deadline=None)
@given(options=st.dictionaries(st.sampled_from(["qubits", "layers", "entangler", "readout", "fusion", "depth"]),
                               st.one_of(st.integers(-2, 30), st.text(max_size=5), st.none(), st.booleans()),
                               max_size=4),
       n_in=st.integers(1, 9), n_out=st.integers(1, 9))
def test_qnn_node_options_fail_with_graph_errors(options, n_in, n_out):
    try:
        Nonlinear.qnn("Q", {"h": n_in}, {"g": n_out}, **options)
    except tnpeft.GraphError as e:
        assert e.node == "Q"


@settings(max_examples=80, deadline=None)
@given(gen=st.dictionaries(st.sampled_from(["name", "kind", "outputs", "options", "x"]),
                           st.one_of(st.text(max_size=4), st.lists(st.sampled_from(["A", "B", "C", 3]), max_size=3),
                                     st.dictionaries(st.sampled_from(["chunk_size", "layers", "preset", "hidden"]),
                                                     st.one_of(st.integers(-1, 50), st.text(max_size=3),
                                                               st.lists(st.integers(-1, 9), max_size=2)), max_size=3),
                                     st.none()), max_size=5))
def test_generator_dicts_fail_with_graph_errors(gen):
    d = tnpeft.adapters.qpa(6, 5, r=1, chunk_size=4).to_dict()
    d["generators"] = [gen]
    try:
        Graph.from_dict(d)
    except tnpeft.GraphError:
        pass


@settings(max_examples=80, deadline=None)
@given(adapter=st.sampled_from(["lora", "qpa", "qwthn", "quantum_peft", "adalora", "mpo", "nope"]),
       hp=st.dictionaries(st.sampled_from(["r", "rank", "alpha", "chunk_size", "bond", "cores", "fusion", "layers",
                                           "qnn_layers", "preset", "param", "bogus"]),
                          st.one_of(st.integers(-2, 9), st.floats(allow_nan=True), st.text(max_size=4), st.none(),
                                    st.booleans(), st.lists(st.integers(), max_size=2)), max_size=3))
def test_random_adapter_configs_fail_with_config_errors(adapter, hp):
    model = tiny_gpt2()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        tnpeft.inject(model, tnpeft.AdapterConfig(adapter, ["c_fc"], **hp))
    except TNPeftError as e:
        assert str(e)
        assert not list(tn_layers(model))
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
