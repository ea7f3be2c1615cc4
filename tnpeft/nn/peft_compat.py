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
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tnpeft.adapters import lora
from tnpeft.algebra import low_rank_factors, truncate_factors
from tnpeft.errors import (
    AdapterFileError,
    AdapterStateError,
    ConfigError,
    NonFiniteError,
    NotMergeableError,
    TNPeftError,
)
from tnpeft.fileio import (
    PEFT_ADAPTER,
    atomic_write_bytes,
    atomic_write_json,
    checkpoint_folder,
    read_json,
    read_safetensors,
    tensors_to_bytes,
)
from tnpeft.graph import Dense, Graph
from tnpeft.nn.layer import TNLinear
from tnpeft.nn.merged_export import check_finite, write_merged
from tnpeft.nn.model import adapter_names, build_modules, check_adapter_name, saved_modules, tn_layers
from tnpeft.nn.peft_format import task_type_of
from tnpeft.nn.peft_native import export_native, import_native
from tnpeft.nn.saving import check_materialized, linear_sizes_at, put_adapter
from tnpeft.storage.adapter_folder import VALUE_DTYPES, cast_state

_PREFIX = "base_model.model."
_KEY = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<which>[AB])\.weight$")


def _pattern_value(pattern: dict[str, Any], path: str, default: Any) -> Any:
    # peft: a key matches when the module name ends with it on a dot boundary (regex allowed)
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_config(cfg: dict[str, Any], src: str) -> None:
    """Every field tnpeft reads from a peft LoRA config, checked for its type and range."""
    def bad(field: str, want: str) -> AdapterFileError:
        return AdapterFileError(f"{src}: field {field!r} is {cfg.get(field)!r}; expected {want}")

    for field, ok in (("bias", "none"), ("use_dora", False), ("lora_bias", False)):
        if cfg.get(field, ok) not in (ok, None):
            raise AdapterFileError(f"{src}: field {field!r} is {cfg.get(field)!r}; tnpeft imports plain LoRA "
                                   f"({field}={ok!r})")
    r = cfg.get("r")
    if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
        raise bad("r", "a positive integer")
    if cfg.get("lora_alpha") is not None and not _number(cfg["lora_alpha"]):
        raise bad("lora_alpha", "a finite number")
    p = cfg.get("lora_dropout")
    if p is not None and not (_number(p) and 0 <= p < 1):
        raise bad("lora_dropout", "a number in [0, 1)")
    if cfg.get("use_rslora") is not None and not isinstance(cfg["use_rslora"], bool):
        raise bad("use_rslora", "true or false")
    if cfg.get("fan_in_fan_out") is not None and not isinstance(cfg["fan_in_fan_out"], bool):
        raise bad("fan_in_fan_out", "true or false")
    for field, valid, want in (("rank_pattern", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                                "positive integers"), ("alpha_pattern", _number, "finite numbers")):
        pat = cfg.get(field)
        if pat is None:
            continue
        if not isinstance(pat, dict):
            raise bad(field, f"an object mapping module patterns to {want}")
        for key, value in pat.items():
            try:
                re.compile(key)
            except re.error as e:
                raise AdapterFileError(f"{src}: field {field!r}: key {key!r} is not a valid regular expression "
                                       f"({e})") from None
            if not valid(value):
                raise AdapterFileError(f"{src}: field {field!r}: {key!r} maps to {value!r}; expected {want}")


