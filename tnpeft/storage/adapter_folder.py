"""The saved-adapter format, read without a model: ``adapter_config.json`` + ``adapter_model.safetensors``.

The config holds every adapted module's graph as JSON (so any topology, built-in or a user's,
loads without its builder code) and the checksum of the weights file. Reading parses data only —
JSON and safetensors, never pickle — and checks everything: a folder that passes
:func:`read_adapter` and :func:`split_adapter_state` fits its graphs exactly. Putting the values
into a model is :func:`tnpeft.load_adapter`'s job (floor ``nn``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.errors import AdapterFileError, AdapterStateError, TNPeftError
from tnpeft.fileio import MAX_JSON_BYTES, MAX_WEIGHTS_BYTES, parse_json, read_regular_bytes, read_safetensors
from tnpeft.graph.graph import Graph
from tnpeft.graph.names import adapter_name_problem
from tnpeft.runtime.module import GraphModule

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SAVED_PREFIX = "modules_to_save."
FORMAT = "tnpeft.adapter"
VERSION = 1

# parameter names of tnpeft 0.1 files that have been renamed since: (old suffix, new suffix)
_RENAMED = ((".generator", ".skew_factor"),)
#: the dtypes a stored value may have (float8 and integer tensors are refused)
VALUE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# room for the safetensors header (tensor names, shapes, offsets) on top of the values themselves
_HEADER_BYTES = 16 << 20
_READ_ATTEMPTS = 8


def check_state(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise :class:`AdapterFileError` unless ``state`` has exactly the module's keys and shapes,
    with values of a floating dtype tnpeft reads (:data:`VALUE_DTYPES`). Finiteness is checked in
    the dtype the values are stored in by :func:`cast_state`."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise AdapterFileError(f"{where}: missing tensors {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                               f"unexpected tensors {extra[:5]}{'…' if len(extra) > 5 else ''}")
    for k, v in own.items():
        got = state[k]
        if not isinstance(got, torch.Tensor):
            raise AdapterFileError(f"{where}: {k!r} is not a tensor")
        if tuple(got.shape) != tuple(v.shape):
            raise AdapterFileError(f"{where}: tensor {k!r} has shape {tuple(got.shape)}, expected {tuple(v.shape)}")
        if got.dtype not in VALUE_DTYPES:
            raise AdapterFileError(f"{where}: tensor {k!r} has dtype {str(got.dtype).removeprefix('torch.')}, expected "
                                   "one of float16, bfloat16, float32, float64")


def cast_state(module: nn.Module, state: dict[str, torch.Tensor], where: str,
               finite: bool = True) -> dict[str, torch.Tensor]:
    """``state`` (checked by :func:`check_state`) cast to the dtype and device of ``module``'s own
    tensors, raising :class:`AdapterFileError` if a value is NaN or infinite *after* the cast (a
    float64 1e300 becomes inf in float32) — unless ``finite`` is False (``verify`` reads such files
    to report them). Nothing of ``module`` changes."""
    check_state(module, state, where)
    out = {}
    for k, v in module.state_dict().items():
        if v.is_meta:
            raise AdapterStateError(f"{where}: the model's tensor {k!r} is on the meta device and cannot hold the "
                                    "values; materialize the model first (e.g. model.to_empty(device='cpu'))")
        got = state[k].to(dtype=v.dtype, device=v.device)
        if finite and not torch.isfinite(got).all():
            bad = "NaN or infinite values" if not torch.isfinite(state[k]).all() else \
                f"values too large for {str(v.dtype).removeprefix('torch.')} (they become infinite)"
            raise AdapterFileError(f"{where}: tensor {k!r} holds {bad}")
        out[k] = got
    return out


def upgrade_state(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with parameter names written by older versions renamed to the module's names
    (e.g. a skew frame's ``generator`` → ``skew_factor``); other keys are kept as they are."""
    own = module.state_dict()
    out = {}
    for key, v in state.items():
        if key not in own:
            for old, new in _RENAMED:
                if key.endswith(old) and key[: -len(old)] + new in own and key[: -len(old)] + new not in state:
                    key = key[: -len(old)] + new
                    break
        out[key] = v
    return out


def read_adapter(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Graph], dict[str, torch.Tensor]]:
    """Parse and check a saved adapter without touching any model: (config, graphs, tensors).

    Reads are bounded (regular files only; the config at most :data:`tnpeft.fileio.MAX_JSON_BYTES`;
    the weights at most what the graphs can hold). A save running concurrently in the same folder
    either is read whole (the previous or the new adapter) or gives a clean error."""
    d = Path(directory)
    if not d.is_dir():
        raise AdapterFileError(f"adapter folder {str(d)!r} does not exist" if not d.exists() else
                               f"adapter folder {str(d)!r} is a file, not a folder")
    for attempt in range(_READ_ATTEMPTS):
        raw = read_regular_bytes(d / CONFIG_NAME, "adapter config", MAX_JSON_BYTES)
        cfg, graphs, limit = _parse_config(d, raw)
        try:
            tensors = read_safetensors(d / WEIGHTS_NAME, cfg["weights_sha256"], max_bytes=limit)
        except AdapterFileError as e:
            # a save in this folder replaced the config meanwhile: read the new pair (after a pause
            # that grows, so that a save in progress can finish)
            if not _changed(d / CONFIG_NAME, raw):
                raise
            if attempt + 1 == _READ_ATTEMPTS:
                raise AdapterFileError(f"adapter folder {str(d)!r} changed {_READ_ATTEMPTS} times while it was read "
                                       f"(saves running at the same time?); try again ({e})") from None
            time.sleep(0.002 * (1 << attempt))
            continue
        return cfg, graphs, tensors
    raise AssertionError("unreachable")  # pragma: no cover


