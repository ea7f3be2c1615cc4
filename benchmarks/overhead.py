"""Each adapter's own cost: time (and memory) it adds to the frozen model's step, against peft LoRA's.

A training step is mostly the frozen model, so whole-step ratios hide the adapter. The figure here
is the **overhead** ``T_adapter − T_base``: ``T_base`` is the same step with no adapter, inputs
requiring grad so that backward still runs through every layer; the ratio divides by peft LoRA
r=8's overhead on the same model. Steps of all models are interleaved (order flipped every round)
so that drift hits all alike; figures are medians. Forward-only (inference, unmerged) overhead and
peak-memory overhead (peak minus the frozen model's, each model in a fresh process) likewise.

    python benchmarks/overhead.py                 # GPT-2 shape (4 layers, 768 wide) and the real MiniLM
    python benchmarks/overhead.py --quick         # 2 layers, few steps: a smoke test
    python benchmarks/overhead.py --device cuda --llama   # a Llama-shaped model on a GPU (bf16 autocast)
    python benchmarks/overhead.py --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lora import peak_rss  # noqa: E402

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
BERT_TARGETS = ["query", "key", "value", "output.dense", "intermediate.dense"]   # not the pooler
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: ratio of overheads each adapter must stay under: against peft LoRA r=8, or against a named reference
TARGETS: dict[str, tuple[float, str]] = {
    "lora": (0.90, "peft_lora"), "quantum_peft": (1.00, "peft_lora"), "quantum_peft_L2": (1.10, "peft_lora"),
    "adalora": (1.00, "peft_adalora"), "oft": (1.00, "peft_oft"), "qpa": (1.20, "peft_lora"),
    "qwthn": (1.50, "peft_lora"), "mpo": (1.20, "peft_lora"), "tt_lora": (1.20, "peft_lora"),
}


# ------------------------------------------------------------------------------------------ models
def gpt2(layers: int, width: int = 768):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=width, n_head=12, n_positions=1024, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0))


def llama(layers: int, width: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=width, intermediate_size=int(width * 2.75) // 64 * 64,
                                        num_hidden_layers=layers, num_attention_heads=max(1, width // 128),
                                        num_key_value_heads=max(1, width // 128), vocab_size=32000))


def minilm(layers: int | None = None):
    """The real all-MiniLM-L6-v2 (its first ``layers`` layers when given: a smoke test)."""
    from transformers import AutoModel

    from tnpeft.train.offline_assets import minilm_path

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(minilm_path())
    if layers is not None and layers < len(model.encoder.layer):
        model.encoder.layer = model.encoder.layer[:layers]
        model.config.num_hidden_layers = layers
    return model


def _sizes(base, targets):
    from tnpeft.nn.layer import LINEAR_TYPES, layer_sizes

    return [layer_sizes(m) for n, m in base.named_modules() if isinstance(m, LINEAR_TYPES)
            and any(n == t or n.endswith("." + t) for t in targets)]


def _equal_count(base, targets, build) -> int:
    """The bond ``b`` whose graphs ``build(in, out, b)`` have the parameter count closest to LoRA r=8's."""
    sizes = _sizes(base, targets)
    lora_n = sum(8 * (a + b) for a, b in sizes)
    return min(range(1, 65), key=lambda b: abs(sum(build(a, c, b).num_parameters() for a, c in sizes) - lora_n))


def tt_lora(in_features: int, out_features: int, cores: int = 3, bond: int = 8):
    """A TT-LoRA graph written the way a user writes one: one tensor train, ``cores`` input cores
    then ``cores`` output cores (the last starts at zero)."""
    from tnpeft import Dense, Graph
    from tnpeft.adapters import factorize

    legs = [(f"i{t}", s) for t, s in enumerate(factorize(in_features, cores))]
    legs += [(f"o{t}", s) for t, s in enumerate(factorize(out_features, cores))]
    nodes = []
    for t, (leg, s) in enumerate(legs):
        inds = ([f"a{t}"] if t else []) + [leg] + ([f"a{t + 1}"] if t < len(legs) - 1 else [])
        sizes = ([bond] if t else []) + [s] + ([bond] if t < len(legs) - 1 else [])
        nodes.append(Dense(f"G{t}", tuple(inds), tuple(sizes), init="zeros" if t == len(legs) - 1 else "normal"))
    return Graph(nodes, in_index=tuple(n for n, _ in legs[:cores]), out_index=tuple(n for n, _ in legs[cores:]),
                 scale=2.0, name="tt_lora")