def import_peft(model: nn.Module, directory: str | os.PathLike[str], adapter_name: str = "default",
                is_trainable: bool = False) -> nn.Module:
    """Load a peft LoRA checkpoint folder into ``model`` as tnpeft LoRA adapter ``adapter_name``.

    Supports per-module ranks and alphas (``rank_pattern``/``alpha_pattern``), rsLoRA scaling and
    dropout. Checkpoints with trained biases, DoRA, embedding or convolution LoRA are refused with a
    clear error, and so is a config field of the wrong type (``"use_rslora": "false"``), a regular
    expression that does not compile, a tensor that is not a 2-D floating-point matrix, and values
    that are not finite in the adapter's dtype. Everything is checked and built before the model
    changes; on any error it is exactly as it was. New modules follow the host layers' train/eval mode.

    A checkpoint of one of peft's tensor-network tuners (``peft_type`` LOHA, LOKR, VERA, IA3, OFT, BOFT,
    HRA, FOURIERFT, …: :data:`tnpeft.adapters.PEFT_FORMATS`) becomes tnpeft's graph of that method,
    equal to peft's layer (:func:`tnpeft.nn.peft_native.import_native`).
    """
    check_adapter_name(adapter_name)
    if adapter_name in adapter_names(model):
        raise AdapterStateError(f"the model already has an adapter named {adapter_name!r}; pick another name or "
                                "delete it first")
    d = Path(directory)
    cfg = read_json(d / "adapter_config.json", "peft adapter config")
    src = f"peft checkpoint {str(d)!r}"
    if isinstance(cfg, dict) and cfg.get("peft_type") != "LORA":    # peft's tensor-network tuners
        return import_native(model, d, cfg, adapter_name, is_trainable)
    if not isinstance(cfg, dict):
        raise AdapterFileError(f"{src}: the config is not a JSON object")
    _check_config(cfg, src)
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
    graphs, raw = {}, {}
    for path, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise AdapterFileError(f"{src}: module {path!r} has lora_{'A' if 'A' in ab else 'B'} but not its partner")
        n_in, n_out = linear_sizes_at(model, path, src)
        a, b = ab["A"], ab["B"]
        for which, t in (("lora_A", a), ("lora_B", b)):
            if t.ndim != 2 or t.dtype not in VALUE_DTYPES:
                raise AdapterFileError(f"{src}: module {path!r}: {which} is a {t.ndim}-D {t.dtype} tensor; expected "
                                       "a matrix of float16, bfloat16, float32 or float64")
        r = a.shape[0]
        if a.shape[1] != n_in or tuple(b.shape) != (n_out, r) or r < 1:
            raise AdapterFileError(f"{src}: module {path!r} maps {n_in} → {n_out} but lora_A is {tuple(a.shape)} and "
                                   f"lora_B is {tuple(b.shape)}; expected ({r}, {n_in}) and ({n_out}, {r})")
        r_cfg = _pattern_value(rank_pattern, path, cfg.get("r", r))
        if r_cfg != r:
            raise AdapterFileError(f"{src}: module {path!r} has rank {r} in its weights but {r_cfg} in its config")
        alpha = _pattern_value(alpha_pattern, path, cfg.get("lora_alpha", 8))
        try:
            graphs[path] = lora(n_in, n_out, r=r, alpha=alpha, dropout=float(cfg.get("lora_dropout") or 0.0),
                                use_rslora=bool(cfg.get("use_rslora") or False))
        except TNPeftError as e:
            raise AdapterFileError(f"{src}: module {path!r}: {e}") from None
        raw[path] = {"A.weight": a, "B.weight": b}
    scope, modules = build_modules(model, graphs, adapter_name)
    values = {p: cast_state(modules[p], raw[p], f"{src}, module {p!r}") for p in graphs}
    record = {"method": "lora", "imported_from": "peft", "target_modules": sorted(graphs)}
    return put_adapter(model, adapter_name, scope, modules, values, {}, record, is_trainable)


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


@dataclass
class PeftExport:
    """What :func:`export_peft` wrote (``os.fspath(export)`` is the folder).

    Attributes:
        path: the folder.
        merged: ``True`` when the adapter is input-mode (multiplicative, OFT): a LoRA checkpoint
            cannot hold it, so the folder holds the whole model with the adapter merged
            (``model.safetensors`` and, for a transformers model, ``config.json``).
        modules: per adapted module: ``{"rank", "exact", "error", "how"}`` — ``how`` is ``"lora"``
            (the A, B nodes as they are), ``"factors"`` (the graph cut into two matrices,
            exact), ``"svd"`` (compressed to ``max_rank``; ``error`` is the relative Frobenius
            error of the update) or ``"merged"``.
    """

    path: Path
    merged: bool = False
    modules: dict[str, dict[str, Any]] = dc_field(default_factory=dict)
    notes: list[str] = dc_field(default_factory=list)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def max_error(self) -> float:
        """The largest relative error of an exported update (0 when every module is exact)."""
        return max((m["error"] for m in self.modules.values()), default=0.0)

    @property
    def exact(self) -> bool:
        return all(m["exact"] for m in self.modules.values())

    def summary(self) -> str:
        """What was written, in a line (and one per note)."""
        if self.modules and all(m["how"] == "native" for m in self.modules.values()):
            head = f"wrote {self.path}: a checkpoint of {len(self.modules)} modules in its own peft tuner's format; exact"
        elif self.merged:
            head = (f"wrote {self.path}: the adapter is multiplicative (input-mode), which a LoRA checkpoint cannot "
                    "hold; the folder holds the model with it merged (load it with from_pretrained)")
        else:
            ranks = sorted({m["rank"] for m in self.modules.values()})
            hows = ", ".join(sorted({m["how"] for m in self.modules.values()}))
            rank = ranks[0] if len(ranks) == 1 else f"{ranks[0]}–{ranks[-1]}"
            head = (f"wrote {self.path}: a peft LoRA checkpoint of {len(self.modules)} modules (rank {rank}; {hows}); "
                    + ("exact" if self.exact else f"SVD-compressed, largest relative error {self.max_error:.3g}"))
        return "\n".join([head] + [f"note: {n}" for n in self.notes])

    def to_dict(self) -> dict[str, Any]:
        native = bool(self.modules) and all(m["how"] == "native" for m in self.modules.values())
        return {"path": str(self.path), "format": "merged-model" if self.merged else "peft-native" if native else "peft-lora",
                "exact": self.exact, "max_error": self.max_error, "modules": self.modules, "notes": self.notes}


