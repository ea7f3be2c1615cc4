"""The hyper-parameters of a training run."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tnpeft.errors import ConfigError

TASKS = ("classification", "causal_lm")
#: the largest learning rate accepted: AdamW's first step is 10·lr, and a float32 weight cannot take a step of 1e39
MAX_LR = 1e6
#: the largest seed accepted (the random generators take 64-bit seeds; runs derive seeds from it)
MAX_SEED = 2**32 - 1


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit` (all JSON-ready; a checkpoint records them and refuses to
    resume under different ones)."""

    task: str = "classification"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    warmup_fraction: float = 0.1  # the warm-up is at most this part of the run (see effective_warmup)
    max_length: int = 48
    eval_every: int = 0           # evaluate every N steps (and before the first); 0: only at the end
    checkpoint_every: int = 25
    seed: int = 0
    eval_batch_size: int = 128

    def check(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}", field="task")
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}", field=name)
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (name == "seed" and v > MAX_SEED):
                raise ConfigError(f"{name} must be a non-negative integer{' up to 2³²−1' if name == 'seed' else ''}, "
                                  f"got {v!r}", field=name)
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ConfigError(f"max_steps must be a positive integer, got {self.max_steps!r}", field="max_steps")
        if self.max_steps is not None and isinstance(self.max_steps, bool):
            raise ConfigError(f"max_steps must be a positive integer, got {self.max_steps!r}", field="max_steps")
        f = self.warmup_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ConfigError(f"warmup_fraction must be in (0, 1], got {f!r}", field="warmup_fraction")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or \
                    (name == "lr" and not 0 < v <= MAX_LR):
                raise ConfigError(f"{name} must be a {'positive' if name == 'lr' else 'non-negative'} finite number"
                                  f"{f' up to {MAX_LR:g}' if name == 'lr' else ''}, got {v!r}", field=name)


def effective_warmup(warmup_steps: int, total: int, fraction: float = 0.1) -> int:
    """The warm-up a run of ``total`` steps gets: ``warmup_steps``, but at most ``fraction`` of the
    run (at least one step when there is a warm-up at all), so that a short run is not all warm-up."""
    if not warmup_steps:
        return 0
    return max(1, min(warmup_steps, math.floor(fraction * total)))