def adapter_names(kind: str) -> list[str]:
    names = ["base", "peft_lora", "lora", "peft_adalora", "adalora", "quantum_peft", "quantum_peft_L2"]
    if kind != "gpt2":   # peft's OFT takes nn.Linear only (GPT-2 has Conv1D layers)
        names.append("peft_oft")
    return names + ["oft", "qwthn", "qpa", "mpo", "tt_lora"]


def build_adapter(name: str, kind: str, base, targets, total_steps: int, copy_base: bool = True):
    """One of the models to compare (a deep copy of ``base``, or ``base`` itself without
    ``copy_base``): the frozen base, peft's references, or one of tnpeft's adapters."""
    from peft import AdaLoraConfig, LoraConfig, OFTConfig, get_peft_model

    import tnpeft

    fan = {"fan_in_fan_out": True} if kind == "gpt2" else {}
    model = copy.deepcopy(base) if copy_base else base

    def tn(method, **hp):
        return tnpeft.inject(model, tnpeft.AdapterConfig(method, targets, **hp))

    if name == "base":
        return model.requires_grad_(False)
    if name == "peft_lora":
        return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, **fan))
    if name == "peft_adalora":
        return get_peft_model(model, AdaLoraConfig(init_r=12, target_r=8, total_step=total_steps,
                                                   target_modules=targets, **fan))
    if name == "peft_oft":
        return get_peft_model(model, OFTConfig(r=0, oft_block_size=32, target_modules=targets))
    if name == "mpo":
        return tn("mpo", r=8, bond=_equal_count(base, targets, lambda a, c, b: tnpeft.adapters.mpo(a, c, r=8, bond=b)))
    if name == "tt_lora":
        bond = _equal_count(base, targets, lambda a, c, b: tt_lora(a, c, bond=b))
        return tn(lambda i, o: tt_lora(i, o, bond=bond))
    hp = {"lora": dict(r=8, alpha=16), "adalora": dict(r=12, target_r=8, total_step=total_steps),
          "quantum_peft": dict(rank=8, layers=1), "quantum_peft_L2": dict(rank=8, layers=2),
          "oft": dict(block_size=32), "qwthn": dict(r=8), "qpa": dict(r=8, chunk_size=192, hidden=[32, 32], qnn_layers=4)}
    method = "quantum_peft" if name.startswith("quantum_peft") else name
    return tn(method, **hp[name])


# ------------------------------------------------------------------------------------------ steps
def make_inputs(kind: str, model, batch: int, seq: int, device, seed: int):
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
    return ids


