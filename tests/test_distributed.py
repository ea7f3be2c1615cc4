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


@pytest.mark.parametrize("mode,adapter", [("ddp", "lora"), ("fsdp", "lora"), ("ddp", "quantum_peft"), ("ddp", "qwthn")])
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
