"""A stateful property test of the adapter lifecycle (hypothesis ``RuleBasedStateMachine``).

Random sequences of inject / set_adapter / merge / unmerge / save / load / disable / delete /
train step / failing call / call interrupted half-way / export to peft (or a merged model) /
convert (a saved adapter loaded into a fresh model and exported) / add_weighted_adapter run on a
tiny GPT-2; saves and exports go to new folders or to folders written before, of any kind. After every step the
model is checked against a plain reference of what it must be, computed without tnpeft's
interpreters: each adapter's values (kept by the reference, and only read back from the model
after it was trained), the base weights ``W₀ + Σ_merged s·ΔW`` with ``ΔW`` multiplied out by hand
(``B A`` for LoRA, ``P diag(λ) Q`` for a hand-written three-node graph), the logits of a plain copy
of the model whose weights are ``W₀ + Σ_{active ∪ merged} s·ΔW``, which adapters exist, run, are
merged and are trainable, and that every module is in the model's eval mode. A call that fails —
by a tnpeft error or a ``KeyboardInterrupt`` injected inside it — must leave every parameter,
buffer, ``requires_grad`` flag, module, mode and tnpeft record exactly as it was. Every folder
written holds one kind of checkpoint, always loadable and equal to the reference of what was
written last: a saved adapter's values, a peft export's ``s·B A`` per module (the update
multiplied out by hand), a merged export's weights (``W₀`` with the merged adapters, then the
multiplicative one, by hand).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import pytest
import torch
from conftest import tiny_gpt2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from safetensors.torch import load, load_file, save
from snapshots import same_snapshot, snapshot

import tnpeft
import tnpeft.nn.model_merge as merging
from tnpeft.errors import AdapterFileError, AdapterStateError, TNPeftError, WriteError
from tnpeft.fileio import MODEL, PEFT_ADAPTER, TNPEFT_ADAPTER, checkpoint_kinds, sha256
from tnpeft.nn import TNLinear, tn_layers
from tnpeft.nn.transaction import CONFIGS_ATTR
from tnpeft.storage.adapter_folder import read_adapter, split_adapter_state
from tnpeft.train.convert import convert_adapter

NAMES = ["a", "b", "c"]
SOME_NAME = st.sampled_from(NAMES * 4 + ["nope"])     # now and then a name the model does not have
TARGETS = {"attn": ["c_attn"], "mlp": ["c_fc"], "both": ["c_attn", "c_proj"]}
IDS = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(5))
LR = 0.05
#: what the runs exercised (printed at the end): rules, outcomes of loads, failures, interrupts
STATS: collections.Counter = collections.Counter()


def svd(n_in: int, n_out: int, k: int = 2) -> tnpeft.Graph:
    """P diag(λ) Q with every node non-zero, written by hand (no registered builder)."""
    return tnpeft.Graph([tnpeft.Dense("Q", ("k", "in"), (k, n_in), init="normal"),
                         tnpeft.Diagonal("L", ("k",), (k,), init="normal"),
                         tnpeft.Dense("P", ("out", "k"), (n_out, k), init="normal")], scale=0.5, name="svd")


METHODS = {
    "lora1": (lambda t: tnpeft.AdapterConfig("lora", t, r=1, alpha=2.0, init_b="normal")),
    "lora2": (lambda t: tnpeft.AdapterConfig("lora", t, r=2, alpha=3.0, init_b="normal", dropout=0.1)),
    "svd": (lambda t: tnpeft.AdapterConfig(svd, t)),
    "oft": (lambda t: tnpeft.AdapterConfig("oft", t, block_size=8)),     # multiplicative: W' = W D
}
INPUT_MODE = {"oft"}


def reference_rotation(v: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """OFT's ``D`` (n × n, ``y = W (D x)``): the block-diagonal matrix of its frames, assembled by hand
    (the frames come from their parametrization)."""
    module = tnpeft.GraphModule(tnpeft.adapters.oft(n, n, block_size=8), dtype=torch.float64)
    module.load_state_dict({k: t.double() for k, t in v.items()})
    with torch.no_grad():
        return torch.block_diag(*module.tensor("R1"))


def reference_delta(method: str, v: dict[str, torch.Tensor]) -> torch.Tensor:
    """``s · ΔW`` (out × in) from the adapter's values, multiplied out by hand (a combination's
    graph, scale 1, is LoRA-shaped or, summing the three-node graphs, three-node)."""
    if method == "combo":
        if "A.weight" in v:
            return v["B.weight"].double() @ v["A.weight"].double()
        return (v["P.weight"].double() * v["L.weight"].double()) @ v["Q.weight"].double()
    if method == "lora1":
        return 2.0 * (v["B.weight"].double() @ v["A.weight"].double())
    if method == "lora2":
        return 1.5 * (v["B.weight"].double() @ v["A.weight"].double())
    return 0.5 * (v["P.weight"].double() * v["L.weight"].double()) @ v["Q.weight"].double()


def _layout(a: dict) -> tuple:
    """What a saved adapter must share with the model's adapter to load into it: the method, the
    paths and, per path, the tensors' names and shapes in order (combinations differ in rank)."""
    return a["method"], a["paths"], [[(k, tuple(v.shape)) for k, v in a["values"][p].items()] for p in a["paths"]]


