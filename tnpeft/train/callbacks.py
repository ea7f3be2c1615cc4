"""``transformers.Trainer`` integration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from tnpeft.errors import AdapterStateError
from tnpeft.nn import save_adapter
from tnpeft.train.loop import method_hooks

if TYPE_CHECKING:  # pragma: no cover
    from transformers import TrainerCallback

    from tnpeft.adapters import TrainingHook


def SaveAdapterCallback(adapter_name: str = "default", subdir: str = "tnpeft_adapter") -> TrainerCallback:  # noqa: N802
    """A ``TrainerCallback`` that writes the tnpeft adapter (safetensors + JSON, atomically) into
    every checkpoint folder the Trainer saves (``checkpoint-<step>/<subdir>``) and into
    ``output_dir/<subdir>`` when training ends — a small file next to the Trainer's full-model
    checkpoint, loadable with :func:`tnpeft.load_adapter`.

    Methods with a training hook (a budget schedule, say) need :func:`TrainingHooksCallback` too.
    """
    from transformers import TrainerCallback

    class _SaveAdapter(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any) -> None:
            if model is not None and state.is_world_process_zero:
                save_adapter(_unwrap(model), Path(args.output_dir) / f"checkpoint-{state.global_step}" / subdir,
                             adapter_name)

        def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                         **kwargs: Any) -> None:
            if model is not None and state.is_world_process_zero:
                save_adapter(_unwrap(model), Path(args.output_dir) / subdir, adapter_name)

    return _SaveAdapter()


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module"):   # DDP / accelerate wrappers
        model = cast(nn.Module, model.module)
    return model


def TrainingHooksCallback(model: nn.Module, total_step: int | None = None) -> TrainerCallback:  # noqa: N802
    """A ``TrainerCallback`` that attaches the training hooks of ``model``'s active adapters — those
    their methods declare (:attr:`tnpeft.adapters.Method.training_hook`) — to the Trainer's
    optimizer when training begins, for a run of ``total_step`` steps (default: the Trainer's
    ``max_steps``), and detaches them at the end. (The hooks' state is not part of the Trainer's own
    checkpoints; :func:`tnpeft.train.fit` saves and resumes it.)"""
    from transformers import TrainerCallback

    hooks: dict[str, TrainingHook] = {}

    class _Hooks(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
            if optimizer is None:
                raise AdapterStateError("the Trainer passed no optimizer to the training-hooks callback")
            hooks.update(method_hooks(_unwrap(model), total_step or state.max_steps))
            for hook in hooks.values():
                hook.attach(optimizer)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            for hook in hooks.values():
                hook.detach()
            hooks.clear()

    return _Hooks()
