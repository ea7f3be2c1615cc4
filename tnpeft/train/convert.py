"""``tnpeft convert``: a saved tnpeft adapter → a peft LoRA checkpoint, for the model it was trained on."""

from __future__ import annotations

import os
from pathlib import Path

from tnpeft.errors import ConfigError, WriteError
from tnpeft.nn import PeftExport, export_peft, load_adapter
from tnpeft.nn.transaction import CONFIGS_ATTR
from tnpeft.storage.adapter_folder import SAVED_PREFIX, read_adapter
from tnpeft.train.datasets import load_model


def convert_adapter(adapter_dir: str | os.PathLike[str], output: str | os.PathLike[str], model: str = "minilm",
                    task: str | None = None, max_rank: int | None = None, overwrite: bool = False) -> PeftExport:
    """Load the saved adapter in ``adapter_dir`` into ``model`` (``minilm``, ``smollm2`` or a model
    folder, as ``tnpeft train`` loads it; ``task`` defaults to classification when the adapter saved
    a ``head``, else causal LM) and write it with :func:`tnpeft.export_peft` (``max_rank``: SVD
    compression above that rank). ``output`` must not be ``adapter_dir`` itself (that would destroy
    the adapter it reads), and a folder holding another kind of checkpoint is refused unless
    ``overwrite``."""
    if max_rank is not None and (isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1):
        raise ConfigError(f"--max-rank must be a positive integer, got {max_rank!r}", field="max_rank")
    if Path(output).resolve() == Path(adapter_dir).resolve() or (
            Path(output).exists() and Path(adapter_dir).exists() and os.path.samefile(output, adapter_dir)):
        raise WriteError(f"-o {str(output)!r} is the adapter folder being converted; writing there would destroy "
                         "the tnpeft adapter (and anything only it holds, such as a trained head) — choose "
                         "another folder", path=str(output))
    _, _, tensors = read_adapter(adapter_dir)
    head = [v for k, v in tensors.items() if k.startswith(SAVED_PREFIX + "head.") and k.endswith("weight")
            and v.ndim == 2]
    task = task or ("classification" if head else "causal_lm")
    loaded = load_model(model, task, num_labels=head[-1].shape[0] if head else 2)
    m = load_adapter(loaded.model, adapter_dir)
    name = next(iter(getattr(m, CONFIGS_ATTR)))
    return export_peft(m, output, adapter_name=name, max_rank=max_rank, overwrite=overwrite)
