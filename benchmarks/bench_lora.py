"""tnpeft LoRA vs peft LoRA: training-step time, side by side in one process.

GPT-2-small-shaped model (12 layers, width 768, random weights), batch 4 × 128 tokens, LoRA r=8
on the attention and MLP projections (c_attn, c_proj, c_fc). The two models are stepped
alternately, so drifts of the machine hit both alike; the figure is the ratio of medians.

    python benchmarks/bench_lora.py            # full size, ~5 minutes on 2 cores
    python benchmarks/bench_lora.py --quick    # 2 layers, seconds
    python benchmarks/bench_lora.py --json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch


def build(layers: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=layers, n_embd=768, n_head=12, n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def peft_model(base, r: int, targets):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets,
                                                          fan_in_fan_out=True))


def tnpeft_model(base, r: int, targets):
    import tnpeft

    return tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("lora", targets, r=r, alpha=2 * r))


def stepper(model):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(ids):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    return step


def interleave(steps: dict, batches, warmup: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Run ``warmup`` batches through every stepper, then the rest alternately (order flipped each
    batch, so drift hits all alike). Returns (median seconds, all timed seconds) per stepper."""
    for b in batches[:warmup]:
        for f in steps.values():
            f(b)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i, b in enumerate(batches[warmup:]):
        for k in (list(steps) if i % 2 == 0 else list(reversed(steps))):
            times[k].append(steps[k](b))
    return {k: statistics.median(v) for k, v in times.items() if v}, times


def step_args(p: argparse.ArgumentParser) -> None:
    """The options every step benchmark takes; ``--quick`` means 2 layers, 4 steps."""
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--steps", type=int, default=8, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2 layers, 4 steps")
    p.add_argument("--json", action="store_true")


def parse_step_args(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    a = p.parse_args(argv)
    if a.quick:
        a.layers, a.steps, a.warmup = 2, 4, 1
    return a


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    step_args(p)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--r", type=int, default=8)
    a = parse_step_args(p, argv)
    from tnpeft.contract import plan_stats, reset_plan_cache

    targets = ["c_attn", "c_proj", "c_fc"]
    base = build(a.layers)
    models = {"peft": peft_model(base, a.r, targets), "tnpeft": tnpeft_model(base, a.r, targets)}
    steps = {k: stepper(m) for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 50257, (a.batch, a.seq), generator=gen) for _ in range(a.warmup + a.steps)]
    reset_plan_cache()
    interleave(steps, batches[: a.warmup], a.warmup)
    planned_after_warmup = plan_stats().plans_built
    med, times = interleave(steps, batches[a.warmup:], 0)
    stats = plan_stats()
    result = {
        "model": f"GPT-2 shape, {a.layers} layers, width 768, random weights",
        "batch": f"{a.batch}x{a.seq} tokens", "r": a.r, "targets": targets, "threads": torch.get_num_threads(),
        "median_step_seconds": med, "ratio_tnpeft_over_peft": med["tnpeft"] / med["peft"], "target": 1.00,
        "plans_built_in_timed_steps": stats.plans_built - planned_after_warmup,
        "plan_cache": stats.as_dict(),
    }
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['model']}; {result['batch']}; LoRA r={a.r} on {targets}; {result['threads']} threads")
        for k, v in med.items():
            print(f"  {k:7} median step {v * 1000:8.1f} ms   (steps: {', '.join(f'{t * 1000:.0f}' for t in times[k])})")
        print(f"  P1 tnpeft-LoRA / peft-LoRA step time = {result['ratio_tnpeft_over_peft']:.3f}   (target ≤ 1.00)")
        print(f"  plans built during timed steps: {result['plans_built_in_timed_steps']} "
              f"(cache hit rate {stats.hit_rate:.1%}, planning total {stats.planning_seconds * 1000:.1f} ms)")
    return 0


def peak_rss() -> int:
    """This process's resident-set high-water mark, bytes (``VmHWM``: the current address space's,
    unlike ``getrusage``'s ``ru_maxrss``, which after ``fork`` + ``exec`` keeps the parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    sys.exit(main())

