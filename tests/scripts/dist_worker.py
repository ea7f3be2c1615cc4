"""Trains a tiny GPT-2 with each of the given tnpeft adapters in turn under torch.distributed
(launched by torchrun) or in one process, on fixed global batches, and saves each adapter once
(rank 0) to OUT/ADAPTER (and, in one process, its initial values to OUT_init/ADAPTER).

    python -m torch.distributed.run --standalone --nproc_per_node 2 dist_worker.py OUT MODE ADAPTER...
    python dist_worker.py OUT single ADAPTER...
MODE: ddp, fsdp (FSDP2 fully_shard) or single.
"""

import faulthandler
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import tiny_gpt2  # noqa: E402

import tnpeft  # noqa: E402

HP = {"lora": {"r": 4, "init_b": "normal"}, "quantum_peft": {"rank": 4}, "qwthn": {"r": 4}, "vera": {"r": 4},
      "metatt": {"r": 3}}
LR = {"lora": 0.05, "quantum_peft": 2.0, "qwthn": 0.5, "vera": 0.5, "metatt": 0.5}   # plain SGD: the steps move every tensor


def log(rank: int, what: str) -> None:
    """One line per phase on stderr (the test shows its tail when a run fails: where it stood)."""
    print(f"[rank {rank}] {what}", file=sys.stderr, flush=True)


def train(out: str, mode: str, adapter: str, rank: int, world: int) -> None:
    gen = torch.Generator().manual_seed(0)
    model = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig(adapter, ["c_attn", "c_fc"], **HP[adapter]),
                          rng=gen)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model)
    elif mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)
        wrapped = fully_shard(model)
    else:
        wrapped = model
        tnpeft.save_adapter(model, os.path.join(out + "_init", adapter))
    opt = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=LR[adapter])
    data = torch.randint(0, 97, (6, 8, 16), generator=torch.Generator().manual_seed(1))  # 6 global batches of 8
    wrapped.train()
    log(rank, f"{adapter}: {mode} model ready, training")
    for batch in data:
        local = batch.chunk(world)[rank]
        loss = wrapped(local, labels=local).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    log(rank, f"{adapter}: trained, saving")
    tnpeft.save_adapter(wrapped, os.path.join(out, adapter))         # every rank calls; rank 0 writes
    log(rank, f"{adapter}: saved")


def main() -> None:
    out, mode, adapters = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.set_num_threads(1)
    faulthandler.dump_traceback_later(240, exit=True)     # a stalled run shows where it stood, then ends
    distributed = mode != "single"
    if distributed:
        dist.init_process_group("gloo", timeout=timedelta(seconds=180))
        rank, world = dist.get_rank(), dist.get_world_size()
        log(rank, f"process group up ({world} ranks)")
    else:
        rank, world = 0, 1
    for adapter in adapters:
        train(out, mode, adapter, rank, world)
    if distributed:
        dist.barrier()
        log(rank, "past the last barrier")
        dist.destroy_process_group()
        log(rank, "process group destroyed")
    faulthandler.cancel_dump_traceback_later()
    log(rank, "done, exiting")


if __name__ == "__main__":
    main()