def _factors_for_peft(path: str, name: str, mod: Any, max_rank: int | None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     float, dict[str, Any]]:
    """``(lora_A, lora_B, alpha, info)`` of one layer's linear additive adapter."""
    g = mod.graph
    if _is_lora(g) and (max_rank is None or g.nodes["A"].sizes[0] <= max_rank):
        r, _, alpha = _lora_scaling(g)
        with torch.no_grad():
            a, b = mod.tensor("A").detach(), mod.tensor("B").detach()
        return a, b, alpha, {"rank": r, "exact": True, "error": 0.0, "how": "lora"}
    try:
        b, a = low_rank_factors(mod)
        r = a.shape[0]
        if max_rank is not None and r > max_rank:
            b, a, err = truncate_factors(b, a, max_rank)
            info = {"rank": a.shape[0], "exact": err < 1e-10, "error": err, "how": "svd"}
        else:
            info = {"rank": r, "exact": True, "error": 0.0, "how": "factors"}
    except (NotMergeableError, NonFiniteError) as e:
        raise type(e)(f"module {path!r}: adapter {name!r}: {e}") from None
    dtype = mod.param_dtype
    return a.to(dtype), b.to(dtype), float(a.shape[0]), info     # alpha = r: peft's scaling alpha / r is 1


def export_peft(model: nn.Module, directory: str | os.PathLike[str], adapter_name: str = "default",
                max_rank: int | None = None, task_type: str | None = None, overwrite: bool = False,
                native: bool = False) -> PeftExport:
    """Write adapter ``adapter_name`` as a peft LoRA checkpoint that
    ``peft.PeftModel.from_pretrained(base_model, directory)`` loads and runs as tnpeft did.

    Every adapter whose update is linear exports: a LoRA graph as its ``A`` and ``B``; any other
    graph (Quantum-PEFT, QPA, MPO, the SVD-shaped ones, a user's topology) as the two matrices of its cheapest
    cut (:func:`tnpeft.graph.low_rank_factors`: ``B = U Λ s``, ``A = Vᵀ`` for Quantum-PEFT) —
    exact, at the rank of the cut. With ``max_rank``, factors of a larger rank are compressed by a
    truncated SVD and the relative error is reported per module. Ranks and scales may differ per
    module (``rank_pattern``, ``alpha_pattern``). A nonlinear adapter (QWTHN) is refused with a
    :class:`~tnpeft.errors.NotMergeableError` naming the node. An input-mode (multiplicative)
    adapter such as OFT has no LoRA form: the folder then holds the model with the adapter merged
    (:attr:`PeftExport.merged`), loadable with ``from_pretrained``. Files are written atomically,
    under the folder's lock; a folder that holds a checkpoint of another kind (a tnpeft adapter, a
    model where a LoRA checkpoint goes, or the reverse) is refused with a
    :class:`~tnpeft.errors.WriteError` unless ``overwrite``, which removes those files first — a
    folder never serves a stale file of an earlier export (:func:`tnpeft.fileio.checkpoint_folder`).

    With ``native=True`` the adapter is written in its own peft tuner's format instead (LoHa, LoKr,
    VeRA, IA³, OFT, …: :data:`tnpeft.adapters.PEFT_FORMATS`, :mod:`tnpeft.nn.peft_native`): exact, loaded by
    ``PeftModel.from_pretrained`` as that tuner.
    ``task_type`` (peft's, e.g. ``"CAUSAL_LM"``; inferred from the model's class by default) is what
    ``AutoPeftModelFor…`` reads.
    """
    task = task_type_of(model, task_type)
    if native:
        if max_rank is not None:
            raise ConfigError("max_rank compresses to LoRA; a native export is exact (give one of the two)",
                              field="max_rank")
        folder = export_native(model, directory, adapter_name, overwrite=overwrite, task_type=task)
        return PeftExport(folder, modules={p: {"rank": None, "exact": True, "error": 0.0, "how": "native"}
                                         for p, layer in tn_layers(model) if adapter_name in layer.tn_adapters})
    layers = _exportable_layers(model, adapter_name, max_rank)
    if any(layer.tn_adapters[adapter_name].graph.mode != "add" for _, layer in layers):   # multiplicative
        return PeftExport(Path(directory), merged=True,
                          modules=write_merged(model, Path(directory), adapter_name, layers, overwrite))
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    rslora: set[bool] = set()
    dropout: set[float] = set()
    conv1d = False
    out = PeftExport(Path(directory))
    for path, layer in layers:
        mod = layer.tn_adapters[adapter_name]
        g = mod.graph
        a, b, alpha, info = _factors_for_peft(path, adapter_name, mod, max_rank)
        tensors[f"{_PREFIX}{path}.lora_A.weight"] = a.contiguous()
        tensors[f"{_PREFIX}{path}.lora_B.weight"] = b.contiguous()
        ranks[path] = a.shape[0]
        alphas[path] = alpha
        rslora.add(_lora_scaling(g)[1] if info["how"] == "lora" else False)
        dropout.add(g.dropout)
        conv1d = conv1d or layer.fan_in_fan_out
        out.modules[path] = info
    saved = saved_modules(model, adapter_name)
    if saved:
        out.notes.append(f"modules trained with the adapter ({', '.join(saved)}) are not part of a LoRA checkpoint "
                         "and were not written; save them with the base model")
    if len(rslora) > 1:    # one flag per checkpoint: write rsLoRA modules as plain ones with alpha / √r · r
        for path in ranks:
            g = cast(TNLinear, model.get_submodule(path)).tn_adapters[adapter_name].graph
            if out.modules[path]["how"] == "lora" and _lora_scaling(g)[1]:
                alphas[path] = g.scale * ranks[path]
        rslora = {False}
    cfg = _lora_config(model, ranks, alphas, max(dropout), rslora.pop(), conv1d, task)
    d = Path(directory)
    check_finite(tensors, adapter_name)
    blob = tensors_to_bytes(tensors, metadata={"format": "pt"})
    with checkpoint_folder(d, PEFT_ADAPTER, overwrite=overwrite):
        (d / "adapter_config.json").unlink(missing_ok=True)     # never the old config beside the new weights
        atomic_write_bytes(d / "adapter_model.safetensors", blob)
        atomic_write_json(d / "adapter_config.json", cfg)
    return out


