"""torch.distributed: 2-process gloo DDP and FSDP2 give the adapter weights of a 1-process run with
the same global batch, and the adapter is written once (by rank 0)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "scripts" / "dist_worker.py"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, mode: str, adapter: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if mode == "single":
        cmd = [sys.executable, str(WORKER), str(out), mode, adapter]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_port()), str(WORKER), str(out), mode, adapter]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("mode,adapter", [("ddp", "lora"), ("fsdp", "lora"), ("ddp", "quantum_peft")])
def test_two_process_training_equals_one_process(tmp_path, mode, adapter):
    _run(tmp_path / "single", "single", adapter)
    _run(tmp_path / mode, mode, adapter)
    want = load_file(str(tmp_path / "single" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / mode / "adapter_model.safetensors"))
    assert want.keys() == got.keys()                      # plain-model keys: the wrapper was unwrapped
    start = load_file(str(tmp_path / "single_init" / "adapter_model.safetensors"))
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0, msg=k)
    moved = {k: (want[k] - start[k]).abs().max().item() for k in want}
    assert all(v > 0 for v in moved.values()) and max(moved.values()) > 1e-3, moved   # training happened
    assert sorted(p.name for p in (tmp_path / mode).iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.parametrize("mode,adapter", [("ddp", "vera"), ("fsdp", "metatt")])
def test_shared_tensors_train_in_two_processes_as_in_one_and_are_saved_once(tmp_path, mode, adapter):
    # VeRA's frozen random projections and MetaTT's model-wide tensor train live once on the model: DDP and
    # FSDP2 (which shards them with the root module) reduce their gradients over all layers and both ranks
    _run(tmp_path / "single", "single", adapter)
    _run(tmp_path / mode, mode, adapter)
    want = load_file(str(tmp_path / "single" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / mode / "adapter_model.safetensors"))
    start = load_file(str(tmp_path / "single_init" / "adapter_model.safetensors"))
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
