"""Checkpoints of a training run, written so that a resumed run ends with the same weights.

``<out>/checkpoint/`` holds ``adapter/`` (the adapter, as :func:`tnpeft.save_adapter` writes it),
``optimizer.safetensors`` + ``optimizer.json`` (the optimizer's state and each training hook's
state, tensors and JSON — never pickle) and ``trainer_state.json`` (the step, the history).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.adapters import TrainingHook
from tnpeft.errors import ConfigError
from tnpeft.fileio import atomic_write_bytes, atomic_write_json, read_json, read_safetensors, tensors_to_bytes
from tnpeft.nn import load_adapter, save_adapter

_HOOK = "hook."   # tensor keys of training hooks: hook.<adapter name>.<key>


def optimizer_to_files(opt: torch.optim.Optimizer, names: list[str]) -> tuple[dict, dict[str, torch.Tensor]]:
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


def optimizer_from_files(opt: torch.optim.Optimizer, names: list[str], meta: dict, tensors: dict[str, torch.Tensor],
                          source: str) -> None:
    """Restore what :func:`optimizer_to_files` returned into ``opt``."""
    if meta.get("param_names") != names:
        raise ConfigError(f"{source}: the checkpoint's optimizer covers other parameters than this model's trainable "
                          "ones; was it written by another run? Use another output directory or --no-resume",
                          field="checkpoint")
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, _, k = key.partition(".")
        state.setdefault(int(idx), {})[k] = v
    for idx, sc in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
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
            if (d / "trainer_state.json").exists():
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
        atomic_write_bytes(self.tmp / "optimizer.safetensors", tensors_to_bytes(tensors))
        atomic_write_json(self.tmp / "optimizer.json", meta)
        atomic_write_json(self.tmp / "trainer_state.json", state)
        if self.dir.exists():
            if self.old.exists():
                shutil.rmtree(self.old)
            self.dir.rename(self.old)
        self.tmp.rename(self.dir)
        if self.old.exists():
            shutil.rmtree(self.old)

    def load(self, d: Path, model: nn.Module, opt: torch.optim.Optimizer, names: list[str],
             hooks: dict[str, TrainingHook]) -> dict[str, Any]:
        """Restore the checkpoint in ``d`` into the model, the optimizer and the hooks; return its state."""
        state = read_json(d / "trainer_state.json", "checkpoint state")
        load_adapter(model, d / "adapter", is_trainable=True)
        meta = read_json(d / "optimizer.json", "checkpoint optimizer state")
        tensors = read_safetensors(d / "optimizer.safetensors", None)
        opt_t = {k: v for k, v in tensors.items() if not k.startswith(_HOOK)}
        optimizer_from_files(opt, names, meta, opt_t, f"checkpoint {str(d)!r}")
        saved = meta.get("hooks", {})
        for adapter, hook in hooks.items():
            if adapter in saved:
                prefix = f"{_HOOK}{adapter}."
                hook.load_state_dict(saved[adapter], {k[len(prefix):]: v for k, v in tensors.items()
                                                      if k.startswith(prefix)})
        return state
