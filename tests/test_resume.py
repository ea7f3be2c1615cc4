"""Exact resume under a Ctrl-C at any instant: a real SIGINT is delivered at chosen points of a
short run — right after each optimizer step (before the step is recorded), in the forward and
backward passes, during evaluations, during every checkpoint write — and the resumed run must end
with weights bit-identical to the uninterrupted run's. Damaged checkpoint files are refused with
the file and field named."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_gpt2
from safetensors.torch import load, save
from torch.optim.optimizer import register_optimizer_step_post_hook

import tnpeft
import tnpeft.fileio as fio
from tnpeft.errors import CheckpointError
from tnpeft.train.loop import DeferredInterrupt, LMData, TrainConfig, TrainingInterrupted, fit

CFG = TrainConfig(task="causal_lm", epochs=1, max_steps=8, batch_size=8, lr=5e-3, warmup_steps=2,
                  checkpoint_every=3, eval_every=4, seed=3)


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LMData(torch.randint(0, 97, (n, 12), generator=g))


TRAIN, TEST = _data(), _data(8, seed=1)


def _model():
    return tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora", ["c_attn", "c_fc"], r=2, dropout=0.1))


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = _model()
    metrics = fit(model, None, TRAIN, TEST, CFG, tmp_path_factory.mktemp("full"), progress=False)
    return _weights(model), metrics


def _sigint() -> None:
    signal.raise_signal(signal.SIGINT)


class _At:
    """Deliver a SIGINT the ``n``-th time :meth:`hit` is called."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def hit(self, *_):
        self.calls += 1
        if self.calls == self.n:
            _sigint()


def _resume_and_compare(out, reference):
    want, metrics = reference
    model = _model()
    got = fit(model, None, TRAIN, TEST, CFG, out, progress=False)
    w = _weights(model)
    assert w.keys() == want.keys()
    for k in want:
        assert torch.equal(w[k], want[k]), k
    assert got["eval_history"] == metrics["eval_history"]
    assert got["first_loss"] == metrics["first_loss"]


def _interrupted(out, install):
    """Run with ``install(model)`` arming an interrupt; it must stop with TrainingInterrupted."""
    model = _model()
    undo = install(model)
    try:
        with pytest.raises(TrainingInterrupted):
            fit(model, None, TRAIN, TEST, CFG, out, progress=False)
    finally:
        undo()


def test_sigint_handler_is_the_default_here():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("step", range(1, 9))
def test_sigint_right_after_each_optimizer_step_resumes_exactly(tmp_path, reference, step):
    at = _At(step)

    def install(model):
        h = register_optimizer_step_post_hook(at.hit)
        return h.remove

    _interrupted(tmp_path, install)
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == step                      # the step that was interrupted is recorded with its update
    _resume_and_compare(tmp_path, reference)


@pytest.mark.parametrize("call", [1, 3, 6, 8, 11])
def test_sigint_in_the_forward_or_evaluation_resumes_exactly(tmp_path, reference, call):
    at = _At(call)          # forwards: 8 training steps and 3 evaluations (steps 0, 4, 8) interleaved

    def install(model):
        h = model.register_forward_pre_hook(at.hit)
        return h.remove

    _interrupted(tmp_path, install)
    _resume_and_compare(tmp_path, reference)


@pytest.mark.parametrize("call", [2, 5])
def test_sigint_in_the_backward_pass_resumes_exactly(tmp_path, reference, call):
    at = _At(call)

    def install(model):
        p = next(p for p in model.parameters() if p.requires_grad)
        h = p.register_hook(lambda g: at.hit() or g)
        return h.remove

    _interrupted(tmp_path, install)
    _resume_and_compare(tmp_path, reference)


# each checkpoint or adapter save renames a few files: interrupt at every one of them
@pytest.mark.parametrize("rename", [1, 2, 4, 5, 7, 9, 12])
def test_sigint_during_each_save_resumes_exactly(tmp_path, reference, monkeypatch, rename):
    at = _At(rename)
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        at.hit()

    def install(model):
        monkeypatch.setattr(fio.os, "replace", replace)
        return lambda: monkeypatch.setattr(fio.os, "replace", real)

    model = _model()
    install(model)
    try:
        fit(model, None, TRAIN, TEST, CFG, tmp_path, progress=False)
    except TrainingInterrupted:
        pass
    finally:
        monkeypatch.setattr(fio.os, "replace", real)
    _resume_and_compare(tmp_path, reference)


def test_a_second_sigint_while_the_interrupt_checkpoint_is_written_is_deferred(tmp_path, reference, monkeypatch):
    at, real = _At(2), os.replace
    state = {"armed": False}

    def hook(*_):
        if not state["armed"]:
            state["armed"] = True
            _sigint()                                  # the first Ctrl-C: after step 1

    def replace(src, dst):
        real(src, dst)
        if state["armed"]:
            at.hit()                                   # a second one during the checkpoint that answers it

    h = register_optimizer_step_post_hook(hook)
    monkeypatch.setattr(fio.os, "replace", replace)
    try:
        with pytest.raises(TrainingInterrupted):
            fit(_model(), None, TRAIN, TEST, CFG, tmp_path, progress=False)
    finally:
        h.remove()
        monkeypatch.setattr(fio.os, "replace", real)
    assert json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())["step"] == 1
    _resume_and_compare(tmp_path, reference)


def test_deferred_interrupt_outside_the_main_thread_is_inert():
    import threading

    seen = []

    def run():
        with DeferredInterrupt() as g, g.critical():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]