def _exportable_layers(model: nn.Module, adapter_name: str, max_rank: int | None) -> list[tuple[str, Any]]:
    """The layers holding adapter ``adapter_name``, each checked to have values and a linear update."""
    if max_rank is not None and (isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1):
        raise ConfigError(f"max_rank must be a positive integer, got {max_rank!r}", field="max_rank")
    layers = [(p, layer) for p, layer in tn_layers(model) if adapter_name in layer.tn_adapters]
    if not layers:
        raise AdapterStateError(f"the model has no adapter named {adapter_name!r}; it has {adapter_names(model)}")
    for path, layer in layers:
        g = layer.tn_adapters[adapter_name].graph
        check_materialized({f"{path}.{k}": v for k, v in layer.tn_adapters[adapter_name].state_dict().items()},
                           adapter_name)
        if not g.is_linear:
            bad = next(n.name for n in g.nodes.values() if n.kind == "nonlinear")
            raise NotMergeableError(f"module {path!r}: adapter {adapter_name!r} has nonlinear node {bad!r}: its update "
                                    "depends on the input, so it has no LoRA (or merged) form to export")
    return layers


def _lora_config(model: nn.Module, ranks: dict[str, int], alphas: dict[str, float], dropout: float, rslora: bool,
                 conv1d: bool, task: str | None) -> dict[str, Any]:
    """peft's ``adapter_config.json`` of a LoRA checkpoint: the most common rank and alpha, the others
    as patterns."""
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    return {
        "peft_type": "LORA",
        "task_type": task,
        "base_model_name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None),
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(ranks),
        "rank_pattern": {re.escape(p): v for p, v in ranks.items() if v != r},
        "alpha_pattern": {re.escape(p): v for p, v in alphas.items() if v != alpha},
        "use_rslora": rslora,
        "fan_in_fan_out": conv1d,
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
