"""``transformers.Trainer`` integration."""

from __future__ import annotations

from pathlib import Path

from tnpeft.errors import AdapterStateError
from tnpeft.nn import save_adapter
from tnpeft.train.loop import method_hooks


def SaveAdapterCallback(adapter_name: str = "default", subdir: str = "tnpeft_adapter"):  # noqa: N802
    """A ``TrainerCallback`` that writes the tnpeft adapter (safetensors + JSON, atomically) into
    every checkpoint folder the Trainer saves (``checkpoint-<step>/<subdir>``) and into
    ``output_dir/<subdir>`` when training ends — a small file next to the Trainer's full-model
    checkpoint, loadable with :func:`tnpeft.load_adapter`.

    Methods with a training hook (a budget schedule, say) need :func:`TrainingHooksCallback` too.
    """
    from transformers import TrainerCallback

    class _SaveAdapter(TrainerCallback):
        def on_save(self, args, state, control, model=None, **kwargs):
            if model is not None and state.is_world_process_zero:
                save_adapter(_unwrap(model), Path(args.output_dir) / f"checkpoint-{state.global_step}" / subdir,
                             adapter_name)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None and state.is_world_process_zero:
                save_adapter(_unwrap(model), Path(args.output_dir) / subdir, adapter_name)

    return _SaveAdapter()


def _unwrap(model):
    while hasattr(model, "module"):   # DDP / accelerate wrappers
        model = model.module
    return model


def TrainingHooksCallback(model, total_step: int | None = None):  # noqa: N802
    """A ``TrainerCallback`` that attaches the training hooks of ``model``'s active adapters — those
    their methods declare (:attr:`tnpeft.adapters.Method.training_hook`) — to the Trainer's
    optimizer when training begins, for a run of ``total_step`` steps (default: the Trainer's
    ``max_steps``), and detaches them at the end. (The hooks' state is not part of the Trainer's own
    checkpoints; :func:`tnpeft.train.fit` saves and resumes it.)"""
    from transformers import TrainerCallback

    hooks: dict = {}

    class _Hooks(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            if optimizer is None:
                raise AdapterStateError("the Trainer passed no optimizer to the training-hooks callback")
            hooks.update(method_hooks(_unwrap(model), total_step or state.max_steps))
            for hook in hooks.values():
                hook.attach(optimizer)

        def on_train_end(self, args, state, control, **kwargs):
            for hook in hooks.values():
                hook.detach()
            hooks.clear()

    return _Hooks()
