"""The method registry: what generic code knows about a method — name, hyper-parameters with
defaults, paper, optional training hook — and the tags it writes on every graph a builder returns.
A method of the user's own with a training hook is driven by the training loop and its checkpoints
exactly like a built-in one."""

import inspect

import pytest
import torch
from conftest import tiny_gpt2

import tnpeft
from tnpeft.adapters import METHODS, REQUIRED, get_method, method_of, register
from tnpeft.errors import ConfigError
from tnpeft.graph import Dense, Graph
from tnpeft.train.loop import LMData, TrainConfig, TrainingInterrupted, fit, method_hooks


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_tags_its_graphs_with_its_name_and_the_hparams_it_was_built_with(name):
    m = get_method(name)
    sig = inspect.signature(m.builder)
    assert list(m.hparams) == [p for p in list(sig.parameters)[2:] if p != "site"]   # site: where, not how
    assert all(v is REQUIRED or v == sig.parameters[k].default for k, v in m.hparams.items())
    g = m.builder(64, 64)
    assert method_of(g) == name and g.meta["method"] == name
    recorded = g.meta["hparams"]
    assert recorded == m.hparams                            # every argument, at its default here
    assert (m.paper is None) == ("paper" not in g.meta)


def test_tags_follow_the_call_and_graphs_from_old_files_still_tell_their_method():
    g = tnpeft.adapters.lora(8, 6, 3, alpha=2.0)           # positional r
    assert g.meta["hparams"]["r"] == 3 and g.meta["hparams"]["alpha"] == 2.0
    old = Graph.from_dict({**g.to_dict(), "meta": {"adapter": "lora", "hparams": {"r": 3}}})  # a tnpeft 0.1 file
    assert method_of(old) == "lora"
    assert method_of(Graph([Dense("A", ("r", "in"), (2, 4)), Dense("B", ("out", "r"), (4, 2))])) is None


def test_unknown_method_is_named():
    with pytest.raises(ConfigError, match="unknown adapter 'nope'") as e:
        get_method("nope")
    assert e.value.field == "method"
    with pytest.raises(ConfigError, match="identifier"):
        register("not a name")


class CountingHook:
    """A user's training hook: counts optimizer steps and keeps a tensor of its own, both restored
    from checkpoints."""

    made: list = []

    def __init__(self, model, adapter_name="default", total_step=None):
        self.adapter_name, self.total = adapter_name, total_step
        self.steps = 0
        self.trace = torch.zeros(3)
        self.handle = None
        CountingHook.made.append(self)

    def attach(self, optimizer):
        def post(*_):
            self.steps += 1
            self.trace += 1.0
        self.handle = optimizer.register_step_post_hook(post)
        return self

    def detach(self):
        if self.handle is not None:
            self.handle.remove()

    def state_dict(self):
        return {"steps": self.steps}, {"trace": self.trace.clone()}

    def load_state_dict(self, scalars, tensors):
        self.steps = scalars["steps"]
        self.trace = tensors["trace"].clone()


@pytest.fixture
def hooked_method():
    @register("lora_counted", paper="a test method", training_hook=CountingHook)
    def lora_counted(in_features, out_features, r=2):
        return Graph([Dense("A", ("r", "in"), (r, in_features), init="kaiming_uniform"),
                      Dense("B", ("out", "r"), (out_features, r), init="zeros")], name="lora_counted")

    CountingHook.made = []
    yield lora_counted
    del METHODS["lora_counted"]


def test_the_loop_attaches_and_checkpoints_a_user_methods_hook(tmp_path, hooked_method):
    data = LMData(torch.randint(0, 97, (16, 8), generator=torch.Generator().manual_seed(0)))
    cfg = TrainConfig(task="causal_lm", max_steps=6, batch_size=4, lr=1e-2, warmup_steps=0, checkpoint_every=0)

    def model():
        return tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora_counted", ["c_attn"], r=2))

    m = model()
    assert set(method_hooks(m, 6)) == {"default"} and CountingHook.made[-1].total == 6
    with pytest.raises(TrainingInterrupted):
        fit(m, None, data, data, cfg, tmp_path / "run", progress=False, stop_after=4)
    assert CountingHook.made[-1].steps == 4
    m2 = model()
    fit(m2, None, data, data, cfg, tmp_path / "run", progress=False)
    hook = CountingHook.made[-1]
    assert hook.steps == 6 and torch.equal(hook.trace, torch.full((3,), 6.0))  # 4 restored + 2 new
    # a method without a hook gets none
    plain = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora", ["c_attn"], r=2))
    assert method_hooks(plain, 6) == {}


def test_trainer_callback_attaches_the_hooks_of_the_active_adapters(hooked_method):
    from types import SimpleNamespace

    from tnpeft.train.callbacks import TrainingHooksCallback

    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora_counted", ["c_attn"], r=2))
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    cb = TrainingHooksCallback(m)
    cb.on_train_begin(None, SimpleNamespace(max_steps=9), None, optimizer=opt)
    hook = CountingHook.made[-1]
    assert hook.total == 9
    for _ in range(3):
        m(torch.randint(0, 97, (2, 6)), labels=torch.randint(0, 97, (2, 6))).loss.backward()
        opt.step()
    assert hook.steps == 3
    cb.on_train_end(None, None, None)
    opt.step()
    assert hook.steps == 3                                   # detached