def backbone(model):
    """The transformer under a model's head (GPT-2's ``transformer``, Llama's ``model``; MiniLM is
    one already), through a peft wrapper. Steps are timed without the frozen LM head: at 50,257
    words it is half of GPT-2's step, and its noise would swamp an adapter's overhead."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in ("transformer", "model"):
        inner = getattr(m, name, None)
        if isinstance(inner, torch.nn.Module):
            return inner
    return m


def step_fn(kind: str, name: str, model, device, autocast: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None
    embed = model.get_input_embeddings()
    body = backbone(model)
    count = [0]

    def run(ids, train: bool = True):
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        if not train:
            model.eval()
            with torch.no_grad(), ctx:
                body(inputs_embeds=embed(ids))
            return
        model.train()
        emb = embed(ids).detach().requires_grad_()          # backward runs through every layer
        with ctx:
            loss = body(inputs_embeds=emb).last_hidden_state.float().pow(2).mean()
        loss.backward()
        if opt is not None:
            opt.step()
            count[0] += 1
            if name == "peft_adalora":   # peft's AdaLoRA asks for this after every step
                model.base_model.update_and_allocate(count[0])
            opt.zero_grad(set_to_none=True)

    return run


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, inputs: list, warmup: int, train: bool, device) -> dict[str, list[float]]:
    """Per model, its time on each input after ``warmup``: every model runs input ``i`` before any
    runs input ``i + 1`` (order flipped every round), so that the rounds pair the models."""
    for x in inputs[:warmup]:
        for f in fns.values():
            f(x, train)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i, x in enumerate(inputs[warmup:]):
        for k in (list(fns) if i % 2 == 0 else list(reversed(fns))):
            _sync(device)
            t0 = time.perf_counter()
            fns[k](x, train)
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def paired_overhead(times: dict[str, list[float]], base: str = "base") -> dict[str, float]:
    """Each model's overhead over ``base``: the median over rounds of ``t_model − t_base`` of the
    same round (a drift of the machine between rounds cancels; a difference of medians would not)."""
    return {k: statistics.median(a - b for a, b in zip(v, times[base])) for k, v in times.items() if k != base}


def square_frames(n: int = 3072, tokens: int = 512, repeats: int = 5, device: str = "cpu") -> dict:
    """A square Givens frame (``N × N``, ⌈log₂N⌉ butterfly layers — OFT's rotation with one block
    of the whole width): forward + backward of the matrix, and of the rotation applied to ``tokens``
    activations, by tnpeft against the layer-by-layer formulation (each layer's pairs gathered
    and written back, the way the rotation was computed before; kept here as the reference).
    Also the largest difference of the two matrices (they are the same rotation)."""
    from tnpeft.params.unitary import GivensFrame
    from tnpeft.params.unitary.reflections import butterfly_pairs

    dev = torch.device(device)
    frame = GivensFrame(n, n, rng=torch.Generator().manual_seed(0)).to(dev)
    pairs = [(torch.tensor(a, device=dev), torch.tensor(b, device=dev)) for a, b in butterfly_pairs(n, frame.n_layers)]

    def layerwise(theta):
        m, off = torch.eye(n, dtype=theta.dtype, device=dev).unsqueeze(0), 0
        for ia, ib in pairs:
            t = theta[:, off:off + ia.numel()].unsqueeze(2)
            off += ia.numel()
            c, s = torch.cos(t), torch.sin(t)
            xa, xb = m[:, ia], m[:, ib]
            m = m.index_copy(1, ia, c * xa - s * xb).index_copy(1, ib, s * xa + c * xb)
        return m[0]

    x = torch.randn(tokens, n, device=dev)

    def timed(fn):
        for _ in range(2):
            fn()
        ts = []
        for _ in range(repeats):
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    def ref_matrix():
        layerwise(frame.flat_param()).sum().backward()

    def tn_matrix():
        frame().sum().backward()

    def ref_applied():                 # U applied to every activation: x Uᵀ
        return x @ layerwise(frame.flat_param()).T

    def tn_applied():                  # the same product, U never formed
        return frame.apply_frame(x.unsqueeze(1)).squeeze(1)

    def ref_apply():
        ref_applied().square().sum().backward()

    def tn_apply():
        tn_applied().square().sum().backward()

    with torch.no_grad():
        err = float((layerwise(frame.flat_param()) - frame()).abs().max())
        err_apply = float((ref_applied() - tn_applied()).abs().max())
    out = {"n": n, "tokens": tokens, "max_abs_difference": err, "apply_max_abs_difference": err_apply}
    for name, ref, new in (("matrix", ref_matrix, tn_matrix), ("apply", ref_apply, tn_apply)):
        r, t = timed(ref), timed(new)
        out[name] = {"reference_ms": r * 1e3, "tnpeft_ms": t * 1e3, "speedup": r / t}
    return out


# ------------------------------------------------------------------------------------------ memory
def _memory_child(kind: str, name: str, layers: int, width: int, batch: int, seq: int, device: str,
                  autocast: bool) -> None:
    dev = torch.device(device)
    base = build_base(kind, layers, width, device)
    targets = TARGETS_OF[kind]
    # no copy of the base: building must peak below a step, so that the process's high-water
    # mark is the step's (model + activations + gradients + optimizer state)
    model = build_adapter(name, kind, base, targets, 100, copy_base=False).to(dev)
    del base
    run = step_fn(kind, name, model, dev, autocast)
    ids = make_inputs(kind, model, batch, seq, dev, 0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        run(ids, True)
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else peak_rss())
    print(json.dumps({"peak": peak}))


def _cuda_memory(kind: str, names: list[str], a) -> dict[str, float]:
    dev = torch.device(a.device)
    base = build_base(kind, a.layers, a.width, a.device)
    batch, seq = tokens(kind, a)
    out = {}
    for name in ["base"] + [n for n in names if n != "base"]:
        # the last model is freed now, not by a garbage collection during this one's build (its
        # reference cycles, adapter ↔ model, outlive `del`): that would lower the allocation below
        # `before` and understate this model's peak (negative figures)
        gc.collect()
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        model = build_adapter(name, kind, base, TARGETS_OF[kind], 100)
        run = step_fn(kind, name, model, dev, a.autocast)
        ids = make_inputs(kind, model, batch, seq, dev, 0)
        for _ in range(2):
            run(ids, True)
        torch.cuda.synchronize(dev)
        out[name] = torch.cuda.max_memory_allocated(dev) - before   # the copy of the model, its step, its optimizer
        del model, run
    return {k: (v - out["base"]) / 2**20 for k, v in out.items() if k != "base"}


def tokens(kind: str, a) -> tuple[int, int]:
    """Batch and sequence length of ``kind``'s inputs (MiniLM: 32 short sentences, as in training)."""
    return ((8 if a.quick else 32), 48) if kind == "bert" else (a.batch, a.seq)


