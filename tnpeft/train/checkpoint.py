"""Checkpoints of a training run, written so that a resumed run ends with the same weights.

``<out>/checkpoint/`` holds ``adapter/`` (the adapter, as :func:`tnpeft.save_adapter` writes it),
``optimizer.safetensors`` + ``optimizer.json`` (the optimizer's state and each training hook's
state, tensors and JSON — never pickle) and ``trainer_state.json`` (the step, the history). The
step and the state it describes are one unit: the folder is written whole as ``checkpoint.tmp/``
and swapped in by renames, and the loop records a step only together with its optimizer update
(:mod:`tnpeft.train.loop`).

Reading a checkpoint checks every file like an adapter file — fields, types, ranges, tensor
shapes, finite values — before anything is restored; a damaged file raises
:class:`~tnpeft.errors.CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.adapters import TrainingHook
from tnpeft.errors import AdapterFileError, CheckpointError, ConfigError, TNPeftError
from tnpeft.fileio import atomic_write_bytes, atomic_write_json, read_json, read_safetensors, tensors_to_bytes
from tnpeft.nn import load_adapter, save_adapter

_HOOK = "hook."   # tensor keys of training hooks: hook.<adapter name>.<key>
STATE_NAME, OPT_META_NAME, OPT_TENSORS_NAME = "trainer_state.json", "optimizer.json", "optimizer.safetensors"


def optimizer_to_files(opt: torch.optim.Optimizer, names: list[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An optimizer's state as ``(JSON-ready meta, tensors)``; ``names`` are its parameters' names."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"param_names": names, "param_groups": groups, "scalars": scalars}, tensors


def _fail(path: Path, field: str | None, message: str) -> CheckpointError:
    where = f"checkpoint file {str(path)!r}" + (f", field {field!r}" if field else "")
    return CheckpointError(f"{where}: {message}", path=str(path), field=field)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_trainer_state(state: Any, path: Path, total: int) -> dict[str, Any]:
    """``trainer_state.json``'s content, checked: ``step`` an integer in ``[0, total]``, ``total``
    equal to the run's, ``history`` with one finite training loss per step, evaluations at steps up
    to ``step``, ``seconds`` a number."""
    if not isinstance(state, dict):
        raise _fail(path, None, f"expected a JSON object, got {type(state).__name__}")
    for key in ("step", "total", "history", "fingerprint"):
        if key not in state:
            raise _fail(path, key, "missing")
    step = state["step"]
    if not _int(step) or not 0 <= step <= total:
        raise _fail(path, "step", f"{step!r}; expected an integer from 0 to the run's {total} steps")
    if state["total"] != total:
        raise _fail(path, "total", f"{state['total']!r}; this run has {total} steps")
    h = state["history"]
    if not isinstance(h, dict):
        raise _fail(path, "history", f"{h!r}; expected an object with train_loss, eval and seconds")
    losses = h.get("train_loss")
    if not isinstance(losses, list) or len(losses) != step or not all(_num(x) for x in losses):
        raise _fail(path, "history.train_loss", f"expected a list of {step} finite numbers (one per step)")
    evals = h.get("eval")
    if not isinstance(evals, list) or not all(
            isinstance(e, dict) and _int(e.get("step")) and 0 <= e["step"] <= step
            and all(_num(v) for k, v in e.items() if k != "step") for e in evals):
        raise _fail(path, "history.eval", f"expected a list of evaluations at steps up to {step}, each with numbers")
    if not _num(h.get("seconds")) or h["seconds"] < 0:
        raise _fail(path, "history.seconds", f"{h.get('seconds')!r}; expected a non-negative number")
    return state


def _check_optimizer(meta: Any, tensors: dict[str, torch.Tensor], names: list[str], params: list[torch.Tensor],
                     opt: torch.optim.Optimizer, d: Path) -> dict[int, dict[str, Any]]:
    """The optimizer state to restore, checked against this run's parameters."""
    mpath, tpath = d / OPT_META_NAME, d / OPT_TENSORS_NAME
    if not isinstance(meta, dict):
        raise _fail(mpath, None, f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("param_names") != names:
        raise CheckpointError(f"checkpoint {str(d)!r}: the checkpoint's optimizer covers other parameters than this "
                              "model's trainable ones; was it written by another run? Use another output directory "
                              "or --no-resume", path=str(mpath), field="param_names")
    groups = meta.get("param_groups")
    own = opt.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(own) or not all(
            isinstance(g, dict) and g.get("params") == o["params"] for g, o in zip(groups, own)):
        raise _fail(mpath, "param_groups", f"expected {len(own)} parameter group(s) over this run's parameters")
    for g in groups:
        bad = next((k for k, v in g.items() if k != "params" and not (v is None or isinstance(v, (bool, str)) or _num(v)
                                                                      or (isinstance(v, list) and all(map(_num, v))))),
                   None)
        if bad is not None:
            raise _fail(mpath, f"param_groups.{bad}", f"{g[bad]!r} is not a setting of the optimizer")
    scalars = meta.get("scalars", {})
    if not isinstance(scalars, dict) or not all(isinstance(v, dict) for v in scalars.values()):
        raise _fail(mpath, "scalars", "expected an object of per-parameter objects")
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, _, k = key.partition(".")
        if not idx.isdigit() or int(idx) >= len(params) or not k:
            raise _fail(tpath, key, f"names no parameter of this run (it has {len(params)})")
        p = params[int(idx)]
        if v.ndim and tuple(v.shape) != tuple(p.shape):
            raise _fail(tpath, key, f"has shape {tuple(v.shape)}; parameter {names[int(idx)]!r} has {tuple(p.shape)}")
        if not v.is_floating_point() or not torch.isfinite(v).all():
            raise _fail(tpath, key, "expected finite floating-point values")
        state.setdefault(int(idx), {})[k] = v
    for idx, sc in scalars.items():
        if not idx.isdigit() or int(idx) >= len(params):
            raise _fail(mpath, f"scalars.{idx}", f"names no parameter of this run (it has {len(params)})")
        state.setdefault(int(idx), {}).update(sc)
    return state


def optimizer_from_files(opt: torch.optim.Optimizer, names: list[str], meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                         source: str | Path) -> None:
    """Restore what :func:`optimizer_to_files` returned into ``opt`` (checked first)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    state = _check_optimizer(meta, tensors, names, params, opt, Path(source))
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


class Checkpoint:
    """``<out>/checkpoint/``: ``adapter/`` + ``optimizer.safetensors`` + ``trainer_state.json``.

    Written into ``checkpoint.tmp`` and swapped in by renames, keeping the previous checkpoint as
    ``checkpoint.old`` until the new one is in place, so a kill at any moment leaves one complete
    checkpoint."""

    def __init__(self, out: Path):
        self.dir, self.tmp, self.old = out / "checkpoint", out / "checkpoint.tmp", out / "checkpoint.old"

    def find(self) -> Path | None:
        for d in (self.dir, self.old):
            if (d / STATE_NAME).exists():
                return d
        return None

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, names: list[str], hooks: dict[str, TrainingHook],
             state: dict[str, Any]) -> None:
        """Write the adapter, the optimizer, the training hooks' state and ``state`` (the step, the
        history) as one new checkpoint."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        save_adapter(model, self.tmp / "adapter")
        meta, tensors = optimizer_to_files(opt, names)
        meta["hooks"] = {}
        for adapter, hook in hooks.items():
            h_scalars, h_tensors = hook.state_dict()
            meta["hooks"][adapter] = h_scalars
            tensors.update({f"{_HOOK}{adapter}.{k}": v for k, v in h_tensors.items()})
        atomic_write_bytes(self.tmp / OPT_TENSORS_NAME, tensors_to_bytes(tensors))
        atomic_write_json(self.tmp / OPT_META_NAME, meta)
        atomic_write_json(self.tmp / STATE_NAME, state)
        if self.dir.exists():
            if self.old.exists():
                shutil.rmtree(self.old)
            self.dir.rename(self.old)
        self.tmp.rename(self.dir)
        if self.old.exists():
            shutil.rmtree(self.old)

    def read_state(self, d: Path, total: int) -> dict[str, Any]:
        """``trainer_state.json`` of the checkpoint in ``d``, checked (:func:`check_trainer_state`)."""
        path = d / STATE_NAME
        return check_trainer_state(read_json(path, "checkpoint state", error=lambda m: CheckpointError(
            m, path=str(path))), path, total)

    def load(self, d: Path, model: nn.Module, opt: torch.optim.Optimizer, names: list[str],
             hooks: dict[str, TrainingHook], total: int) -> dict[str, Any]:
        """Restore the checkpoint in ``d`` into the model, the optimizer and the hooks; return its
        state. Every file is read and checked before anything is restored."""
        state = self.read_state(d, total)
        mpath, tpath = d / OPT_META_NAME, d / OPT_TENSORS_NAME
        meta = read_json(mpath, "checkpoint optimizer state", error=lambda m: CheckpointError(m, path=str(mpath)))
        try:
            tensors = read_safetensors(tpath, None)
        except AdapterFileError as e:
            raise CheckpointError(str(e), path=str(tpath)) from None
        params = [p for g in opt.param_groups for p in g["params"]]
        opt_t = {k: v for k, v in tensors.items() if not k.startswith(_HOOK)}
        _check_optimizer(meta, opt_t, names, params, opt, d)
        saved = meta.get("hooks", {})
        if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
            raise _fail(mpath, "hooks", "expected an object of per-adapter objects")
        try:
            load_adapter(model, d / "adapter", is_trainable=True)
        except TNPeftError as e:
            raise CheckpointError(f"checkpoint {str(d)!r}: {e}", path=str(d / "adapter")) from None
        optimizer_from_files(opt, names, meta, opt_t, d)
        for adapter, hook in hooks.items():
            if adapter in saved:
                prefix = f"{_HOOK}{adapter}."
                try:
                    hook.load_state_dict(saved[adapter], {k[len(prefix):]: v for k, v in tensors.items()
                                                          if k.startswith(prefix)})
                except (ConfigError, KeyError, TypeError, ValueError, RuntimeError) as e:
                    raise _fail(mpath, f"hooks.{adapter}", f"the training hook's state does not fit this run "
                                                           f"({e})") from None
        return state
