"""Activation checkpointing (``gradient_checkpointing_enable()``, TRL's default) gives the gradients
of the plain backward for every adapter — Quantum-PEFT's and OFT's frames batched across layers and
QPA's hyper-networks included — in both of torch's modes, over two steps (no value kept across
steps), natively and through the peft method."""

import copy

import pytest
import torch
from peft import get_peft_model
from tiny_llama import METHODS, TARGETS, adapter_grads, perturb, tiny_llama, token_ids

import tnpeft
from tnpeft.nn.transaction import SCOPE_ATTR

BASE = tiny_llama()
TARGETS_GC = TARGETS + ["up_proj"]


def grads(method, mode, peft=False):
    torch.manual_seed(0)                                  # the adapters' initial values
    model = copy.deepcopy(BASE)
    if peft:
        model = get_peft_model(model, tnpeft.TNPeftConfig(method=method, target_modules=TARGETS_GC,
                                                          **METHODS[method]))
    else:
        tnpeft.inject(model, tnpeft.AdapterConfig(method, TARGETS_GC, **METHODS[method]))
    perturb(model, seed=3)
    if mode is not None:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": mode == "reentrant"})
        model.enable_input_require_grads()                # reentrant checkpoints need an input that requires grad
    model.train()
    x = token_ids(2, 9)
    out = []
    for _ in range(2):
        model.zero_grad()
        model(x, labels=x).loss.backward()
        out.append(adapter_grads(model))
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_checkpointed_gradients_equal_plain_ones(method):
    want = grads(method, None)
    assert want[0] and all(g.abs().max() > 0 for g in want[0].values())
    for mode in ("non-reentrant", "reentrant"):
        got = grads(method, mode)
        for step in range(2):
            assert got[step].keys() == want[step].keys()
            for k in want[step]:
                # QPA: batched and per-layer hyper-network passes differ in the last bit
                torch.testing.assert_close(got[step][k], want[step][k], atol=1e-6, rtol=1e-5, msg=f"{mode} {k}")


def test_checkpointing_through_the_peft_method():
    want = grads("quantum_peft", None, peft=True)
    got = grads("quantum_peft", "non-reentrant", peft=True)
    for k in want[1]:
        torch.testing.assert_close(got[1][k], want[1][k], atol=1e-6, rtol=1e-5)


def test_frames_stay_batched_without_checkpointing():
    """The per-layer path runs only in checkpointed training forwards."""
    m = tnpeft.inject(copy.deepcopy(BASE), tnpeft.AdapterConfig("quantum_peft", TARGETS, rank=4))
    scope = getattr(m, SCOPE_ATTR)
    m.train()
    m(token_ids())
    assert scope.alone is False
    m.gradient_checkpointing_enable()
    m(token_ids())
    assert scope.alone is True
    m.eval()
    with torch.no_grad():
        m(token_ids())
    assert scope.alone is False