# ------------------------------------------------------------------ damaged checkpoints
def _checkpointed(tmp_path):
    with pytest.raises(TrainingInterrupted):
        fit(_model(), None, TRAIN, TEST, CFG, tmp_path, progress=False, stop_after=3)
    return tmp_path / "checkpoint"


def _state_edit(key, value):
    def edit(d):
        p = d / "trainer_state.json"
        s = json.loads(p.read_text())
        if value is KeyError:
            s.pop(key)
        else:
            s[key] = value
        p.write_text(json.dumps(s))
    return edit


def _history_edit(key, value):
    def edit(d):
        p = d / "trainer_state.json"
        s = json.loads(p.read_text())
        s["history"][key] = value
        p.write_text(json.dumps(s))
    return edit


def _opt_tensor_edit(d):
    p = d / "optimizer.safetensors"
    t = load(p.read_bytes())
    k = next(k for k in sorted(t) if t[k].ndim)
    t[k] = torch.zeros(5, 7)
    p.write_bytes(save(t))


def _opt_meta_edit(key, value):
    def edit(d):
        p = d / "optimizer.json"
        m = json.loads(p.read_text())
        if value is KeyError:
            m.pop(key)
        else:
            m[key] = value
        p.write_text(json.dumps(m))
    return edit


DAMAGE = [
    ("step 'x'", _state_edit("step", "x"), "trainer_state.json", "step"),
    ("step -5", _state_edit("step", -5), "trainer_state.json", "step"),
    ("step 99", _state_edit("step", 99), "trainer_state.json", "step"),
    ("step true", _state_edit("step", True), "trainer_state.json", "step"),
    ("no step", _state_edit("step", KeyError), "trainer_state.json", "step"),
    ("history null", _state_edit("history", None), "trainer_state.json", "history"),
    ("losses short", _history_edit("train_loss", [1.0]), "trainer_state.json", "history.train_loss"),
    ("loss NaN", _history_edit("train_loss", [1.0, 2.0, float("nan")]), "trainer_state.json", "history.train_loss"),
    ("eval bad", _history_edit("eval", [{"step": "?"}]), "trainer_state.json", "history.eval"),
    ("state not JSON", lambda d: (d / "trainer_state.json").write_text("{"), "trainer_state.json", None),
    ("state a list", lambda d: (d / "trainer_state.json").write_text("[]"), "trainer_state.json", None),
    ("optimizer shape", _opt_tensor_edit, "optimizer.safetensors", None),
    ("optimizer truncated", lambda d: (d / "optimizer.safetensors").write_bytes(b"\x05"), "optimizer.safetensors", None),
    ("no param_groups", _opt_meta_edit("param_groups", KeyError), "optimizer.json", "param_groups"),
    ("param_groups bad", _opt_meta_edit("param_groups", [{"params": [0], "lr": "fast"}]), "optimizer.json",
     "param_groups"),
    ("scalars bad", _opt_meta_edit("scalars", [1]), "optimizer.json", "scalars"),
    ("no optimizer", lambda d: (d / "optimizer.json").unlink(), "optimizer.json", None),
    ("adapter gone", lambda d: shutil.rmtree(d / "adapter"), "adapter", None),
]


@pytest.mark.parametrize("case", DAMAGE, ids=[c[0] for c in DAMAGE])
def test_damaged_checkpoint_files_are_named(tmp_path, case):
    _, edit, file, field = case
    d = _checkpointed(tmp_path)
    edit(d)
    with pytest.raises(CheckpointError) as e:
        fit(_model(), None, TRAIN, TEST, CFG, tmp_path, progress=False)
    assert file in str(e.value) and file in (e.value.path or "")
    if field is not None:
        assert e.value.field == field and repr(field) in str(e.value)


# ------------------------------------------------------------------ the command line, in its own process
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from tnpeft.cli import main
    k = int(os.environ["SIGINT_AFTER_STEP"])
    n = [0]
    def hook(*_):
        n[0] += 1
        if n[0] == k:
            os.kill(os.getpid(), signal.SIGINT)
    register_optimizer_step_post_hook(hook)
    sys.exit(main(sys.argv[1:]))
""")


def test_cli_train_sigint_after_a_step_resumes_bit_identically(tmp_path):
    from test_train import _tiny_folder

    from tnpeft.train.offline_assets import hamlet

    model = _tiny_folder(tmp_path / "model")
    text = tmp_path / "text.txt"
    text.write_text(hamlet()[:6000])
    common = ["train", "--model", str(model), "--data", str(text), "--adapter", "lora", "r=2", "dropout=0.1",
              "--max-length", "32", "--batch-size", "4", "--max-steps", "7", "--checkpoint-every", "100",
              "--lr", "1e-2", "--json"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # the whole run and the interrupted one are independent: run side by side
    runs = {name: subprocess.Popen([sys.executable, str(driver)] + common + ["--out", str(tmp_path / name)],
                                   env={**env, "SIGINT_AFTER_STEP": after}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            for name, after in (("full", "0"), ("cut", "4"))}
    (_, full_err), (_, cut_err) = (runs[name].communicate(timeout=300) for name in ("full", "cut"))
    assert runs["full"].returncode == 0, full_err[-2000:]
    assert runs["cut"].returncode == 130, cut_err[-2000:]
    assert cut_err.strip().splitlines()[-1].startswith("tnpeft: interrupted after step 4 of 7")
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4
    again = subprocess.run([sys.executable, "-m", "tnpeft.cli"] + common + ["--out", str(tmp_path / "cut")],
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    a = load((tmp_path / "full" / "adapter" / "adapter_model.safetensors").read_bytes())
    b = load((tmp_path / "cut" / "adapter" / "adapter_model.safetensors").read_bytes())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
