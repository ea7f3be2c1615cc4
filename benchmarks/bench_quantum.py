"""Quantum-PEFT against tnpeft LoRA (P2) and the Pauli frame's growth with N (P6).

P2: training step of Quantum-PEFT (pauli, rank 8, 1 layer) over tnpeft LoRA r=8 on a
GPT-2-small-shaped model (random weights), 4 × 128 tokens, attention and MLP targets; the two are
stepped alternately in one process; ratio of medians. Target ≤ 1.05.

P6: time to materialize (forward + backward) one Pauli frame N × 8 for N = 1,024 … 16,384;
growth per doubling of N. Target ≤ 1.3×.

    python benchmarks/bench_quantum.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_lora import build, interleave, parse_step_args, step_args, stepper  # noqa: E402


def frame_times(sizes, k=8, layers=1, repeats=20):
    from tnpeft.params.unitary import PauliFrame

    out = {}
    for n in sizes:
        m = PauliFrame(n, k, layers=layers)
        for _ in range(3):
            m().sum().backward()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            m().sum().backward()
            ts.append(time.perf_counter() - t0)
        out[n] = statistics.median(ts)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    step_args(p)
    a = parse_step_args(p, argv)
    import tnpeft

    targets = ["c_attn", "c_proj", "c_fc"]
    base = build(a.layers)
    models = {
        "lora": tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("lora", targets, r=8, alpha=16)),
        "quantum_peft": tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("quantum_peft", targets, rank=8)),
    }
    steps = {k: stepper(m) for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 50257, (4, 128), generator=gen) for _ in range(a.warmup + a.steps)]
    med, _ = interleave(steps, batches, a.warmup)
    sizes = [1024, 2048, 4096, 8192, 16384]
    ft = frame_times(sizes)
    growth = [ft[b] / ft[a] for a, b in zip(sizes, sizes[1:])]
    counts = {k: tnpeft.trainable_parameters(m).trainable for k, m in models.items()}
    res = {"median_step_seconds": med, "P2_ratio_qpeft_over_lora": med["quantum_peft"] / med["lora"], "P2_target": 1.05,
           "trainable_parameters": counts, "P6_frame_seconds": ft, "P6_growth_per_doubling": growth,
           "P6_target": 1.3, "layers": a.layers}
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"GPT-2 shape, {a.layers} layers, 4x128 tokens, targets {targets}, {torch.get_num_threads()} threads")
    for k, v in med.items():
        print(f"  {k:13} median step {v * 1000:8.1f} ms   trainable {counts[k]:,}")
    print(f"  P2 Quantum-PEFT / tnpeft-LoRA step = {res['P2_ratio_qpeft_over_lora']:.3f}   (target ≤ 1.05)")
    print("  P6 Pauli frame N×8, forward+backward: " + ", ".join(f"{n}: {t * 1000:.2f} ms" for n, t in ft.items()))
    print("     growth per doubling: " + ", ".join(f"{g:.2f}×" for g in growth) + "   (target ≤ 1.3×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