def memory(kind: str, names: list[str], a) -> dict[str, float]:
    """Peak memory of a training step above the frozen model's, MB. CUDA: in this process, one
    model at a time (the allocator's peak is reset before each); CPU: each model in a fresh
    process (the resident-set high-water mark cannot be reset)."""
    if a.device.startswith("cuda"):
        return _cuda_memory(kind, names, a)
    out = {}
    for name in ["base"] + [n for n in names if n != "base"]:
        cmd = [sys.executable, __file__, "--_memory", f"{kind}:{name}", "--layers", str(a.layers), "--width",
               str(a.width), "--batch", str(tokens(kind, a)[0]), "--seq", str(tokens(kind, a)[1]), "--device", a.device]
        if a.autocast:
            cmd.append("--autocast")
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = json.loads(p.stdout.strip().splitlines()[-1])["peak"]
    return {k: (v - out["base"]) / 2**20 for k, v in out.items() if k != "base"}


TARGETS_OF = {"gpt2": GPT2_TARGETS, "bert": BERT_TARGETS, "llama": LLAMA_TARGETS}


def build_base(kind: str, layers: int, width: int, device: str = "cpu"):
    """The frozen model, on ``device`` (random models are initialised there: a 1B-parameter Llama
    initialises in seconds on a GPU, in minutes on a CPU)."""
    if kind == "bert":   # the real model's 6 layers, or fewer in a smoke test
        return minilm(layers if layers < 4 else None).to(device)
    with torch.device(device):
        return gpt2(layers, width) if kind == "gpt2" else llama(layers, width)