class _RaiseAt:
    """Wrap ``owner.attr`` so that its ``k``-th call runs and then raises KeyboardInterrupt."""

    def __init__(self, owner, attr: str, k: int):
        self.owner, self.attr, self.k, self.calls = owner, attr, k, 0
        self.real = getattr(owner, attr)

    def __enter__(self):
        real, me = self.real, self

        def wrapped(*a, **kw):
            out = real(*a, **kw)
            me.calls += 1
            if me.calls == me.k:
                raise KeyboardInterrupt("injected")
            return out

        setattr(self.owner, self.attr, wrapped)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.attr, self.real)


class Lifecycle(RuleBasedStateMachine):
    steps = 0

    def __init__(self):
        super().__init__()
        self.model = tiny_gpt2()
        self.plain = tiny_gpt2()            # the reference model: plain weights set by hand
        self.tmp = tempfile.mkdtemp(prefix="tnpeft-lifecycle-")
        self.w0 = {n: m.weight.detach().clone() for n, m in self.model.named_modules()
                   if type(m).__name__ == "Conv1D"}
        self.adapters: dict[str, dict] = {}      # name → {"method", "paths", "values": {path: {key: tensor}}}
        self.order: list[str] = []               # names in the order they were added
        self.active: list[str] = []
        self.merged: dict[str, list[str]] = {}  # path → merged names, in the order they were merged
        self.frozen: set[str] = set()            # loaded with is_trainable=False and not activated since
        self.untouched = True                    # no call has frozen the base model yet
        self.saved: list[tuple[str, str, dict]] = []   # (folder, name, adapter record)
        self.folders: dict[str, dict] = {}       # every folder written: its kind and what it must hold
        self.touched: set[str] = set()           # folders a step wrote to (or was refused to write to)
        self.n_dirs = 0

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ reference helpers
    def _values_from_model(self, name: str) -> dict[str, dict[str, torch.Tensor]]:
        return {p: {k: v.detach().clone() for k, v in layer.tn_adapters[name].state_dict().items()}
                for p, layer in tn_layers(self.model) if name in layer.tn_adapters}

    def _activate(self, names: list[str]) -> None:
        """set_adapter: adapters it leaves out are unmerged (on a layer with a multiplicative adapter
        merged: all of them), and a layer that would run unmerged adapters next to merged ones when
        one of them is multiplicative is unmerged whole."""
        self.untouched = False
        self.active = list(names)
        for path, merged in self.merged.items():
            if any(n not in names for n in merged):
                self._unmerge(path, [n for n in merged if n not in names])
            merged = self.merged[path]
            pending = [n for n in names if path in self.adapters[n]["paths"] and n not in merged]
            if merged and pending and any(self.adapters[n]["method"] in INPUT_MODE for n in merged + pending):
                self._unmerge(path, list(merged))
        self.frozen -= set(names)

    def _unmerge(self, path: str, names: list[str]) -> None:
        merged = self.merged.get(path, [])
        if any(self.adapters[n]["method"] in INPUT_MODE for n in merged):
            merged.clear()                           # multiplicative updates do not commute: all come out
        else:
            merged[:] = [n for n in merged if n not in names]

    def _add(self, name: str, method: str, paths: list[str], values=None) -> None:
        self.adapters[name] = {"method": method, "paths": sorted(paths),
                               "values": values if values is not None else self._values_from_model(name)}
        self.order.append(name)

    def _expect_failure(self, call, errors=(TNPeftError,)) -> BaseException:
        before = snapshot(self.model)
        try:
            call()
        except errors as e:
            assert same_snapshot(before, snapshot(self.model)), f"a failed call changed the model: {e}"
            STATS[f"{sys._getframe(1).f_code.co_name} refused with {type(e).__name__}"] += 1
            return e
        raise AssertionError("the call was expected to fail")

    # ------------------------------------------------------------------ rules
    def _count(self):
        Lifecycle.steps += 1
        STATS["steps"] += 1
        STATS[f"rule {sys._getframe(1).f_code.co_name}"] += 1

    @rule(name=st.sampled_from(NAMES), method=st.sampled_from(sorted(METHODS)), where=st.sampled_from(sorted(TARGETS)))
    def inject(self, name, method, where):
        self._count()
        cfg = METHODS[method](TARGETS[where])
        if name in self.adapters:
            self._expect_failure(lambda: tnpeft.inject(self.model, cfg, adapter_name=name))
            return
        tnpeft.inject(self.model, cfg, adapter_name=name)
        paths = [p for p, layer in tn_layers(self.model) if name in layer.tn_adapters]
        self._add(name, method, paths)
        self._activate([name])

    def _name(self, data) -> str:
        """Mostly an adapter the model has; now and then any name (possibly one it lacks)."""
        if self.adapters and data.draw(st.integers(0, 4)) < 4:
            return data.draw(st.sampled_from(sorted(self.adapters)))
        return data.draw(SOME_NAME)

    def _names(self, data) -> list[str]:
        return list(dict.fromkeys(self._name(data) for _ in range(data.draw(st.integers(0, 2)))))

    @rule(data=st.data())
    def set_adapter(self, data):
        self._count()
        names = self._names(data)
        if any(n not in self.adapters for n in names):
            self._expect_failure(lambda: tnpeft.set_adapter(self.model, names))
            return
        tnpeft.set_adapter(self.model, names)
        self._activate(names)

    @rule(data=st.data())
    def merge(self, data):
        self._count()
        names = self._names(data) if data.draw(st.booleans()) else None
        if names is not None and any(n not in self.adapters for n in names):
            self._expect_failure(lambda: tnpeft.merge(self.model, names))
            return
        before = self._logits()
        plan = {p: self._merge_plan(p, self.active if names is None else names) for p in self.w0}
        refused = next((p for p, todo in plan.items() if todo is None), None)
        if refused is not None:
            self._expect_failure(lambda: tnpeft.merge(self.model, names), (AdapterStateError,))
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tnpeft.merge(self.model, names)
        STATS["merge"] += 1
        for p, todo in plan.items():
            if todo:
                self.merged.setdefault(p, []).extend(todo)
        if names is None:     # merging the active adapters never changes what the model computes
            torch.testing.assert_close(self._logits(), before, atol=2e-4, rtol=0)

    def _merge_plan(self, path: str, names: list[str]) -> list[str] | None:
        """The adapters a merge adds on ``path``, in order, or ``None`` if it must be refused: a layer
        with a multiplicative adapter is merged only whole (no active adapter left unmerged), and a
        multiplicative adapter never after an additive one."""
        here = [n for n in dict.fromkeys(names) if path in self.adapters[n]["paths"]]
        merged = self.merged.get(path, [])
        todo = [n for n in here if n not in merged]
        if not todo:
            return []
        inp = lambda n: self.adapters[n]["method"] in INPUT_MODE  # noqa: E731
        active = [n for n in self.active if path in self.adapters[n]["paths"]]
        # multiplicative ones first (inactive ones, then the active ones last-applied first), additive ones after
        todo.sort(key=lambda n: (0, -active.index(n) if n in active else -len(active) - 1) if inp(n) else (1, 0))
        if any(inp(n) for n in todo) and any(not inp(m) for m in merged):
            return None
        after = merged + todo
        pending = [n for n in active if n not in after]
        if pending and any(inp(n) for n in after + pending):
            return None
        return todo

    @precondition(lambda self: any(self.merged.values()))
    @rule()
    def unmerge(self):
        self._count()
        before = self._logits()
        inactive_merged = any(n not in self.active for m in self.merged.values() for n in m)
        tnpeft.unmerge(self.model)
        self.merged.clear()
        if not inactive_merged:  # taking active adapters out of the weights never changes what the model computes
            torch.testing.assert_close(self._logits(), before, atol=2e-4, rtol=0)

    def _target(self, data) -> str:
        """A new folder, or now and then one written before (of any kind)."""
        if self.folders and data.draw(st.integers(0, 2)) == 0:
            return data.draw(st.sampled_from(sorted(self.folders)))
        d = os.path.join(self.tmp, f"s{self.n_dirs}")
        self.n_dirs += 1
        return d

    def _foreign(self, d: str, kind: str) -> bool:
        return d in self.folders and self.folders[d]["kind"] != kind

    def _wrote(self, d: str, kind: str, **expect) -> None:
        self.folders[d] = {"kind": kind, **expect}
        self.touched.add(d)
        self.saved = [s for s in self.saved if s[0] != d]

    @rule(data=st.data())
    def save(self, data):
        self._count()
        name = self._name(data)
        d, overwrite = self._target(data), data.draw(st.booleans())
        call = lambda: tnpeft.save_adapter(self.model, d, adapter_name=name, overwrite=overwrite)  # noqa: E731
        if name not in self.adapters:
            self._expect_failure(call)
            return
        if self._foreign(d, TNPEFT_ADAPTER) and not overwrite:
            self._expect_failure(call, (WriteError,))
            self.touched.add(d)
            return
        call()
        record = copy.deepcopy(self.adapters[name])
        self._wrote(d, TNPEFT_ADAPTER, values=record["values"])
        self.saved.append((d, name, record))

    def _merged_weights(self, values_of: dict[str, dict], merged: dict[str, list[str]]) -> dict[str, torch.Tensor]:
        """Every Conv1D weight (out × in) of a merged export: the weights with ``merged`` folded in,
        then the exported multiplicative adapter (values by path) where it is not merged already."""
        saved_merged, self.merged = self.merged, merged
        try:
            out = {p: self._reference_weight(p) for p in self.w0}
        finally:
            self.merged = saved_merged
        for p, v in values_of.items():
            out[p] = out[p] @ reference_rotation(v, out[p].shape[1])
        return out

    def _export_expectation(self, method: str, values: dict[str, dict], merged: dict[str, list[str]]):
        if method in INPUT_MODE:
            return MODEL, {"weights": self._merged_weights(values, merged)}
        return PEFT_ADAPTER, {"deltas": {p: reference_delta(method, v) for p, v in values.items()}}

    @rule(data=st.data())
    def export(self, data):
        self._count()
        name = self._name(data)
        d, overwrite = self._target(data), data.draw(st.booleans())
        call = lambda: tnpeft.export_peft(self.model, d, adapter_name=name, overwrite=overwrite)  # noqa: E731
        if name not in self.adapters:
            self._expect_failure(call, (AdapterStateError,))
            return
        a = self.adapters[name]
        unmerged = {p: v for p, v in a["values"].items() if name not in self.merged.get(p, [])}
        kind, expect = self._export_expectation(a["method"], unmerged if a["method"] in INPUT_MODE else a["values"],
                                                self.merged)
        if self._foreign(d, kind) and not overwrite:
            self._expect_failure(call, (WriteError,))
            self.touched.add(d)
            return
        before = snapshot(self.model)
        call()
        assert same_snapshot(before, snapshot(self.model)), "an export changed the model"
        STATS[f"export as {kind}"] += 1
        self._wrote(d, kind, **expect)

    @precondition(lambda self: self.saved)
    @rule(pick=st.integers(0, 10**6), data=st.data())
    def convert(self, pick, data):
        """What ``tnpeft convert`` does: the saved adapter into a fresh model, exported; never into
        its own folder, whatever ``overwrite`` says."""
        self._count()
        src, name, record = self.saved[pick % len(self.saved)]
        d = src if data.draw(st.integers(0, 3)) == 0 else self._target(data)
        overwrite = data.draw(st.booleans())
        if d == src:
            with pytest.raises(WriteError, match="is the adapter folder being converted"):
                convert_adapter(src, d, model="not loaded", overwrite=overwrite)
            STATS["convert into its own folder refused"] += 1
            self.touched.add(src)
            return
        fresh = tnpeft.load_adapter(tiny_gpt2(), src)
        kind, expect = self._export_expectation(record["method"], record["values"], {})
        call = lambda: tnpeft.export_peft(fresh, d, adapter_name=name, overwrite=overwrite)  # noqa: E731
        if self._foreign(d, kind) and not overwrite:
            with pytest.raises(WriteError, match="holds a"):
                call()
            STATS["convert into a folder of another kind refused"] += 1
            self.touched.add(d)
            return
        call()
        STATS[f"convert as {kind}"] += 1
        self._wrote(d, kind, **expect)

    @rule(data=st.data(), new=st.sampled_from(NAMES), ctype=st.sampled_from(["cat", "svd"]))
    def combine(self, data, new, ctype):
        """add_weighted_adapter: ``Σ wᵢ sᵢ ΔWᵢ`` (a multiplicative part as ``W (D − I)``), added inactive."""
        self._count()
        names = self._names(data)
        weights = [data.draw(st.sampled_from([1.0, -0.5, 2.0])) for _ in names]
        call = lambda: tnpeft.add_weighted_adapter(self.model, names, weights, new, combination_type=ctype,  # noqa: E731
                                                   svd_rank=64 if ctype == "svd" else None)
        if not names or new in self.adapters or any(n not in self.adapters for n in names):
            self._expect_failure(call)
            return
        paths = sorted({p for n in names for p in self.adapters[n]["paths"]})
        if any(self.adapters[n]["method"] in INPUT_MODE and self.merged.get(p) for n in names
               for p in self.adapters[n]["paths"]):
            self._expect_failure(call, (AdapterStateError,))
            return
        report = call()
        STATS[f"combine ({ctype})"] += 1
        values = self._values_from_model(new)
        assert sorted(values) == paths and report.exact
        for p in paths:
            want = torch.zeros_like(reference_delta("combo", values[p]))
            for n, w in zip(names, weights):
                a = self.adapters[n]
                if p not in a["paths"]:
                    continue
                if a["method"] in INPUT_MODE:
                    base = self._reference_weight(p)
                    want += w * (base @ reference_rotation(a["values"][p], base.shape[1]) - base)
                else:
                    want += w * reference_delta(a["method"], a["values"][p])
            torch.testing.assert_close(reference_delta("combo", values[p]), want, atol=2e-5, rtol=1e-4)
        self._add(new, "combo", paths, values)
        self.untouched = False

    @precondition(lambda self: self.saved)
    @rule(pick=st.integers(0, 10**6), as_name=st.sampled_from([None] + NAMES), trainable=st.booleans())
    def load(self, pick, as_name, trainable):
        self._count()
        d, saved_name, record = self.saved[pick % len(self.saved)]
        name = as_name or saved_name
        call = lambda: tnpeft.load_adapter(self.model, d, adapter_name=as_name, is_trainable=trainable)  # noqa: E731
        have = self.adapters.get(name)
        if have is not None:
            if _layout(have) != _layout(record):
                self._expect_failure(call, (AdapterFileError,))
                return
            if any(name in self.merged.get(p, ()) for p in have["paths"]):
                self._expect_failure(call, (AdapterStateError,))
                return
        call()
        STATS["load into a new adapter" if have is None else "load replacing values"] += 1
        if have is None:
            self._add(name, record["method"], record["paths"], copy.deepcopy(record["values"]))
        else:
            have["values"] = copy.deepcopy(record["values"])
        self._activate([name])
        if not trainable:
            self.frozen.add(name)

    @precondition(lambda self: self.adapters)
    @rule()
    def disabled_forward(self):
        self._count()
        with torch.no_grad(), tnpeft.disable_adapters(self.model):
            got = self.model(IDS).logits
        want = self._reference_logits(adapters=False)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        self.merged.clear()                     # a disabled forward unmerges what it meets

    @rule(data=st.data())
    def delete(self, data):
        self._count()
        name = self._name(data)
        if name not in self.adapters:
            self._expect_failure(lambda: tnpeft.delete_adapter(self.model, name))
            return
        tnpeft.delete_adapter(self.model, name)
        self._deleted(name)

    def _deleted(self, name: str) -> None:
        for path, merged in self.merged.items():
            if name in merged:
                self._unmerge(path, [name])
        del self.adapters[name]
        self.order.remove(name)
        self.active = [n for n in self.active if n != name]    # the others keep their state
        self.frozen -= set(self.active)
        self.untouched = False

    @precondition(lambda self: not self.untouched)     # training the bare base model is not this test's subject
    @rule()
    def train_step(self):
        self._count()
        before = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        self.model.train()
        try:
            loss = self.model(IDS, labels=IDS).loss
            if loss.requires_grad:           # not when every trainable adapter is merged (or none is active)
                loss.backward()
            STATS["train step" + ("" if loss.requires_grad else " without gradient")] += 1
            with torch.no_grad():
                for p in self.model.parameters():
                    if p.grad is not None:
                        p.sub_(LR * p.grad)
                        p.grad = None
        finally:
            self.model.eval()
        for n, p in self.model.named_parameters():
            if n not in trainable:
                assert torch.equal(p, before[n]), f"{n} changed but is frozen"
        for name in self.active:
            merged_somewhere = any(name in m for m in self.merged.values())
            values = self._values_from_model(name)
            if merged_somewhere:      # its update sits in the weights: the adapter gets no gradient
                for p, vals in values.items():
                    for k, v in vals.items():
                        assert torch.equal(v, self.adapters[name]["values"][p][k]), f"merged {name} {p} {k} moved"
            self.adapters[name]["values"] = values

    @rule(kind=st.sampled_from(["budget", "dotted", "reserved", "exists", "nothing", "corrupt", "peft_type",
                                "saved_overlap", "nested", "nope_merge", "nope_set", "nope_delete", "load_name"]))
    def failing_call(self, kind):
        self._count()
        m = self.model
        if kind == "budget":
            call = lambda: tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["c_attn"], r=10**9), adapter_name="z")  # noqa: E731
        elif kind == "dotted":
            call = lambda: tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["c_fc"], r=1), adapter_name="a.b")  # noqa: E731
        elif kind == "reserved":
            call = lambda: tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["c_fc"], r=1), adapter_name="training")  # noqa: E731
        elif kind == "exists":
            if not self.adapters:
                return
            name = sorted(self.adapters)[0]
            call = lambda: tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["c_fc"], r=1), adapter_name=name)  # noqa: E731
        elif kind == "nothing":
            call = lambda: tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["no_such_layer"], r=1), adapter_name="z")  # noqa: E731
        elif kind == "load_name":
            d = self._crafted("plain")
            call = lambda: tnpeft.load_adapter(m, d, adapter_name="__class__")  # noqa: E731
        elif kind in ("corrupt", "saved_overlap", "nested"):
            d = self._crafted(kind)
            call = lambda: tnpeft.load_adapter(m, d, adapter_name="z")  # noqa: E731
        elif kind == "peft_type":
            d = os.path.join(self.tmp, "peft")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "adapter_config.json"), "w") as f:
                json.dump({"peft_type": "LORA", "r": 1, "use_rslora": "false"}, f)
            call = lambda: tnpeft.import_peft(m, d, adapter_name="z")  # noqa: E731
        elif kind == "nope_merge":
            call = lambda: tnpeft.merge(m, ["nope"])  # noqa: E731
        elif kind == "nope_set":
            call = lambda: tnpeft.set_adapter(m, "nope")  # noqa: E731
        else:
            call = lambda: tnpeft.delete_adapter(m, "nope")  # noqa: E731
        self._expect_failure(call)

    def _crafted(self, kind: str) -> str:
        """A saved adapter of another model's LoRA on c_attn, spoiled as ``kind`` asks."""
        d = os.path.join(self.tmp, f"crafted-{kind}")
        if os.path.isdir(d):
            return d
        other = tnpeft.inject(tiny_gpt2(1), tnpeft.AdapterConfig("lora", ["c_attn"], r=1, init_b="normal"))
        tnpeft.save_adapter(other, d)
        cfg_path, w_path = os.path.join(d, "adapter_config.json"), os.path.join(d, "adapter_model.safetensors")
        cfg = json.loads(open(cfg_path).read())
        tensors = load(open(w_path, "rb").read())
        if kind == "corrupt":
            tensors[next(iter(tensors))] = torch.full((1, 32), float("inf"))
        elif kind == "saved_overlap":
            cfg["config"]["modules_to_save"] = ["transformer"]
            for k, v in tiny_gpt2().transformer.state_dict().items():
                tensors[f"modules_to_save.transformer.{k}"] = v
        elif kind == "nested":
            cfg["modules"] = {f"{p}.base_layer": g for p, g in cfg["modules"].items()}
            tensors = {k.replace(".c_attn.", ".c_attn.base_layer."): v for k, v in tensors.items()}
        blob = save(tensors)
        cfg["weights_sha256"] = sha256(blob)
        open(cfg_path, "w").write(json.dumps(cfg))
        open(w_path, "wb").write(blob)
        return d

    @rule(op=st.sampled_from(["merge", "unmerge", "set_adapter", "inject", "load", "delete", "unload"]),
          k=st.integers(1, 3))
    def interrupted_call(self, op, k):
        """Each call is cut by a KeyboardInterrupt after its ``k``-th inner step; if it had fewer
        steps it succeeds, and the reference follows it."""
        self._count()
        m = self.model
        if op in ("merge", "unmerge"):
            if op == "merge" and any(self._merge_plan(p, self.active) is None for p in self.w0):
                return
            patch = _RaiseAt(TNLinear, op, k)
            call, after = (lambda: tnpeft.merge(m)) if op == "merge" else (lambda: tnpeft.unmerge(m)), \
                (lambda: self._after_merge()) if op == "merge" else (lambda: self.merged.clear())
        elif op == "set_adapter":
            names = [n for n in self.active[:1]] + [n for n in self.adapters if n not in self.active][:1]
            patch = _RaiseAt(torch.nn.Module, "requires_grad_", k)
            call, after = (lambda: tnpeft.set_adapter(m, names)), (lambda: self._activate(names))
        elif op == "inject":
            name = next((n for n in NAMES if n not in self.adapters), None)
            if name is None:
                return
            patch = _RaiseAt(TNLinear, "attach_adapter", k)
            cfg = METHODS["lora1"](TARGETS["both"])
            call = lambda: tnpeft.inject(m, cfg, adapter_name=name)  # noqa: E731
            after = lambda: (self._add(name, "lora1", [p for p, lay in tn_layers(m) if name in lay.tn_adapters]),  # noqa: E731
                             self._activate([name]))
        elif op == "load":
            if not self.saved:
                return
            d, saved_name, record = self.saved[-1]
            name = next((n for n in NAMES if n not in self.adapters), None)
            if name is None:
                return
            patch = _RaiseAt(torch.nn.Module, "load_state_dict", k)
            call = lambda: tnpeft.load_adapter(m, d, adapter_name=name, is_trainable=True)  # noqa: E731
            after = lambda: (self._add(name, record["method"], record["paths"], copy.deepcopy(record["values"])),  # noqa: E731
                             self._activate([name]))
        elif op == "delete":
            if not self.adapters:
                return
            name = sorted(self.adapters)[-1]
            patch = _RaiseAt(TNLinear, "delete_adapter", k)
            call = lambda: tnpeft.delete_adapter(m, name)  # noqa: E731

            def after():
                self._deleted(name)
        else:  # unload: always cut after the first layer (a completed unload would end the machine's model)
            if not list(tn_layers(m)):
                return
            patch = _RaiseAt(merging, "set_submodule", 1)
            call, after = (lambda: tnpeft.unload(m)), None
        before = snapshot(m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with patch:
                    call()
            except KeyboardInterrupt:
                assert same_snapshot(before, snapshot(m)), f"an interrupted {op} changed the model"
                STATS[f"{op} interrupted and rolled back"] += 1
                return
        assert after is not None, "unload was not interrupted"
        STATS[f"{op} ran whole (fewer than {k} inner steps)"] += 1
        after()

    def _after_merge(self):
        for p in self.w0:
            self.merged.setdefault(p, []).extend(self._merge_plan(p, self.active))

    # ------------------------------------------------------------------ the reference, checked after every step
    def _logits(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model(IDS).logits

    def _reference_weight(self, path: str) -> torch.Tensor:
        """``W`` (out × in) with the merged adapters folded in, in the order they were merged."""
        w = self.w0[path].double().T.clone()             # Conv1D holds Wᵀ
        for name in self.merged.get(path, []):
            a = self.adapters[name]
            if a["method"] in INPUT_MODE:
                w = w @ reference_rotation(a["values"][path], w.shape[1])
            else:
                w = w + reference_delta(a["method"], a["values"][path])
        return w

    def _reference_logits(self, adapters: bool = True) -> torch.Tensor:
        """The plain model with ``W_eff = W_merged · D_k ⋯ D_1 + Σ ΔW`` over the active, unmerged
        adapters (``D`` the multiplicative ones, applied to the input in the active order)."""
        with torch.no_grad():
            for path, w0 in self.w0.items():
                if not adapters:
                    self.plain.get_submodule(path).weight.copy_(w0)
                    continue
                w = self._reference_weight(path)
                merged = self.merged.get(path, [])
                pending = [n for n in self.active if path in self.adapters[n]["paths"] and n not in merged]
                for name in pending:
                    if self.adapters[name]["method"] in INPUT_MODE:
                        w = w @ reference_rotation(self.adapters[name]["values"][path], w.shape[1])
                for name in pending:
                    a = self.adapters[name]
                    if a["method"] not in INPUT_MODE:
                        w = w + reference_delta(a["method"], a["values"][path])
                self.plain.get_submodule(path).weight.copy_(w.T.float())
            return self.plain(IDS).logits

    @invariant()
    def adapters_and_flags_match(self):
        m = self.model
        assert tnpeft.adapter_names(m) == self.order
        assert sorted(getattr(m, CONFIGS_ATTR, {})) == sorted(self.adapters)
        for path, layer in tn_layers(m):
            here = [n for n in self.order if path in self.adapters[n]["paths"]]
            assert list(layer.tn_adapters) == here, path
            assert layer.active_adapters == [n for n in self.active if n in here], path
            assert layer.merged_adapters == self.merged.get(path, []), path
            assert not layer.disabled
        want = set()
        for name in self.active:
            if name not in self.frozen:
                for path in self.adapters[name]["paths"]:
                    want |= {f"{path}.tnpeft_adapters.{name}.{k}" for k in self.adapters[name]["values"][path]}
        got = {n for n, p in m.named_parameters() if p.requires_grad}
        if self.untouched:                       # a model no adapter call has touched trains as it was
            want = {n for n, _ in m.named_parameters()}
        assert got == want
        assert not any(mod.training for mod in m.modules()), "a module is not in the model's eval mode"

    @invariant()
    def every_folder_holds_one_loadable_checkpoint(self):
        """No folder ever holds files of two kinds; one a step wrote to (or was refused to write
        to) loads and holds what the reference says was written last."""
        for d, want in self.folders.items():
            assert list(checkpoint_kinds(d)) == [want["kind"]], (d, checkpoint_kinds(d), want["kind"])
            assert not [n for n in os.listdir(d) if n.endswith(".tmp") or n.startswith(".tnpeft")], os.listdir(d)
        for d in sorted(self.touched & set(self.folders)):
            want = self.folders[d]
            if want["kind"] == TNPEFT_ADAPTER:
                _, graphs, tensors = read_adapter(d)
                got = split_adapter_state(graphs, tensors, d)
                assert set(got) == set(want["values"])
                for p, vals in want["values"].items():
                    assert got[p].keys() == vals.keys() and all(torch.equal(got[p][k], v) for k, v in vals.items())
            elif want["kind"] == PEFT_ADAPTER:
                fresh = tnpeft.import_peft(tiny_gpt2(), d)
                layers = {p: lay.tn_adapters["default"] for p, lay in tn_layers(fresh)}
                assert set(layers) == set(want["deltas"])
                for p, delta in want["deltas"].items():
                    v = {k: t.double() for k, t in layers[p].state_dict().items()}
                    got = layers[p].graph.scale * (v["B.weight"] @ v["A.weight"])
                    torch.testing.assert_close(got, delta, atol=2e-5, rtol=1e-4)
            else:
                tensors = load_file(os.path.join(d, "model.safetensors"))
                assert json.loads(open(os.path.join(d, "config.json")).read())["model_type"] == "gpt2"
                for p, w in want["weights"].items():       # Conv1D holds Wᵀ
                    torch.testing.assert_close(tensors[f"{p}.weight"].double(), w.T, atol=2e-5, rtol=0)
        self.touched.clear()

    @invariant()
    def values_weights_and_logits_match(self):
        for name, a in self.adapters.items():
            assert self._values_from_model(name).keys() == set(a["paths"])
            for path, vals in self._values_from_model(name).items():
                for k, v in vals.items():
                    assert torch.equal(v, a["values"][path][k]), (name, path, k)
        for path, layer in tn_layers(self.model):
            torch.testing.assert_close(layer.base_layer.weight.double(), self._reference_weight(path).T,
                                       atol=2e-5, rtol=0)
        with torch.no_grad():
            got = self.model(IDS).logits
        torch.testing.assert_close(got, self._reference_logits(), atol=2e-4, rtol=0)


STEPS = int(os.environ.get("TNPEFT_LIFECYCLE_STEPS", "2000"))


@pytest.mark.filterwarnings("ignore")
def test_adapter_lifecycle_matches_the_reference():
    Lifecycle.steps = 0
    STATS.clear()
    t0 = time.perf_counter()
    examples = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # a tiny model: threads only contend (10× slower on a busy machine)
    try:
        while Lifecycle.steps < STEPS:  # hypothesis chooses each run's length; run until the budget is spent
            examples += 1
            run_state_machine_as_test(Lifecycle, settings=settings(
                max_examples=25, stateful_step_count=40, deadline=None, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck)))
    finally:
        torch.set_num_threads(threads)
    print(f"lifecycle: {Lifecycle.steps} steps in {time.perf_counter() - t0:.1f} s ({examples} rounds)")
    for what, n in sorted(STATS.items()):
        print(f"  {what}: {n}")
    assert Lifecycle.steps >= STEPS
