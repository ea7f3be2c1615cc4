"""All-or-nothing changes of a model.

Every public call that changes a model (``inject``, ``load_adapter``, ``import_peft``, ``merge``,
``unmerge``, ``set_adapter``, ``delete_adapter``, ``unload``) checks and builds what it can before
it touches the model, and runs the rest inside :func:`transaction`: if anything fails — a tnpeft
error, an allocation failure, a Ctrl-C — the model is put back exactly as it was: its module tree,
every parameter's and buffer's identity, the values of the tensors the call changes in place, every
``requires_grad`` flag, every module's train/eval mode, the adapter layers' active, merged and
disabled state, and the adapter records tnpeft keeps on the model.

Values are restored from copies made just before the call changes them in place
(:meth:`ModelSnapshot.backup`): only those tensors are copied, so a transaction costs the memory of
what it changes (for ``merge``, the merged weights once more), never of the whole model.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

_MISSING = object()
#: the attribute of an adapted model holding each adapter's JSON record
CONFIGS_ATTR = "tnpeft_configs"
#: the attribute of an adapted model holding its frame scope (equal-shaped frames built together)
SCOPE_ATTR = "_tnpeft_frame_scope"
#: attributes tnpeft keeps on an adapted model
MODEL_ATTRS = (CONFIGS_ATTR, SCOPE_ATTR)
#: attributes of an adapter layer (``TNLinear``) that say which adapters run and which are merged
LAYER_ATTRS = ("active_adapters", "merged_adapters", "disabled")


class ModelSnapshot:
    """What :func:`transaction` puts back: the structure of every module of ``model`` (references,
    cheap), and copies of the tensors registered with :meth:`backup`."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._modules: list[tuple[nn.Module, dict[str, nn.Module | None], dict[str, nn.Parameter | None],
                                  dict[str, torch.Tensor | None], set[str], bool, dict[str, Any]]] = []
        for m in model.modules():
            layer = {a: copy.copy(m.__dict__[a]) for a in LAYER_ATTRS if a in m.__dict__}
            self._modules.append((m, dict(m._modules), dict(m._parameters), dict(m._buffers),
                                  set(m._non_persistent_buffers_set), m.training, layer))
        self._flags = [(p, p.requires_grad) for p in model.parameters()]
        self._attrs = {a: copy.deepcopy(model.__dict__[a]) if a == CONFIGS_ATTR and a in model.__dict__
                       else model.__dict__.get(a, _MISSING) for a in MODEL_ATTRS}
        self._values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def backup(self, t: torch.Tensor) -> None:
        """Copy ``t`` (once) so that :meth:`restore` can put its values back; call it before changing
        ``t`` in place."""
        if id(t) not in self._values:
            self._values[id(t)] = (t, t.detach().clone())

    def restore(self) -> None:
        """Put the model back as it was when the snapshot was taken."""
        for m, mods, params, bufs, non_persistent, training, layer in self._modules:
            m._modules.clear()
            m._modules.update(mods)
            m._parameters.clear()
            m._parameters.update(params)
            m._buffers.clear()
            m._buffers.update(bufs)
            m._non_persistent_buffers_set.clear()
            m._non_persistent_buffers_set.update(non_persistent)
            m.training = training
            for a, v in layer.items():
                m.__dict__[a] = v
        with torch.no_grad():
            for t, saved in self._values.values():
                t.copy_(saved)
        for p, flag in self._flags:
            p.requires_grad_(flag)
        for a, v in self._attrs.items():
            if v is _MISSING:
                self.model.__dict__.pop(a, None)
            else:
                self.model.__dict__[a] = v


@contextmanager
def transaction(model: nn.Module) -> Iterator[ModelSnapshot]:
    """Run a change of ``model`` all or nothing: on any exception (``KeyboardInterrupt`` included)
    the model is restored exactly and the exception propagates."""
    snap = ModelSnapshot(model)
    try:
        yield snap
    except BaseException:
        snap.restore()
        raise
