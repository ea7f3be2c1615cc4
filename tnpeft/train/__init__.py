"""Training helpers: offline data sets, a plain training loop, adapter comparisons, the demo."""

from tnpeft.train.comparison import compare

__all__ = ["compare"]
