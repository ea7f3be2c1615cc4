"""Held-out metrics: accuracy and macro-F1 for classification, loss and perplexity for causal LM."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tnpeft.errors import ConfigError
from tnpeft.nn import adapter_config
from tnpeft.nn.model import active_adapter_names

#: the token length of an evaluation when neither the call nor the adapter's training says one
DEFAULT_MAX_LENGTH = 48


def macro_f1(pred: list[int], gold: list[int], n_classes: int) -> float:
    """Unweighted mean of the per-class F1 scores."""
    f1s = []
    for c in range(n_classes):
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        fp = sum(p == c and g != c for p, g in zip(pred, gold))
        fn = sum(p != c and g == c for p, g in zip(pred, gold))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / n_classes


def make_batch(task: str, data: Any, idx: list[int], tokenizer: Any, max_length: int,
               device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The model inputs of examples ``idx`` (tokenized, padded, with labels), on ``device``."""
    if task == "classification":
        enc = tokenizer([data.texts[j] for j in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        batch = {**enc, "labels": torch.tensor([data.labels[j] for j in idx])}
    else:
        ids = data.blocks[idx]
        batch = {"input_ids": ids, "labels": ids}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else dict(batch)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` checked: ``None``/``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when
    present). A device that is not there is a :class:`ConfigError` naming ``device``."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a device; expected cpu, cuda, cuda:N or auto",
                          field="device") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device {device!r} is not available here (torch sees {torch.cuda.device_count()} CUDA "
                          "device(s)); use --device cpu", field="device")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r}: expected cpu, cuda, cuda:N or auto", field="device")
    return dev


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the first one's device; CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def training_length(model: nn.Module) -> int | None:
    """The ``max_length`` the model's active adapter(s) were trained with, if :func:`fit` recorded
    one (and all agree)."""
    found = {((adapter_config(model, n) or {}).get("training") or {}).get("max_length")
             for n in active_adapter_names(model)}
    found.discard(None)
    return found.pop() if len(found) == 1 else None


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer: Any, data: Any, task: str = "classification", batch_size: int = 128,
             max_length: int | None = None, desc: str = "eval", progress: bool = True) -> dict[str, float]:
    """Classification: ``accuracy`` and ``macro_f1``; causal LM: ``loss`` and ``perplexity``.

    ``max_length`` (tokens per text or block) defaults to the length the model's active adapter was
    trained with (:func:`fit` records it with the adapter), else :data:`DEFAULT_MAX_LENGTH`."""
    if max_length is None:
        max_length = training_length(model) or DEFAULT_MAX_LENGTH
    was_training = model.training
    device = model_device(model)
    model.eval()
    preds: list[int] = []
    losses: list[tuple[float, int]] = []
    try:
        for i in tqdm(range(0, len(data), batch_size), desc=desc, leave=False, disable=not progress):
            idx = list(range(i, min(len(data), i + batch_size)))
            batch = make_batch(task, data, idx, tokenizer, max_length, device)
            out = model(**batch)
            if task == "classification":
                preds.extend(out["logits"].argmax(-1).tolist())
            else:
                losses.append((float(out["loss"]), len(idx)))
    finally:
        model.train(was_training)
    if task == "classification":
        n_classes = max(len(data.label_names), max(data.labels) + 1)
        acc = sum(p == g for p, g in zip(preds, data.labels)) / len(data)
        return {"accuracy": acc, "macro_f1": macro_f1(preds, data.labels, n_classes)}
    loss = sum(x * n for x, n in losses) / sum(n for _, n in losses)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
