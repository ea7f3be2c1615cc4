"""``model.save_pretrained`` of a transformers model with tnpeft layers (``tnpeft.inject``).

A plain ``save_pretrained`` would write the wrapped layers' weights as ``….base_layer.weight`` and
the adapters' as ``….tnpeft_adapters.…``, which ``from_pretrained`` does not know: it would start
those layers at random. An adapted model's ``save_pretrained`` therefore writes a model folder with
the adapter embedded, the layout transformers loads as one:

- ``config.json`` and ``model.safetensors``: the base model under its own names (what
  ``from_pretrained`` reads), plus the adapters' values under their names in the adapted model
  (ignored by ``from_pretrained``; read back by ``Trainer``'s resume, which loads the file into the
  adapted model);
- ``adapter_config.json`` and ``adapter_model.safetensors``: the active adapter as a peft ``TNPEFT``
  adapter (:mod:`tnpeft.nn.peft_format`), which ``from_pretrained`` applies after loading the base
  from the same folder — in a process that has imported tnpeft.

So ``AutoModelForCausalLM.from_pretrained(folder)`` gives the adapted model exactly. What cannot be
written that way is refused with an error naming the call to use: adapters merged into the weights,
several active adapters.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tnpeft.errors import AdapterStateError
from tnpeft.nn.layer import TNLinear
from tnpeft.nn.peft_format import task_type_of, write_peft_adapter

#: the instance attribute that replaces the class's ``save_pretrained`` on an adapted model
SAVE_ATTR = "save_pretrained"


def base_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (the adapted model's) with every ``<layer>.base_layer.<name>`` of an adapter layer
    renamed ``<layer>.<name>`` — the plain model's keys; the adapters' keys are kept as they are."""
    layers = [p for p, m in model.named_modules() if isinstance(m, TNLinear)]
    out: dict[str, torch.Tensor] = {}
    for key, v in state.items():
        owner = next((p for p in layers if key.startswith(p + ".base_layer.")), None)
        out[key.replace(".base_layer.", ".", 1) if owner is not None else key] = v
    return out


def save_pretrained_with_adapter(model: nn.Module, save_directory: str | os.PathLike[str], *args: Any,
                                 state_dict: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> Any:
    """``save_pretrained`` of a transformers model with tnpeft layers (see the module docstring);
    the class's own when the model has none left."""
    cls: Any = type(model)                                        # a transformers model class
    save: Callable[..., Any] = cls.save_pretrained
    layers = [(p, m) for p, m in model.named_modules() if isinstance(m, TNLinear)]
    if not layers:
        return save(model, save_directory, *args, state_dict=state_dict, **kwargs)
    merged = sorted({n for _, m in layers for n in m.merged_adapters})
    if merged:
        raise AdapterStateError(f"adapters {merged} are merged into the weights, which save_pretrained would write as "
                                "the base model's; unmerge them first (tnpeft.unmerge(model)), or save the merged model "
                                "without adapter layers: tnpeft.merge_and_unload(model).save_pretrained(dir)")
    active = sorted({n for _, m in layers if not m.disabled for n in m.active_adapters})
    if len(active) > 1:
        raise AdapterStateError(f"adapters {active} are active together; a model folder embeds one adapter. Save "
                                "each with tnpeft.save_adapter(model, dir, adapter_name=...), or activate one "
                                "(tnpeft.set_adapter) before save_pretrained")
    state = base_state_dict(model, state_dict if state_dict is not None else model.state_dict())
    out = save(model, save_directory, *args, state_dict=state, **kwargs)
    if active and kwargs.get("is_main_process", True):
        write_peft_adapter(model, Path(save_directory), active[0], base_model_name_or_path=os.fspath(save_directory),
                           task_type=task_type_of(model))
    return out


def guard_save_pretrained(model: nn.Module) -> None:
    """Give a transformers model with tnpeft layers the ``save_pretrained`` above (an attribute of
    this instance only; :func:`unguard_save_pretrained` removes it)."""
    if callable(getattr(type(model), "save_pretrained", None)) and hasattr(model, "config"):
        model.__dict__[SAVE_ATTR] = types.MethodType(save_pretrained_with_adapter, model)


def unguard_save_pretrained(model: nn.Module) -> None:
    """Give the model its class's ``save_pretrained`` back (a model left without adapter layers)."""
    model.__dict__.pop(SAVE_ATTR, None)
