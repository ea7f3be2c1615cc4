"""torch.distributed: 2-process gloo DDP and FSDP2 give the adapter weights of a 1-process run with
the same global batch, and the adapter is written once (by rank 0). Each launch trains all the
adapters of its mode in turn (one start-up of torch per launch): see tests/scripts/dist_worker.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "scripts" / "dist_worker.py"


RUNS = {"single": ["lora", "quantum_peft", "vera", "metatt"], "ddp": ["lora", "quantum_peft", "vera"],
        "fsdp": ["lora", "metatt"]}


def _run(out: Path, mode: str, adapters: list[str]) -> None:
    # --standalone: torchrun's rendezvous store picks its own free port (no port chosen here and bound
    # later by another process); gloo talks over the loopback device, whatever the host name resolves to.
    # A worker that stalls prints every thread's stack and exits (tests/scripts/dist_worker.py) before
    # this call's own limit, so a failure shows where it stood.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "GLOO_SOCKET_IFNAME": "lo"}
    if mode == "single":
        cmd = [sys.executable, str(WORKER), str(out), mode, *adapters]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(out), mode, *adapters]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=360)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else str(e.stderr or "")
        raise AssertionError(f"{mode} run of {adapters} did not finish in 360 s:\n{err[-3000:]}") from None
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Launch a mode's run the first time a test asks for it; the folder of its adapters."""
    root = tmp_path_factory.mktemp("dist")
    done: dict[str, Path] = {}

    def get(mode: str) -> Path:
        if mode not in done:
            _run(root / mode, mode, RUNS[mode])
            done[mode] = root / mode
        return done[mode]
    return get


def _weights(folder: Path, adapter: str) -> dict[str, torch.Tensor]:
    return load_file(str(folder / adapter / "adapter_model.safetensors"))


@pytest.mark.parametrize("mode,adapter", [("ddp", "lora"), ("fsdp", "lora"), ("ddp", "quantum_peft")])
def test_two_process_training_equals_one_process(runs, mode, adapter):
    single, ran = runs("single"), runs(mode)
    want, got = _weights(single, adapter), _weights(ran, adapter)
    assert want.keys() == got.keys()                      # plain-model keys: the wrapper was unwrapped
    start = _weights(single.parent / "single_init", adapter)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0, msg=k)
    moved = {k: (want[k] - start[k]).abs().max().item() for k in want}
    assert all(v > 0 for v in moved.values()) and max(moved.values()) > 1e-3, moved   # training happened
    assert sorted(p.name for p in (ran / adapter).iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.parametrize("mode,adapter", [("ddp", "vera"), ("fsdp", "metatt")])
def test_shared_tensors_train_in_two_processes_as_in_one_and_are_saved_once(runs, mode, adapter):
    # VeRA's frozen random projections and MetaTT's model-wide tensor train live once on the model: DDP and
    # FSDP2 (which shards them with the root module) reduce their gradients over all layers and both ranks
    single, ran = runs("single"), runs(mode)
    want, got = _weights(single, adapter), _weights(ran, adapter)
    start = _weights(single.parent / "single_init", adapter)
    shared = sorted(k for k in want if k.startswith("tnpeft_shared."))
    assert shared == (["tnpeft_shared.vera_A.weight", "tnpeft_shared.vera_B.weight"] if adapter == "vera" else
                      [f"tnpeft_shared.G{k}.weight" for k in range(1, 5)])      # one copy, no per-layer copies
    assert want.keys() == got.keys()
    moved = {}
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0, msg=k)
        moved[k] = (want[k] - start[k]).abs().max().item()
    frozen = shared if adapter == "vera" else []             # VeRA's A and B stay; everything else trained
    assert all(moved[k] == 0 for k in frozen) and all(v > 0 for k, v in moved.items() if k not in frozen), moved
    assert max(moved.values()) > 1e-3
