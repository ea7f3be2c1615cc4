"""A tiny Llama (hidden 32, 2 layers) and one small configuration per built-in method, shared by the
tests of the peft method, checkpointing, mixed batches and quantized bases."""

from __future__ import annotations

import torch

#: every built-in method with hyper-parameters that fit q_proj (32 → 32) and v_proj (32 → 16)
METHODS: dict[str, dict] = {
    "lora": {"r": 4, "alpha": 8},
    "adalora": {"r": 4, "target_r": 2},
    "quantum_peft": {"rank": 4},
    "oft": {"block_size": 8},
    "qpa": {"r": 2, "qnn_layers": 2, "hidden": [8, 8]},
    "qwthn": {"r": 4},
    "mpo": {"r": 4},
}
#: the methods whose update adds to the layer's output (all but OFT, which transforms the input)
ADDITIVE = [m for m in METHODS if m != "oft"]
TARGETS = ["q_proj", "v_proj"]
VOCAB = 64


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def token_ids(batch: int = 3, seq: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Move every adapter value (zero-initialised ones included) by seeded noise, so that every node
    takes part in outputs and gradients."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if ".tnpeft_adapters." in name and p.dtype.is_floating_point:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def adapter_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gradients of the adapter parameters by their path inside the transformers model."""
    out = {}
    for name, p in model.named_parameters():
        if ".tnpeft_adapters." in name and p.grad is not None:
            out[name.removeprefix("base_model.model.")] = p.grad.clone()
    return out
