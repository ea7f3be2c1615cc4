"""Interoperability with Hugging Face peft's LoRA checkpoints.

peft writes ``adapter_config.json`` (``peft_type: "LORA"``, ``r``, ``lora_alpha``,
``target_modules``, ``rank_pattern``, ``alpha_pattern``, ``use_rslora``, …) and
``adapter_model.safetensors`` with keys ``base_model.model.<module path>.lora_A.weight`` (r×in)
and ``….lora_B.weight`` (out×r). tnpeft's LoRA graph has exactly those tensors as nodes ``A``
and ``B``, so a checkpoint moves both ways without any numerical change.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from tnpeft.adapters import lora
from tnpeft.errors import AdapterFileError, AdapterStateError
from tnpeft.fileio import atomic_write_bytes, atomic_write_json, read_json, read_safetensors, tensors_to_bytes
from tnpeft.graph import Dense, Graph
from tnpeft.nn.model import attach_graphs, tn_layers
from tnpeft.nn.saving import fill_and_activate, linear_sizes_at

_PREFIX = "base_model.model."
_KEY = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<which>[AB])\.weight$")


def _pattern_value(pattern: dict, path: str, default):
    # peft: a key matches when the module name ends with it on a dot boundary (regex allowed)
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def import_peft(model: nn.Module, directory: str | os.PathLike, adapter_name: str = "default",
                is_trainable: bool = False) -> nn.Module:
    """Load a peft LoRA checkpoint folder into ``model`` as tnpeft LoRA adapter ``adapter_name``.

    Supports per-module ranks and alphas (``rank_pattern``/``alpha_pattern``), rsLoRA scaling and
    dropout. Checkpoints with trained biases, DoRA, embedding or convolution LoRA are refused with a
    clear error. Everything is checked before the model changes.
    """
    d = Path(directory)
    cfg = read_json(d / "adapter_config.json", "peft adapter config")
    src = f"peft checkpoint {str(d)!r}"
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        raise AdapterFileError(f"{src}: field 'peft_type' is {cfg.get('peft_type') if isinstance(cfg, dict) else None!r}; "
                               "only LoRA checkpoints ('LORA') can be imported")
    for field, ok in (("bias", "none"), ("use_dora", False)):
        if cfg.get(field, ok) not in (ok, None):
            raise AdapterFileError(f"{src}: field {field!r} is {cfg.get(field)!r}; tnpeft imports plain LoRA "
                                   f"({field}={ok!r})")
    tensors = read_safetensors(d / "adapter_model.safetensors")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise AdapterFileError(f"{src}: tensor {key!r} is not a LoRA A/B weight of a linear layer "
                                   "(expected 'base_model.model.<module>.lora_A.weight' / '.lora_B.weight')")
        pairs.setdefault(m["path"], {})[m["which"]] = v
    if not pairs:
        raise AdapterFileError(f"{src}: the weights file holds no LoRA tensors")
    rank_pattern = cfg.get("rank_pattern") or {}
    alpha_pattern = cfg.get("alpha_pattern") or {}
    graphs, values = {}, {}
    for path, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise AdapterFileError(f"{src}: module {path!r} has lora_{'A' if 'A' in ab else 'B'} but not its partner")
        n_in, n_out = linear_sizes_at(model, path, src)
        a, b = ab["A"], ab["B"]
        r = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != n_in or tuple(b.shape) != (n_out, r):
            raise AdapterFileError(f"{src}: module {path!r} maps {n_in} → {n_out} but lora_A is {tuple(a.shape)} and "
                                   f"lora_B is {tuple(b.shape)}; expected ({r}, {n_in}) and ({n_out}, {r})")
        r_cfg = _pattern_value(rank_pattern, path, cfg.get("r", r))
        if r_cfg != r:
            raise AdapterFileError(f"{src}: module {path!r} has rank {r} in its weights but {r_cfg} in its config")
        alpha = _pattern_value(alpha_pattern, path, cfg.get("lora_alpha", 8))
        graphs[path] = lora(n_in, n_out, r=r, alpha=alpha, dropout=float(cfg.get("lora_dropout", 0.0) or 0.0),
                            use_rslora=bool(cfg.get("use_rslora", False)))
        values[path] = {"A.weight": a, "B.weight": b}
    attach_graphs(model, graphs, adapter_name, {"method": "lora", "imported_from": "peft",
                                                "target_modules": sorted(graphs)})
    return fill_and_activate(model, adapter_name, values, is_trainable)


def _is_lora(g: Graph) -> bool:
    a, b = g.nodes.get("A"), g.nodes.get("B")
    return (set(g.nodes) == {"A", "B"} and isinstance(a, Dense) and isinstance(b, Dense) and not g.hypernetworks
            and g.mode == "add" and a.inds == ("r", "in") and b.inds == ("out", "r"))


def _lora_scaling(g: Graph) -> tuple[int, bool, float]:
    """``(r, use_rslora, alpha)`` with ``scale = alpha / r`` (``alpha / √r`` with rsLoRA): the
    recorded hyper-parameters when they agree with the graph's scale, else derived from it."""
    r = g.nodes["A"].sizes[0]
    hp = g.meta.get("hparams", {})
    rs = bool(hp.get("use_rslora", False))
    denom = math.sqrt(r) if rs else r
    alpha = hp.get("alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isclose(alpha / denom, g.scale):
        alpha = g.scale * denom
    return r, rs, alpha


def export_peft(model: nn.Module, directory: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write tnpeft LoRA adapter ``adapter_name`` as a peft checkpoint that
    ``peft.PeftModel.from_pretrained(base_model, directory)`` loads. Only LoRA graphs can be exported."""
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    rslora: set[bool] = set()
    dropout: set[float] = set()
    conv1d = False
    for path, layer in tn_layers(model):
        if adapter_name not in layer.tn_adapters:
            continue
        g = layer.tn_adapters[adapter_name].graph
        if not _is_lora(g):
            raise AdapterStateError(f"module {path!r}: adapter {adapter_name!r} is not a LoRA graph (dense A[r, in] "
                                    "and B[out, r], additive, not generated); only LoRA adapters can be written as "
                                    "peft checkpoints")
        mod = layer.tn_adapters[adapter_name]
        tensors[f"{_PREFIX}{path}.lora_A.weight"] = mod.tensor("A")
        tensors[f"{_PREFIX}{path}.lora_B.weight"] = mod.tensor("B")
        r, use_rslora, alpha = _lora_scaling(g)
        ranks[path] = r
        alphas[path] = alpha
        rslora.add(use_rslora)
        dropout.add(g.dropout)
        conv1d = conv1d or layer.fan_in_fan_out
    if not tensors:
        raise AdapterStateError(f"the model has no adapter named {adapter_name!r}")
    if len(rslora) > 1:
        raise AdapterStateError("peft has one use_rslora flag per checkpoint; this adapter mixes both")
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    cfg = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None),
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": max(dropout),
        "target_modules": sorted(ranks),
        "rank_pattern": {re.escape(p): v for p, v in ranks.items() if v != r},
        "alpha_pattern": {re.escape(p): v for p, v in alphas.items() if v != alpha},
        "use_rslora": rslora.pop(),
        "fan_in_fan_out": conv1d,
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    d = Path(directory)
    atomic_write_bytes(d / "adapter_model.safetensors", tensors_to_bytes(tensors, metadata={"format": "pt"}))
    atomic_write_json(d / "adapter_config.json", cfg)
    return d
