"""Mixed-adapter batches: sample ``i`` through adapter ``names[i]`` only, in one forward — natively
(``tnpeft.mixed_adapters``) and through peft (``model(..., adapter_names=[...])``) — equal the
per-sample forwards with that adapter alone active, for every additive adapter; what cannot run
that way is refused, never ignored."""

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from peft import get_peft_model
from tiny_llama import ADDITIVE, METHODS, TARGETS, perturb, tiny_llama, token_ids

import tnpeft
from tnpeft.errors import AdapterStateError, ConfigError

BASE = tiny_llama()
X = token_ids(4, 6)


def two_adapters(method, peft):
    """A model with adapters "a" (``method``) and "b" (LoRA on q_proj only), both non-trivial."""
    torch.manual_seed(0)
    model = copy.deepcopy(BASE)
    if peft:
        model = get_peft_model(model, tnpeft.TNPeftConfig(method=method, target_modules=TARGETS, **METHODS[method]),
                               adapter_name="a")
        model.add_adapter("b", tnpeft.TNPeftConfig(method="lora", target_modules=["q_proj"], r=2))
    else:
        tnpeft.inject(model, tnpeft.AdapterConfig(method, TARGETS, **METHODS[method]), adapter_name="a")
        tnpeft.inject(model, tnpeft.AdapterConfig("lora", ["q_proj"], r=2), adapter_name="b")
    perturb(model)
    return model.eval()


def alone(model, name, peft):
    """Logits of the whole batch with only adapter ``name`` active ("__base__": none)."""
    with torch.no_grad():
        if name == "__base__":
            if peft:
                with model.disable_adapter():
                    return model(X).logits
            with tnpeft.disable_adapters(model):
                return model(X).logits
        if peft:
            model.set_adapter(name)
        else:
            tnpeft.set_adapter(model, name)
        return model(X).logits


@pytest.mark.parametrize("peft", [False, True], ids=["native", "peft"])
@pytest.mark.parametrize("method", ADDITIVE)
def test_mixed_batch_equals_per_sample_forwards(method, peft):
    model = two_adapters(method, peft)
    names = ["a", "b", "__base__", "a"]
    want = {n: alone(model, n, peft) for n in set(names)}
    assert (want["a"] - want["b"]).abs().max() > 1e-3 and (want["a"] - want["__base__"]).abs().max() > 1e-3
    with torch.no_grad():
        if peft:
            got = model(X, adapter_names=names).logits
        else:
            with tnpeft.mixed_adapters(model, names):
                got = model(X).logits
    for i, n in enumerate(names):
        torch.testing.assert_close(got[i], want[n][i], atol=1e-5, rtol=1e-5)


@given(st.lists(st.sampled_from(["a", "b", "__base__"]), min_size=4, max_size=4))
def test_any_assignment_of_adapters_to_samples(names):
    model = MODEL
    with torch.no_grad(), tnpeft.mixed_adapters(model, names):
        got = model(X).logits
    for i, n in enumerate(names):
        torch.testing.assert_close(got[i], WANT[n][i], atol=1e-5, rtol=1e-5)


MODEL = two_adapters("quantum_peft", peft=False)
WANT = {n: alone(MODEL, n, False) for n in ("a", "b", "__base__")}


@pytest.mark.parametrize("peft", [False, True], ids=["native", "peft"])
def test_what_cannot_run_per_sample_is_refused(peft):
    oft = two_adapters("oft", peft)
    run = (lambda m, names: m(X, adapter_names=names)) if peft else _native
    with pytest.raises(AdapterStateError, match="multiplicative"):
        run(oft, ["a", "b", "a", "b"])
    model = two_adapters("lora", peft)
    with pytest.raises(AdapterStateError, match="'c'"):
        run(model, ["a", "c", "a", "b"])
    with pytest.raises(AdapterStateError, match="4 samples"):
        run(model, ["a", "b"])
    with pytest.raises(ConfigError, match="one per sample"):
        run(model, "a")
    (model.merge_adapter(["a"]) if peft else tnpeft.merge(model, ["a"]))
    with pytest.raises(AdapterStateError, match="merged"):
        run(model, ["a", "b", "a", "b"])


def _native(model, names):
    with torch.no_grad(), tnpeft.mixed_adapters(model, names):
        return model(X)
