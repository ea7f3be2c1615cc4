"""``transformers.Trainer`` integration."""

from __future__ import annotations

from pathlib import Path


def SaveAdapterCallback(adapter_name: str = "default", subdir: str = "tnpeft_adapter"):  # noqa: N802
    """A ``TrainerCallback`` that writes the tnpeft adapter (safetensors + JSON, atomically) into
    every checkpoint folder the Trainer saves (``checkpoint-<step>/<subdir>``) and into
    ``output_dir/<subdir>`` when training ends — a small file next to the Trainer's full-model
    checkpoint, loadable with :func:`tnpeft.load_adapter`.

    AdaLoRA's schedule is attached with :meth:`tnpeft.adapters.AdaLoRAController.trainer_callback`.
    """
    from transformers import TrainerCallback

    from tnpeft.nn.io import save_adapter

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
