"""Two processes save into one folder at the same moment, with random pauses inside each save
(before every rename, and at every step of the save): whatever the interleaving, every save
either completes or is refused with an error that says what happened, and afterwards the folder
holds one kind of checkpoint, loadable, equal to what one of the writers that completed wrote.

The writers are two long-lived worker processes; each round hands both a save and releases them
together through a barrier. Hypothesis draws the rounds: what the folder holds before, which
kind each writer saves (a tnpeft adapter or a peft LoRA checkpoint, of different ranks and
modules, so that a config beside the other writer's weights could not go unnoticed), whether
it may overwrite another kind, the length of the pauses, and the values."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import random
import shutil
import tempfile
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

import tnpeft
import tnpeft.fileio as fileio
from tnpeft.errors import WriteError
from tnpeft.fileio import PEFT_ADAPTER, TNPEFT_ADAPTER, checkpoint_kinds
from tnpeft.nn.saving import adapter_state
from tnpeft.storage.adapter_folder import read_adapter, split_adapter_state

ROUNDS = int(os.environ.get("TNPEFT_RACE_ROUNDS", "300"))
#: writer 0 adapts one layer at rank 1, writer 1 two layers at rank 2
SHAPES = ({"targets": ["0"], "r": 1}, {"targets": ["0", "1"], "r": 2})


def model_for(writer: int, seed: int) -> nn.Module:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(12, 12), nn.Linear(12, 12))
    shape = SHAPES[writer]
    m = tnpeft.inject(base, tnpeft.AdapterConfig("lora", shape["targets"], r=shape["r"], init_b="normal"),
                      rng=torch.Generator().manual_seed(seed))
    return m


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def written(m: nn.Module, kind: str) -> str:
    """The digest of what a save of ``kind`` writes: the adapter's state, or peft's A and B."""
    if kind == TNPEFT_ADAPTER:
        return digest(adapter_state(m)[1])
    out = {}
    for path, layer in tnpeft.nn.tn_layers(m):
        mod = layer.tn_adapters["default"]
        out[f"base_model.model.{path}.lora_A.weight"] = mod.tensor("A")
        out[f"base_model.model.{path}.lora_B.weight"] = mod.tensor("B")
    return digest(out)


def worker(writer: int, conn, barrier) -> None:
    """Serve save requests until told to stop: ``(folder, kind, overwrite, pause, seed)``."""
    torch.set_num_threads(1)
    real_replace = os.replace
    rng = random.Random(writer)
    pause = [0.0]

    def slow_replace(src, dst):
        time.sleep(rng.uniform(0, pause[0]))
        return real_replace(src, dst)

    os.replace = slow_replace
    fileio.save_step_hook = lambda step: time.sleep(rng.uniform(0, pause[0]))
    while True:
        task = conn.recv()
        if task is None:
            return
        folder, kind, overwrite, pause[0], seed = task
        rng.seed(seed)
        m = model_for(writer, seed)
        want = written(m, kind)
        barrier.wait(60)
        try:
            if kind == TNPEFT_ADAPTER:
                tnpeft.save_adapter(m, folder, overwrite=overwrite)
            else:
                tnpeft.export_peft(m, folder, overwrite=overwrite)
            conn.send(("ok", want, ""))
        except Exception as e:  # reported to the test, which judges it
            conn.send(("error", want, f"{type(e).__name__}: {e}"))


@pytest.fixture(scope="module")
def writers():
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    pipes, procs = [], []
    for w in (0, 1):
        here, there = ctx.Pipe()
        p = ctx.Process(target=worker, args=(w, there, barrier), daemon=True)
        p.start()
        pipes.append(here)
        procs.append(p)
    tmp = tempfile.mkdtemp(prefix="tnpeft-race-")
    yield pipes, tmp
    for c in pipes:
        c.send(None)
    for p in procs:
        p.join(30)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"save race: {sum(STATS.values())} rounds: {STATS}")


def folder_content(folder: str) -> tuple[str, str]:
    """``(kind, digest)`` of a folder, which must hold one loadable checkpoint."""
    kinds = checkpoint_kinds(folder)
    assert len(kinds) == 1, f"the folder holds files of several kinds: {kinds}"
    kind = next(iter(kinds))
    if kind == TNPEFT_ADAPTER:
        _, graphs, tensors = read_adapter(folder)               # checksum, graphs and keys checked
        split_adapter_state(graphs, tensors, folder)
        return kind, digest(tensors)
    assert kind == PEFT_ADAPTER, kinds
    fresh = nn.Sequential(nn.Linear(12, 12), nn.Linear(12, 12))
    tnpeft.import_peft(fresh, folder)                           # ranks of config and weights agree
    return kind, digest(load_file(os.path.join(folder, "adapter_model.safetensors")))


STATS: dict[str, int] = {}


@settings(max_examples=ROUNDS, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(before=st.sampled_from(["empty", TNPEFT_ADAPTER, PEFT_ADAPTER]),
       kinds=st.sampled_from([(TNPEFT_ADAPTER, TNPEFT_ADAPTER)] * 3 + [(PEFT_ADAPTER, PEFT_ADAPTER),
                             (TNPEFT_ADAPTER, PEFT_ADAPTER), (PEFT_ADAPTER, TNPEFT_ADAPTER)]),
       overwrite=st.tuples(st.booleans(), st.booleans()),
       pause=st.sampled_from([0.0, 0.0005, 0.002]), seed=st.integers(0, 10**6))
def test_two_racing_saves_leave_one_loadable_checkpoint_of_a_writer(writers, before, kinds, overwrite, pause, seed):
    pipes, tmp = writers
    folder = tempfile.mkdtemp(dir=tmp)
    earlier = None
    if before != "empty":     # an earlier save: writer 0's values of another seed
        m = model_for(0, seed + 1)
        (tnpeft.save_adapter if before == TNPEFT_ADAPTER else tnpeft.export_peft)(m, folder)
        earlier = written(m, before)
    for w, c in enumerate(pipes):
        c.send((folder, kinds[w], overwrite[w], pause, seed * 2 + w))
    results = []
    for c in pipes:
        assert c.poll(60), "a writer hung"
        results.append(c.recv())
    done = {want for status, want, _ in results if status == "ok"}
    for w, (status, _, err) in enumerate(results):
        if status == "error":      # only a refusal of another kind of checkpoint, saying so
            assert err.startswith(WriteError.__name__) and "holds a" in err and folder in err, err
            another_kind = before not in ("empty", kinds[w]) or kinds[0] != kinds[1]
            assert another_kind and not overwrite[w], err
    kind, got = folder_content(folder)
    assert got in (done or {earlier}), "the folder holds neither writer's checkpoint (nor the earlier one)"
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp") or n == fileio.LOCK_NAME]
    outcome = f"{len(done)} of 2 saves completed"
    STATS[outcome] = STATS.get(outcome, 0) + 1
    shutil.rmtree(folder)
