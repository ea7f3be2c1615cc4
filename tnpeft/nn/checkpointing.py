"""Activation checkpointing (``model.gradient_checkpointing_enable()``) with cross-layer batching.

Frames and hyper-network outputs of equal shape are computed for all layers of a model in one
batched pass and shared (:class:`~tnpeft.params.unitary.FrameScope`). Checkpointing recomputes one
layer's forward during the backward pass, and that recomputation must repeat exactly the operations
of the original forward: a frame computed in another layer's region, or kept from an earlier call,
breaks it (torch's "recomputed values have different metadata", or "backward through the graph a
second time"). So at the start of each forward of an adapted model a pre-hook looks whether the
model trains with checkpointing — a module with ``gradient_checkpointing = True``, as transformers
sets it, in training mode, with gradients on — and, if so, has every frame computed inside the
layer that uses it, from its parameters, uncached; otherwise the batched path runs unchanged.
A model that checkpoints by other means can set ``model.gradient_checkpointing = True`` itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tnpeft.nn.transaction import SCOPE_ATTR

#: the attribute that marks a model whose forward pre-hook is registered
HOOK_ATTR = "_tnpeft_checkpoint_probe"


def checkpointing(model: nn.Module) -> bool:
    """Whether ``model`` (or a module inside it) trains with activation checkpointing now."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def probe_checkpointing(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook: compute frames per layer, uncached, in a checkpointed training forward;
    batched otherwise (see the module docstring)."""
    scope = getattr(module, SCOPE_ATTR, None)
    if scope is None:
        return
    scope.alone = bool(module.training and torch.is_grad_enabled() and checkpointing(module))


def watch_checkpointing(model: nn.Module) -> None:
    """Register :func:`probe_checkpointing` on ``model`` once (copies of the model keep it)."""
    if HOOK_ATTR not in model.__dict__:
        model.__dict__[HOOK_ATTR] = model.register_forward_pre_hook(probe_checkpointing).id


def unwatch_checkpointing(model: nn.Module) -> None:
    """Remove the pre-hook :func:`watch_checkpointing` registered (a model left without adapters)."""
    hook_id = model.__dict__.pop(HOOK_ATTR, None)
    if hook_id is not None:
        model._forward_pre_hooks.pop(hook_id, None)
