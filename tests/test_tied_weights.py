"""An adapter on a layer whose weight another module shares (a causal LM's lm_head tied to its input
embeddings) trains and runs, but merging it would change the embeddings too: it is refused, naming
both, and the model stays as it was; with the weights untied it merges exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import tnpeft
from tnpeft.errors import AdapterStateError


def tied_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def test_merging_into_a_tied_lm_head_is_refused_and_changes_nothing():
    m = tied_llama()
    assert m.lm_head.weight is m.model.embed_tokens.weight
    tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["lm_head"], r=2, init_b="normal"))
    ids = torch.randint(0, 64, (2, 6))
    before = m(ids).logits.detach()
    emb = m.model.embed_tokens.weight.detach().clone()
    for call in (lambda: tnpeft.merge(m), lambda: tnpeft.merge_and_unload(m)):
        with pytest.raises(AdapterStateError, match="'lm_head'.*tied to 'model.embed_tokens.weight'"):
            call()
        assert torch.equal(m.model.embed_tokens.weight, emb)
        torch.testing.assert_close(m(ids).logits, before, rtol=0, atol=0)


def test_an_untied_head_merges_exactly():
    m = tied_llama()
    m.lm_head.weight = torch.nn.Parameter(m.lm_head.weight.detach().clone())   # the head's own copy
    tnpeft.inject(m, tnpeft.AdapterConfig("lora", ["lm_head"], r=2, init_b="normal"))
    ids = torch.randint(0, 64, (2, 6))
    before = m(ids).logits.detach()
    emb = m.model.embed_tokens.weight.detach().clone()
    tnpeft.merge(m)
    assert torch.equal(m.model.embed_tokens.weight, emb)
    torch.testing.assert_close(m(ids).logits, before, atol=1e-5, rtol=1e-5)
