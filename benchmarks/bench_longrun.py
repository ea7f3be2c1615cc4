"""Numerical robustness over a long run: the worst orthogonality error of every unitary
parametrization across 10,000 optimizer steps at lr 1e-2, in float32 and in bfloat16.

Each frame (N×K, trainable, one per parametrization) is trained with Adam to match a moving random
target, so its parameters travel far from the initialisation (generators grow, angles wrap). Every
``--check-every`` steps the frame is materialized and ``max|UᵀU − I|`` measured in float64.

bfloat16: the parameters are stored in bfloat16, the frame is *computed in float32* and rounded to
bfloat16 once (``FrameModule.frames``). Both errors are reported: of the float32 frame (what the
construction guarantees) and of the rounded bfloat16 frame (bfloat16's 8-bit mantissa: ~4e-3
per entry, whatever the construction).

    .venv/bin/python benchmarks/bench_longrun.py            # 10,000 steps (15–20 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_longrun.py --steps 500 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from tnpeft.params import UNITARY_PARAMS


def orth_error(u: torch.Tensor) -> float:
    u = u.detach().to(torch.float64)
    return (u.transpose(-1, -2) @ u - torch.eye(u.shape[-1], dtype=torch.float64)).abs().max().item()


def run(param: str, dtype: torch.dtype, steps: int, n: int, k: int, check_every: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    opts = {"layers": 2} if param in ("pauli", "givens") else {}
    m = UNITARY_PARAMS[param].build(n, k, (), dtype=dtype, **opts)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    worst32, worst_stored, travel = 0.0, 0.0, 0.0
    p0 = torch.cat([p.detach().float().reshape(-1) for p in m.parameters()])
    for step in range(steps):
        if step % 500 == 0:   # a new target every 500 steps keeps the parameters moving
            target = torch.randn(n, k, generator=g)
        u = m()
        loss = ((u.float() - target) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % check_every == 0 or step == steps - 1:
            with torch.no_grad():
                flat = m.flat_param()
                frame32 = m._compute(flat.float()) if dtype != torch.float32 else m._compute(flat)
                worst32 = max(worst32, orth_error(frame32))
                worst_stored = max(worst_stored, orth_error(m()))
    p1 = torch.cat([p.detach().float().reshape(-1) for p in m.parameters()])
    travel = (p1 - p0).norm().item() / max(p0.norm().item(), 1e-12)
    return {"param": param, "dtype": str(dtype).replace("torch.", ""), "worst_float32_frame": worst32,
            "worst_stored_frame": worst_stored, "relative_parameter_travel": travel}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--check-every", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    print(f"long run: {a.steps:,} Adam steps at lr 1e-2, frames {a.n}×{a.k}, orthogonality checked every "
          f"{a.check_every} steps", flush=True)
    print(f"{'param':<12}{'dtype':<10}{'worst fp32 frame':>18}{'worst stored frame':>20}{'param travel':>14}")
    for param in sorted(UNITARY_PARAMS):
        for dtype in (torch.float32, torch.bfloat16):
            r = run(param, dtype, a.steps, a.n, a.k, a.check_every)
            rows.append(r)
            flag = "" if r["worst_float32_frame"] <= 1e-5 else "   > 1e-5 target"
            print(f"{param:<12}{r['dtype']:<10}{r['worst_float32_frame']:>18.2e}{r['worst_stored_frame']:>20.2e}"
                  f"{r['relative_parameter_travel']:>14.2f}{flag}", flush=True)
    worst = max(r["worst_float32_frame"] for r in rows)
    print(f"worst float32 frame error over all: {worst:.2e} (target ≤ 1e-5); wall {time.perf_counter() - t0:.0f} s")
    if a.json:
        json.dump({"steps": a.steps, "n": a.n, "k": a.k, "rows": rows}, sys.stdout, indent=2)
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
