"""torch.compile captures an adapted model (graph capture checked with the aot_eager backend, which
needs no C++ toolchain; benchmarks/run.py --compile measures inductor's speed)."""

import copy

import torch
from conftest import tiny_gpt2

import tnpeft


def test_compiled_adapted_model_matches_eager():
    base = tiny_gpt2()
    for cfg in (tnpeft.AdapterConfig("lora", ["c_attn", "c_fc"], r=4, init_b="normal"),
                tnpeft.AdapterConfig("quantum_peft", ["c_attn"], rank=3)):
        m = tnpeft.inject(copy.deepcopy(base), cfg)
        ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(0))
        want = m(ids).logits
        compiled = torch.compile(m, backend="aot_eager")
        got = compiled(ids).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        compiled(ids, labels=ids).loss.backward()
        assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
