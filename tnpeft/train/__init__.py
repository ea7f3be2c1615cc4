"""Training: offline data sets and models, the resumable training loop (:func:`fit`), evaluation,
checkpoints, metrics and curves, and adapter comparisons (:func:`compare`)."""

from tnpeft.train.comparison import compare
from tnpeft.train.loop import TrainingInterrupted, fit
from tnpeft.train.train_config import TrainConfig

__all__ = ["compare", "fit", "TrainConfig", "TrainingInterrupted"]
