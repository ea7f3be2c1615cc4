"""The peft folder format of a tnpeft adapter (peft type ``TNPEFT``), readable and writable without peft.

``adapter_config.json`` holds peft's fields plus tnpeft's — ``method`` and ``hparams``, or the
graphs themselves (``module_graphs``: module path → graph JSON), and ``format_version``;
``adapter_model.safetensors`` holds ``base_model.model.<module path>.tnpeft_adapters.<node>.<param>``
(peft's convention: the adapter's name is not part of the file's keys, so one file loads under any
name). :mod:`tnpeft.nn.peft_tuner` reads and writes it through peft; :mod:`tnpeft.nn.hf_save`
writes it next to a transformers model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnpeft.errors import AdapterStateError, ConfigError
from tnpeft.fileio import atomic_write_bytes, atomic_write_json, tensors_to_bytes
from tnpeft.nn.layer import TNLinear

#: the peft type and the state-dict prefix of tnpeft's peft method
PEFT_TYPE = "TNPEFT"
PREFIX = "tnpeft_"
#: the version of the config format this tnpeft writes (and the newest it reads)
FORMAT_VERSION = 1
#: the submodule of an adapter layer that holds its adapters (named with the method's prefix, as
#: peft's and transformers' key mappings expect)
ADAPTERS_KEY = "tnpeft_adapters"
#: the key prefix peft gives a saved adapter's tensors
PEFT_PREFIX = "base_model.model."
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


#: peft's task types by the transformers class-name ending that goes with each
TASK_TYPES = {"ForCausalLM": "CAUSAL_LM", "ForSequenceClassification": "SEQ_CLS", "ForTokenClassification": "TOKEN_CLS",
              "ForQuestionAnswering": "QUESTION_ANS", "ForConditionalGeneration": "SEQ_2_SEQ_LM",
              "ForSeq2SeqLM": "SEQ_2_SEQ_LM", "Model": "FEATURE_EXTRACTION"}


def task_type_of(model: nn.Module, task_type: str | None = None) -> str | None:
    """peft's ``task_type`` for ``model``: ``task_type`` checked, or inferred from the class name
    (``…ForCausalLM`` → ``"CAUSAL_LM"``, ``…ForSequenceClassification`` → ``"SEQ_CLS"``, …; a bare
    transformers ``…Model`` → ``"FEATURE_EXTRACTION"``), else ``None``."""
    if task_type is not None:
        if task_type not in set(TASK_TYPES.values()):
            raise ConfigError(f"task_type must be one of {sorted(set(TASK_TYPES.values()))}, got {task_type!r}",
                              field="task_type")
        return task_type
    name = type(model).__name__
    return next((t for end, t in TASK_TYPES.items() if name.endswith(end) and hasattr(model, "config")), None)


def checkpoint_key(key: str, adapter_name: str) -> str:
    """A model key ``….tnpeft_adapters.<adapter>.<node>.<param>`` as the file writes it,
    ``….tnpeft_adapters.<node>.<param>`` (other keys unchanged)."""
    return re.sub(rf"(^|\.){ADAPTERS_KEY}\.{re.escape(adapter_name)}(\.|$)", rf"\1{ADAPTERS_KEY}\2", key, count=1)


def write_peft_adapter(model: nn.Module, directory: str | Path, adapter_name: str, *,
                       base_model_name_or_path: str | None = None, task_type: str | None = None) -> Path:
    """Write adapter ``adapter_name`` of ``model`` (a model with tnpeft layers, not a ``PeftModel``)
    as a peft ``TNPEFT`` adapter folder: the graphs of every adapted module (so any adapter, built
    by a method or by hand, loads as it is) and their values. Atomic per file."""
    graphs: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    for path, layer in model.named_modules():
        if isinstance(layer, TNLinear) and adapter_name in layer.tn_adapters:
            module = layer.tn_adapters[adapter_name]
            graphs[path] = module.graph.to_dict()
            for k, v in module.state_dict().items():
                tensors[f"{PEFT_PREFIX}{path}.{ADAPTERS_KEY}.{k}"] = v.detach().cpu().contiguous()
    if not graphs:
        raise AdapterStateError(f"the model has no adapter named {adapter_name!r}")
    config = {"peft_type": PEFT_TYPE, "task_type": task_type, "base_model_name_or_path": base_model_name_or_path,
              "inference_mode": True, "method": None, "hparams": {}, "module_graphs": graphs,
              "target_modules": sorted(graphs), "format_version": FORMAT_VERSION, "bias": "none"}
    d = Path(directory)
    atomic_write_bytes(d / WEIGHTS_NAME, tensors_to_bytes(tensors, metadata={"format": "pt"}))
    atomic_write_json(d / CONFIG_NAME, config)
    return d