def _changed(path: Path, raw: bytes) -> bool:
    try:
        return read_regular_bytes(path, "adapter config", MAX_JSON_BYTES) != raw
    except AdapterFileError:
        return True


def _parse_config(d: Path, raw: bytes) -> tuple[dict[str, Any], dict[str, Graph], int]:
    where = str(d / CONFIG_NAME)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AdapterFileError(f"adapter config {where!r} is not UTF-8 text ({e})") from None
    cfg = parse_json(text, f"adapter config {where!r}")
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        hint = " (it looks like a peft checkpoint: use tnpeft.import_peft)" if isinstance(cfg, dict) and "peft_type" in cfg else ""
        raise AdapterFileError(f"{where!r} is not a tnpeft adapter config: field 'format' must be {FORMAT!r}{hint}")
    if type(cfg.get("version")) is not int or cfg.get("version") != VERSION:   # true == 1 in Python: not a version
        raise AdapterFileError(f"{where!r}: format version {cfg.get('version')!r} is not supported (expected {VERSION})")
    problem = adapter_name_problem(cfg.get("adapter_name", "default"))
    if problem:
        raise AdapterFileError(f"{where!r}: field 'adapter_name': {problem}")
    conf = cfg.get("config")
    saved = None
    if conf is not None:
        if not isinstance(conf, dict):
            raise AdapterFileError(f"{where!r}: field 'config' must be an object or null, got {type(conf).__name__}")
        saved = conf.get("modules_to_save")
        if saved is not None and (not isinstance(saved, list) or not all(_is_path(x) for x in saved)):
            raise AdapterFileError(f"{where!r}: config field 'modules_to_save' must be a list of dotted module names, "
                                   f"got {saved!r}")
    modules = cfg.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise AdapterFileError(f"{where!r}: field 'modules' must map module names to graphs")
    bad = next((p for p in modules if not _is_path(p)), None)
    if bad is not None:
        raise AdapterFileError(f"{where!r}: module path {bad!r} is not a dotted module name")
    graphs: dict[str, Graph] = {}
    values = 0
    for path, gd in modules.items():
        try:
            graphs[path] = Graph.from_dict(gd)
        except TNPeftError as e:
            raise AdapterFileError(f"{where!r}: the graph of module {path!r} is invalid: {e}") from None
        values += sum(t.numel() for t in _meta_module(graphs[path], f"{where!r}", path).state_dict().values())
    if not isinstance(cfg.get("weights_sha256"), str):
        raise AdapterFileError(f"{where!r}: field 'weights_sha256' is missing")
    # the weights can be no larger than the graphs' values in float64 (and whole saved modules, whose
    # sizes only the model knows)
    limit = MAX_WEIGHTS_BYTES if saved else min(MAX_WEIGHTS_BYTES, _HEADER_BYTES + 8 * values)
    return cfg, graphs, limit


def _is_path(p: Any) -> bool:
    return isinstance(p, str) and bool(p) and all(part.isidentifier() or part.isdigit() for part in p.split("."))


def _meta_module(g: Graph, source: str, path: str) -> GraphModule:
    # keys and shapes on the meta device: nothing is allocated
    try:
        return GraphModule(g, device="meta")
    except (RuntimeError, TypeError, ValueError, OverflowError) as e:  # sizes torch cannot even describe
        raise AdapterFileError(f"{source}, module {path!r}: the graph cannot be built ({e})") from None


def split_adapter_state(graphs: dict[str, Graph], tensors: dict[str, torch.Tensor],
                        source: str) -> dict[str, dict[str, torch.Tensor]]:
    """A saved adapter's tensors per module path (``modules_to_save`` entries left out), each set
    checked against its graph's keys, shapes and dtypes without allocating anything (finiteness is
    checked in the dtype the values are stored in, by :func:`cast_state`)."""
    per: dict[str, dict[str, torch.Tensor]] = {p: {} for p in graphs}
    # longest module path first, so "a.b" never claims a key of "a.b.c"
    paths = sorted(graphs, key=len, reverse=True)
    for key, v in tensors.items():
        if key.startswith(SAVED_PREFIX):
            continue
        owner = next((p for p in paths if key.startswith(p + ".")), None)
        if owner is None:
            raise AdapterFileError(f"{source}: tensor {key!r} belongs to no adapted module of the config")
        per[owner][key[len(owner) + 1:]] = v
    for path, g in graphs.items():
        meta = _meta_module(g, source, path)     # shapes and keys checked without allocating anything
        per[path] = upgrade_state(meta, per[path])
        check_state(meta, per[path], f"{source}, module {path!r}")
    return per


def read_adapter_modules(directory: str | os.PathLike[str], dtype: torch.dtype = torch.float64,
                         finite: bool = True) -> dict[str, GraphModule]:
    """The saved adapter's graph modules with their values (``dtype``, default float64), by module
    path — for working with a saved adapter without the model it was trained on (export, checks).
    ``finite=False`` reads NaN and infinite values too (for :func:`tnpeft.verify`, which reports them)."""
    _, graphs, tensors = read_adapter(directory)
    per = split_adapter_state(graphs, tensors, f"adapter {str(directory)!r}")
    out = {}
    for path, g in graphs.items():
        module = GraphModule(g, dtype=dtype)
        module.load_state_dict(cast_state(module, per[path], f"adapter {str(directory)!r}, module {path!r}", finite))
        out[path] = module
    return out
