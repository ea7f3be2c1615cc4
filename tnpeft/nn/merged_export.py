"""The merged form of an adapter that a peft LoRA checkpoint cannot hold (a multiplicative one, such
as OFT, IA³ or BOFT): the whole model with the adapter merged into its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tnpeft.errors import NonFiniteError
from tnpeft.fileio import MODEL, atomic_write_bytes, checkpoint_folder, checkpoint_kinds, tensors_to_bytes
from tnpeft.nn.layer import TNLinear
from tnpeft.nn.model import tn_layers
from tnpeft.runtime import merged_bias, merged_weight


def check_finite(tensors: dict[str, torch.Tensor], adapter_name: str) -> None:
    """Refuse to write NaN or infinite values (peft would load them without a word)."""
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise NonFiniteError(f"{key!r} of adapter {adapter_name!r} holds NaN or infinite values (or overflows "
                                 f"{str(t.dtype).removeprefix('torch.')}); nothing was written — check the adapter "
                                 "with tnpeft.verify")


def write_merged(model: nn.Module, d: Path, adapter_name: str, layers: list[tuple[str, TNLinear]],
                 overwrite: bool) -> dict[str, dict[str, Any]]:
    """Write the whole model with adapter ``adapter_name`` merged (other adapters left out; what is
    merged already stays in) into folder ``d``, as ``model.safetensors`` (+ ``config.json``), under
    the folder's lock (:func:`tnpeft.fileio.checkpoint_folder`, kind model). Returns
    ``{module: {"rank", "exact", "error", "how": "merged"}}`` of the modules merged here."""
    adapted = {p: layer for p, layer in layers}
    state: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    modules: dict[str, dict[str, Any]] = {}
    wrapped = {p for p, _ in tn_layers(model)}
    with torch.no_grad():
        for key, v in model.state_dict().items():
            owner = next((p for p in wrapped if key.startswith(p + ".")), None)
            if owner is not None:
                rest = key[len(owner) + 1:]
                if not rest.startswith("base_layer."):
                    continue                                 # adapter values: not part of the plain model
                key = f"{owner}.{rest[len('base_layer.'):]}"
                layer = cast(TNLinear, model.get_submodule(owner))
                if owner in adapted and rest == "base_layer.weight" and adapter_name not in layer.merged_adapters:
                    v = merged_weight(layer.tn_adapters[adapter_name], v, layer.fan_in_fan_out)
                    modules[owner] = {"rank": None, "exact": True, "error": 0.0, "how": "merged"}
                elif owner in adapted and rest == "base_layer.bias" and adapter_name not in layer.merged_adapters:
                    v = merged_bias(layer.tn_adapters[adapter_name], v)        # an output map that scales it
            ident = (v.data_ptr(), v.numel())
            if v.numel() and ident in seen:                  # a tied weight (GPT-2's lm_head): written once
                continue
            seen.add(ident)
            state[key] = v
    check_finite({k: state[k] for p in modules for k in (f"{p}.weight", f"{p}.bias") if k in state}, adapter_name)
    blob = tensors_to_bytes(state, metadata={"format": "pt"})
    config: Any = getattr(model, "config", None)
    config = config.to_json_string(use_diff=False).encode() if hasattr(config, "to_json_string") else None
    with checkpoint_folder(d, MODEL, overwrite=overwrite):
        for name in checkpoint_kinds(d).get(MODEL, []):   # an earlier save's shards (or config) go too
            if name != "model.safetensors" and (name != "config.json" or config is None):
                (d / name).unlink(missing_ok=True)
        atomic_write_bytes(d / "model.safetensors", blob)
        if config is not None:
            atomic_write_bytes(d / "config.json", config)
    return modules