# ------------------------------------------------------------------------------------------ suite
def suite(kind: str, a) -> dict:
    import tnpeft

    device = torch.device(a.device)
    base = build_base(kind, a.layers, a.width, a.device)
    targets = TARGETS_OF[kind]
    names = [n for n in adapter_names(kind) if not a.adapters or n in ("base", "peft_lora") or n in a.adapters
             or TARGETS.get(n, (0, ""))[1] == n]
    names = [n for n in adapter_names(kind) if n in names or any(TARGETS.get(m, (0, ""))[1] == n for m in names)]
    models = {n: build_adapter(n, kind, base, targets, a.warmup + a.steps + 4) for n in names}
    for m in models.values():
        m.to(device)
    fns = {k: step_fn(kind, k, m, device, a.autocast) for k, m in models.items()}
    batch, seq = tokens(kind, a)
    inputs = [make_inputs(kind, models["base"], batch, seq, device, s) for s in range(a.warmup + a.steps)]
    step_times = interleaved(fns, inputs, a.warmup, True, device)
    fwd_times = interleaved(fns, inputs[: a.warmup + max(4, a.steps // 2)], a.warmup, False, device)
    step = {k: statistics.median(v) for k, v in step_times.items()}
    fwd = {k: statistics.median(v) for k, v in fwd_times.items()}
    over, fover = paired_overhead(step_times), paired_overhead(fwd_times)
    mem = memory(kind, list(models), a) if a.memory else {}
    res = {"model": kind, "layers": getattr(base.config, "num_hidden_layers", a.layers), "tokens": f"{batch}x{seq}", "device": a.device,
           "step_ms": {k: v * 1e3 for k, v in step.items()}, "forward_ms": {k: v * 1e3 for k, v in fwd.items()},
           "overhead_ms": {k: v * 1e3 for k, v in over.items()},
           "forward_overhead_ms": {k: v * 1e3 for k, v in fover.items()}, "memory_overhead_mb": mem,
           "trainable": {k: sum(p.numel() for p in m.parameters() if p.requires_grad) for k, m in models.items()},
           "ratio": {}, "forward_ratio": {}, "memory_ratio": {}, "step_ratio": {}, "targets": {}}
    for k in over:
        ref = TARGETS.get(k, (None, "peft_lora"))[1]
        if ref not in over:   # no reference on this model (peft's OFT on Conv1D): the ratio to peft LoRA, no target
            ref = "peft_lora"
        res["ratio"][k] = over[k] / over[ref] if over[ref] > 0 else float("nan")
        res["forward_ratio"][k] = fover[k] / fover["peft_lora"] if fover["peft_lora"] > 0 else float("nan")
        res["step_ratio"][k] = step[k] / step["peft_lora"]
        if mem and mem.get("peft_lora", 0) > 0:
            res["memory_ratio"][k] = mem[k] / mem["peft_lora"]
        if k in TARGETS and TARGETS[k][1] == ref:
            res["targets"][k] = {"target": TARGETS[k][0], "against": ref, "met": res["ratio"][k] <= TARGETS[k][0]}
    res["plan_stats"] = tnpeft.plan_stats().as_dict()
    return res


def print_suite(res: dict) -> None:
    print(f"  {res['model']} ({res['layers']} layers, {res['tokens']} tokens, {res['device']}): "
          f"base step {res['step_ms']['base']:.0f} ms, forward {res['forward_ms']['base']:.0f} ms")
    print(f"    {'adapter':<16}{'trainable':>11}{'step ms':>9}{'overhead':>10}{'ratio':>8}{'target':>20}"
          f"{'fwd ovh':>9}{'fwd ratio':>10}{'mem MB':>8}{'mem ratio':>10}{'whole step':>11}")
    for k, ov in res["overhead_ms"].items():
        t = res["targets"].get(k)
        tgt = f"≤ {t['target']:.2f} {t['against'].replace('peft_', 'p.')}" + (" ✓" if t["met"] else " ✗") if t else ""
        mem = res["memory_overhead_mb"].get(k)
        mr = res["memory_ratio"].get(k)
        print(f"    {k:<16}{res['trainable'][k]:>11,}{res['step_ms'][k]:>9.0f}{ov:>10.1f}{res['ratio'][k]:>8.2f}{tgt:>20}"
              f"{res['forward_overhead_ms'][k]:>9.1f}{res['forward_ratio'][k]:>10.2f}"
              f"{'' if mem is None else f'{mem:8.0f}'}{'' if mr is None else f'{mr:10.2f}'}"
              f"{res['step_ratio'][k]:>11.3f}")


def print_frames(fr: dict) -> None:
    print(f"  square Givens frame N={fr['n']:,} (forward + backward), tnpeft against the layer-by-layer reference "
          f"(same rotation: max |Δ| {fr['max_abs_difference']:.1e}; applied: {fr['apply_max_abs_difference']:.1e}):")
    for name, what in (("matrix", "the N×N matrix"), ("apply", f"applied to {fr['tokens']} activations")):
        r = fr[name]
        print(f"    {what:<34}{r['reference_ms']:>9.0f} ms → {r['tnpeft_ms']:>7.0f} ms   {r['speedup']:6.1f}×   "
              f"target ≥ {FRAME_SPEEDUP:.0f}×" + (" ✓" if r["speedup"] >= FRAME_SPEEDUP else " ✗"))


#: how much faster than the layer-by-layer formulation a square Givens frame must be
FRAME_SPEEDUP = 10.0


def run(a) -> dict:
    """Every suite ``a`` asks for (``a``: this script's parsed arguments), printed as it goes."""
    out: dict = {}
    print(f"adapter overheads on {a.device} ({torch.get_num_threads()} threads); overhead = median over "
          "interleaved rounds of (T_adapter − T_base), ratio = overhead / the reference's", flush=True)
    for kind in a.models.split(","):
        out[kind] = suite(kind, a)
        print_suite(out[kind])
    if a.frames:
        n, tokens = (1024, 128) if a.quick else (3072, 512)
        out["square_givens"] = square_frames(n, tokens, repeats=3 if a.quick else 5, device=a.device)
        print_frames(out["square_givens"])
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 layers, 4 steps, 64 tokens: a smoke test")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--models", default="gpt2,bert", help="comma-separated: gpt2, bert (the real MiniLM), llama")
    p.add_argument("--llama", action="store_true", help="the GPU shape: Llama, 16 layers, 2048 wide, 8×512 tokens")
    p.add_argument("--autocast", action="store_true", help="bfloat16 autocast")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--adapters", type=lambda v: [x for x in v.split(",") if x],
                   help="comma-separated subset (the frozen base, peft LoRA and each one's reference always run)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--no-frames", dest="frames", action="store_false", help="skip the square Givens frame figure")
    p.add_argument("--_memory", help=argparse.SUPPRESS)
    return p


def settle(a: argparse.Namespace) -> argparse.Namespace:
    """Apply ``--llama`` and ``--quick`` to the sizes (in place; returns ``a``)."""
    if a.llama:
        a.models, a.layers, a.width, a.batch, a.seq = "llama", 16, 2048, 8, 512
    if a.quick:
        a.layers, a.steps, a.warmup, a.seq = 2, 4, 1, 64
        if a.llama:
            a.width = 512
    return a


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a._memory:
        kind, name = a._memory.split(":")
        _memory_child(kind, name, a.layers, a.width, a.batch, a.seq, a.device, a.autocast)
        return 0
    out = run(settle(a))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
