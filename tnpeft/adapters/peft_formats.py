"""peft's checkpoint formats of its tensor-network tuners, as conversions between a peft
``adapter_config.json`` + per-module tensors and tnpeft graphs + values (no model needed).

A :class:`PeftFormat` reads a checkpoint (:meth:`PeftFormat.load`: the config, each target layer's
sizes and tensors, the tensors outside the modules — VeRA's shared ``vera_A``, ``vera_B``) into
one graph and one state per module (plus the shared tensors), and writes a model's adapter back
(:meth:`PeftFormat.save`). Everything a format cannot express is refused naming the field.
``tnpeft.import_peft`` and ``tnpeft.export_peft(..., native=True)`` drive them
(:mod:`tnpeft.nn.peft_native`); LoRA's own format stays in :mod:`tnpeft.nn.peft_compat`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tnpeft.errors import AdapterFileError, ConfigError
from tnpeft.graph import Graph
from tnpeft.runtime import GraphModule

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PeftLayer:
    """A target layer as a format sees it: its path, sizes and whether it is GPT-2's ``Conv1D``."""

    path: str
    in_features: int
    out_features: int
    conv1d: bool = False


@dataclass
class PeftImport:
    """What a format read: a graph and a state (``GraphModule`` keys) per module path, the shared
    tensors' state (``SharedValues`` keys) and the method's name."""

    method: str
    graphs: dict[str, Graph] = field(default_factory=dict)
    values: dict[str, Tensors] = field(default_factory=dict)
    shared: Tensors = field(default_factory=dict)


@dataclass(frozen=True)
class PeftFormat:
    """One peft tuner's checkpoint format.

    Attributes:
        peft_type: the ``peft_type`` of ``adapter_config.json`` (``"LOHA"``).
        method: the tnpeft method it maps to.
        params: the tensor names per module (the key suffixes after the module path).
        load: ``(cfg, layers, tensors, extra, src) -> PeftImport``; ``tensors`` by module path and
            suffix, ``extra`` the checkpoint's tensors outside the modules by key.
        save: ``(modules, layers, shared) -> (cfg, tensors)``: the config fields of this tuner and
            every tensor by its full key.
        conv1d: whether peft takes GPT-2's ``Conv1D`` for this tuner.
    """

    peft_type: str
    method: str
    params: tuple[str, ...]
    load: Callable[..., PeftImport]
    save: Callable[..., tuple[dict[str, Any], Tensors]]
    conv1d: bool = False


PEFT_FORMATS: dict[str, PeftFormat] = {}
PREFIX = "base_model.model."


def register_format(fmt: PeftFormat) -> PeftFormat:
    """Add a format under its ``peft_type``."""
    PEFT_FORMATS[fmt.peft_type] = fmt
    return fmt


def format_for_method(method: str | None) -> PeftFormat | None:
    """The format whose tnpeft method is ``method`` (``None`` if peft has no native one)."""
    return next((f for f in PEFT_FORMATS.values() if f.method == method), None)


# ------------------------------------------------------------------ shared helpers
def pattern_value(pattern: dict[str, Any] | None, path: str, default: Any) -> Any:
    """peft's ``rank_pattern`` / ``alpha_pattern`` look-up: the first key matching the path's end."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def refuse(cfg: dict[str, Any], src: str, field_name: str, allowed: tuple[Any, ...], why: str) -> None:
    """:class:`AdapterFileError` naming ``field_name`` unless its value is one of ``allowed``."""
    if cfg.get(field_name, allowed[0]) not in allowed:
        raise AdapterFileError(f"{src}: field {field_name!r} is {cfg.get(field_name)!r}; {why}")


def number(cfg: dict[str, Any], src: str, name: str, default: float) -> float:
    v = cfg.get(name, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise AdapterFileError(f"{src}: field {name!r} is {v!r}; expected a finite number")
    return v


def integer(cfg: dict[str, Any], src: str, name: str, default: int) -> int:
    v = cfg.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise AdapterFileError(f"{src}: field {name!r} is {v!r}; expected an integer")
    return v


def expect(t: torch.Tensor | None, shape: tuple[int, ...], src: str, path: str, name: str) -> torch.Tensor:
    """``t`` if it is a floating tensor of ``shape``, else :class:`AdapterFileError` naming it."""
    if t is None:
        raise AdapterFileError(f"{src}: module {path!r} has no tensor {name!r}")
    if not t.is_floating_point() or tuple(t.shape) != tuple(shape):
        raise AdapterFileError(f"{src}: module {path!r}: {name} is a {tuple(t.shape)} {t.dtype} tensor; expected a "
                               f"floating tensor of shape {tuple(shape)}")
    return t


def build(src: str, path: str, fn: Callable[..., Graph], *args: Any, **kwargs: Any) -> Graph:
    """``fn(*args, **kwargs)``, a tnpeft error turned into an :class:`AdapterFileError` naming the module."""
    try:
        return fn(*args, **kwargs)
    except (ConfigError, AdapterFileError) as e:
        raise AdapterFileError(f"{src}: module {path!r}: {e}") from None


def common_config(peft_type: str, layers: dict[str, PeftLayer], **fields: Any) -> dict[str, Any]:
    """The fields every exported config has, then ``fields``."""
    return {"peft_type": peft_type, "task_type": None, "target_modules": sorted(layers), "inference_mode": True,
            "modules_to_save": None, **fields}


def fan_in_fan_out(layers: dict[str, PeftLayer]) -> bool:
    """peft's ``fan_in_fan_out``: whether the targets are GPT-2's ``Conv1D`` (weights stored ``in × out``)."""
    return any(x.conv1d for x in layers.values())


def per_module(values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(most common value, {escaped path: value})`` for a value that may differ per module (peft's patterns)."""
    common = Counter(values.values()).most_common(1)[0][0]
    return common, {re.escape(p): v for p, v in values.items() if v != common}


def tensors_of(module: GraphModule) -> Tensors:
    """A module's state, detached, on the CPU."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def check_layers(fmt_name: str, layers: dict[str, PeftLayer], conv1d_ok: bool) -> None:
    """:class:`ConfigError` (field ``target_modules``) when a layer is GPT-2's ``Conv1D`` and peft's
    tuner refuses it."""
    bad = [p for p, x in layers.items() if x.conv1d]
    if bad and not conv1d_ok:
        raise ConfigError(f"peft's {fmt_name} does not take GPT-2's Conv1D layers ({bad[:3]}): peft could not load "
                          "the checkpoint; export as LoRA (native=False) or merged", field="target_modules")


def most_common(values: list[Any]) -> Any:
    return Counter(values).most_common(1)[0][0]
