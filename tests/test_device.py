"""Every adapter on every device: forward, backward, merge, save/load, bf16 autocast and a
resumed training run give the CPU float32 reference's results.

The ``cuda`` cases carry the ``gpu`` marker: they run where a CUDA device is present and are
skipped otherwise (``pytest -m gpu`` runs only them). The ``cpu`` cases run everywhere and check
the same properties, so the comparison code itself is exercised on every machine.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_gpt2

import tnpeft
from tnpeft.train.loop import LMData, TrainConfig, fit

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
TARGETS = ["c_attn", "c_fc"]
ADAPTERS = [("lora", {"r": 4}), ("adalora", {"r": 6, "target_r": 3}), ("quantum_peft", {"rank": 4}),
            ("quantum_peft", {"rank": 4, "layers": 2, "param": "givens"}), ("oft", {"block_size": 8}),
            ("qwthn", {"r": 4}), ("qpa", {"r": 2, "chunk_size": 32, "qnn_layers": 2}), ("mpo", {"r": 4})]
IDS = ["lora", "adalora", "quantum_peft", "quantum_peft_givens_L2", "oft", "qwthn", "qpa", "mpo"]


@pytest.fixture(autouse=True)
def _exact_matmuls():
    """TF32 would make a GPU's float32 products differ from the CPU's by ~1e-3."""
    if torch.cuda.is_available():
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    else:
        yield


def _adapted(method: str, hp: dict) -> torch.nn.Module:
    model = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig(method, TARGETS, **hp))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():       # move every adapter off its zero-update start
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(seed))


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach().cpu(), grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method,hp", ADAPTERS, ids=IDS)
def test_forward_backward_merge_and_reload_match_the_cpu_reference(device, method, hp, tmp_path):
    ref = _adapted(method, hp)
    moved = copy.deepcopy(ref).to(device)
    ids = _ids()
    ref_logits, ref_grads = _loss_and_grads(ref, ids)
    logits, grads = _loss_and_grads(moved, ids.to(device))
    assert next(moved.parameters()).device.type == device
    torch.testing.assert_close(logits, ref_logits, atol=2e-5, rtol=1e-4)
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], atol=5e-5, rtol=1e-3, msg=lambda m, n=n: f"{n}: {m}")

    tnpeft.save_adapter(moved, tmp_path / "a")            # saved from the device, read on the CPU
    back = tnpeft.load_adapter(tiny_gpt2(), tmp_path / "a")
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ref_logits, atol=2e-5, rtol=1e-4)

    if method != "qwthn":                                   # the QNN depends on the input: no merge
        tnpeft.merge(moved)
        with torch.no_grad():
            torch.testing.assert_close(moved(ids.to(device)).logits.cpu(), ref_logits, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method,hp", ADAPTERS, ids=IDS)
def test_bf16_autocast_stays_near_float32(device, method, hp):
    """The mixed-precision path the GPU benchmark uses: finite, within bf16's resolution of float32."""
    model = _adapted(method, hp).to(device)
    ids = _ids(1).to(device)
    with torch.no_grad():
        full = model(ids).logits.float()
    model.zero_grad(set_to_none=True)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        out = model(ids, labels=ids)
    out.loss.backward()
    low = out.logits.float().detach()
    assert torch.isfinite(low).all()
    assert ((low - full).norm() / full.norm()).item() < 0.05
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # master weights stay float32


@pytest.mark.parametrize("device", DEVICES)
def test_a_run_on_the_device_resumes_to_the_cpu_runs_weights(device, tmp_path):
    """``fit`` follows the model's device (batches, evaluation, checkpoint and optimizer state)."""
    data = LMData(torch.randint(0, 97, (24, 12), generator=torch.Generator().manual_seed(5)))
    cfg = TrainConfig(task="causal_lm", epochs=1, batch_size=8, lr=5e-3, warmup_steps=1, checkpoint_every=1)

    def run(dev, out, stop_after=None):
        model = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("quantum_peft", TARGETS, rank=4)).to(dev)
        try:
            fit(model, None, data, data, cfg, out, progress=False, stop_after=stop_after)
        except tnpeft.train.loop.TrainingInterrupted:
            model = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("quantum_peft", TARGETS, rank=4)).to(dev)
            fit(model, None, data, data, cfg, out, progress=False)
        return {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}

    ref = run("cpu", tmp_path / "cpu")
    got = run(device, tmp_path / device, stop_after=1)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-5, rtol=1e-4)


def test_a_device_that_is_not_there_is_a_one_line_error_naming_it(tmp_path, capsys):
    from tnpeft.cli import main
    from tnpeft.errors import ConfigError
    from tnpeft.train.evaluation import resolve_device

    assert resolve_device(None).type == "cpu" and resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:99", "gpu0"):
        with pytest.raises(ConfigError) as e:
            resolve_device(bad)
        assert e.value.field == "device" and bad in str(e.value)
    for verb in (["train", "--max-steps", "1"], ["compare", "--adapters", "lora", "--steps", "1"]):
        assert main(verb + ["--device", "cuda:99", "--out", str(tmp_path / verb[0])]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "cuda:99" in err and "device" in err
        assert not (tmp_path / verb[0]).exists()       # refused before anything was loaded or written
