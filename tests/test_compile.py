"""torch.compile captures an adapted model (graph capture checked with the aot_eager backend, which
needs no C++ toolchain; benchmarks/run.py --compile measures inductor's speed)."""

import copy

import pytest
import torch
from conftest import tiny_gpt2

import tnpeft


def test_compiled_adapted_model_matches_eager():
    # one compiled call per adapter (a second call signature would compile the model again): the logits, the
    # loss and every adapter gradient equal the eager model's
    base = tiny_gpt2()
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    for cfg in (tnpeft.AdapterConfig("lora", ["c_attn", "c_fc"], r=4, init_b="normal"),
                tnpeft.AdapterConfig("quantum_peft", ["c_attn"], rank=3)):
        m = tnpeft.inject(copy.deepcopy(base), cfg)
        trained = [p for p in m.parameters() if p.requires_grad]
        out = m(ids, labels=ids)
        want = torch.autograd.grad(out.loss, trained)
        got_out = torch.compile(m, backend="aot_eager")(ids, labels=ids)
        torch.testing.assert_close(got_out.logits, out.logits, atol=1e-5, rtol=1e-5)
        got = torch.autograd.grad(got_out.loss, trained)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method, train, peft", [("quantum_peft", True, False), ("qpa", False, True)])
def test_compiled_model_recompiles_at_most_once(method, train, peft):
    """10 forwards of one shape: at most one frame compiled after the first call (no guard on a
    counter or a cache), and no graph break in the adapters."""
    from peft import get_peft_model
    from tiny_llama import METHODS, TARGETS, tiny_llama, token_ids
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny_llama()
    if peft:
        model = get_peft_model(model, tnpeft.TNPeftConfig(method=method, target_modules=TARGETS, **METHODS[method]))
    else:
        tnpeft.inject(model, tnpeft.AdapterConfig(method, TARGETS, **METHODS[method]))
    model.train(train)
    compiled = torch.compile(model, backend="eager")
    x = token_ids()
    frames = []
    for _ in range(10):
        if train:
            compiled(x, labels=x).loss.backward()
        else:
            with torch.no_grad():
                compiled(x)
        frames.append(counters["frames"]["total"])
    assert frames[-1] - frames[0] <= 1, frames
    assert not counters["graph_break"], dict(counters["graph_break"])
