"""Small task heads around transformers encoders."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MeanPoolClassifier(nn.Module):
    """An encoder (e.g. MiniLM), mean pooling over non-padding tokens — how sentence-transformers
    models such as all-MiniLM-L6-v2 were trained to be used — and a linear head ``head``."""

    def __init__(self, encoder: nn.Module, num_labels: int):
        super().__init__()
        self.encoder = encoder
        config: Any = encoder.config   # a transformers config
        self.head = nn.Linear(config.hidden_size, num_labels)
        self.config = config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                **kwargs: Any) -> dict[str, torch.Tensor]:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        logits = self.head(pooled)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out
