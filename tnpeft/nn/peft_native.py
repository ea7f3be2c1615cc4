"""peft checkpoints of the tensor-network tuners (LoHa, LoKr, VeRA, IA³, OFT, BOFT, HRA, FourierFT and
the others of :data:`tnpeft.adapters.PEFT_FORMATS`) into a model and out of it: the model side of
:mod:`tnpeft.adapters.peft_formats`.

``tnpeft.import_peft`` reads any of them (LoRA stays in :mod:`tnpeft.nn.peft_compat`);
``tnpeft.export_peft(..., native=True)`` writes a model's adapter in its own tuner's format, which
``peft.PeftModel.from_pretrained`` loads. Both check everything first and change nothing on error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.adapters import PEFT_FORMATS, PeftLayer, format_for_method, method_of
from tnpeft.errors import AdapterFileError, AdapterStateError, ConfigError, NotMergeableError
from tnpeft.fileio import (
    PEFT_ADAPTER,
    atomic_write_bytes,
    atomic_write_json,
    checkpoint_folder,
    read_safetensors,
    tensors_to_bytes,
)
from tnpeft.nn.layer import LINEAR_TYPES, TNLinear
from tnpeft.nn.merged_export import check_finite
from tnpeft.nn.model import adapter_method, adapter_names, build_modules, check_adapter_name, saved_modules, tn_layers
from tnpeft.nn.saving import linear_sizes_at, put_adapter
from tnpeft.nn.shared_store import shared_values
from tnpeft.storage.adapter_folder import VALUE_DTYPES, cast_state

_PREFIX = "base_model.model."


def _layer(model: nn.Module, path: str, src: str) -> PeftLayer:
    n_in, n_out = linear_sizes_at(model, path, src)
    m = model.get_submodule(path)
    conv = m.fan_in_fan_out if isinstance(m, TNLinear) else isinstance(m, LINEAR_TYPES) and not isinstance(m, nn.Linear)
    return PeftLayer(path, n_in, n_out, conv)


def import_native(model: nn.Module, d: Path, cfg: dict[str, Any], adapter_name: str, is_trainable: bool) -> nn.Module:
    """Import a peft checkpoint of a tensor-network tuner (``cfg["peft_type"]`` one of
    :data:`tnpeft.adapters.PEFT_FORMATS`) as adapter ``adapter_name``."""
    check_adapter_name(adapter_name)
    if adapter_name in adapter_names(model):
        raise AdapterStateError(f"the model already has an adapter named {adapter_name!r}; pick another name or "
                                "delete it first")
    src = f"peft checkpoint {str(d)!r}"
    fmt = PEFT_FORMATS.get(str(cfg.get("peft_type")))
    if fmt is None:
        raise AdapterFileError(f"{src}: field 'peft_type' is {cfg.get('peft_type')!r}; tnpeft imports 'LORA' and "
                               f"{sorted(PEFT_FORMATS)}")
    tensors = read_safetensors(d / "adapter_model.safetensors")
    per: dict[str, dict[str, torch.Tensor]] = {}
    extra: dict[str, torch.Tensor] = {}
    for key, v in tensors.items():
        if v.dtype not in VALUE_DTYPES:
            raise AdapterFileError(f"{src}: tensor {key!r} has dtype {v.dtype}; expected float16, bfloat16, float32 "
                                   "or float64")
        suffix = next((s for s in fmt.params if key.startswith(_PREFIX) and key.endswith("." + s)), None)
        if suffix is None:
            if key.startswith(_PREFIX):
                raise AdapterFileError(f"{src}: tensor {key!r} is not one of peft {fmt.peft_type}'s tensors "
                                       f"{list(fmt.params)} (field 'peft_type' is {fmt.peft_type!r})")
            extra[key] = v
            continue
        per.setdefault(key[len(_PREFIX): -len(suffix) - 1], {})[suffix] = v
    if not per:
        raise AdapterFileError(f"{src}: the weights file holds no {fmt.peft_type} tensors")
    layers = {p: _layer(model, p, src) for p in per}
    got = fmt.load(cfg, layers, per, extra, src)
    scope, modules = build_modules(model, got.graphs, adapter_name)
    values = {p: cast_state(modules[p], got.values[p], f"{src}, module {p!r}") for p in got.graphs}
    store = next((m.shared for m in modules.values() if m.shared is not None), None)
    shared = cast_state(store, got.shared, f"{src}, shared tensors") if store is not None else {}
    record = {"method": got.method, "imported_from": "peft", "peft_type": fmt.peft_type,
              "target_modules": sorted(got.graphs)}
    return put_adapter(model, adapter_name, scope, modules, values, {}, record, is_trainable, shared)


def export_native(model: nn.Module, directory: str | os.PathLike[str], adapter_name: str = "default",
                  overwrite: bool = False, task_type: str | None = None) -> Path:
    """Write adapter ``adapter_name`` in its own peft tuner's format (``peft_type`` of the method:
    ``LOHA`` for ``loha``, …); a method peft has no tuner for, a layer peft's tuner refuses (GPT-2's
    ``Conv1D`` for LoHa, LoKr, OFT, BOFT, HRA) or a graph the format cannot hold is refused with a
    :class:`ConfigError` naming the field. Files are written atomically under the folder's lock; a
    folder holding another kind of checkpoint is refused unless ``overwrite``
    (:func:`tnpeft.fileio.checkpoint_folder`); values that are not finite are refused with a
    :class:`~tnpeft.errors.NonFiniteError` before anything is written. ``task_type``: peft's, written
    into the config (what ``AutoPeftModelFor…`` reads)."""
    layers = [(p, layer) for p, layer in tn_layers(model) if adapter_name in layer.tn_adapters]
    if not layers:
        raise AdapterStateError(f"the model has no adapter named {adapter_name!r}; it has {adapter_names(model)}")
    methods = {method_of(layer.tn_adapters[adapter_name].graph) for _, layer in layers}
    method = methods.pop() if len(methods) == 1 else adapter_method(model, adapter_name)
    fmt = format_for_method(method)
    if fmt is None:
        raise ConfigError(f"adapter {adapter_name!r} (method {method!r}) has no peft tuner of its own; peft's tuners "
                          f"here are {sorted(f.method for f in PEFT_FORMATS.values())} — export it as LoRA "
                          "(native=False)", field="native")
    if saved_modules(model, adapter_name):
        raise ConfigError(f"adapter {adapter_name!r} trains whole modules too (modules_to_save); export them with the "
                          "base model", field="modules_to_save")
    modules = {p: layer.tn_adapters[adapter_name] for p, layer in layers}
    info = {p: PeftLayer(p, layer.in_features, layer.out_features, layer.fan_in_fan_out) for p, layer in layers}
    store = shared_values(model, adapter_name)
    shared = {k: v.detach().cpu() for k, v in store.state_dict().items()} if store is not None else {}
    try:
        cfg, tensors = fmt.save(modules, info, shared)
    except (KeyError, AttributeError) as e:   # a graph of the method's name but another structure
        raise NotMergeableError(f"adapter {adapter_name!r}: its graphs are not those of peft's {fmt.peft_type} "
                                f"({e})") from None
    cfg["task_type"] = task_type
    cfg["base_model_name_or_path"] = getattr(getattr(model, "config", None), "_name_or_path", None)
    check_finite(tensors, adapter_name)
    out = Path(directory)
    blob = tensors_to_bytes({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
    with checkpoint_folder(out, PEFT_ADAPTER, overwrite=overwrite):
        (out / "adapter_config.json").unlink(missing_ok=True)     # never the old config beside the new weights
        atomic_write_bytes(out / "adapter_model.safetensors", blob)
        atomic_write_json(out / "adapter_config.json", cfg)
    return out
