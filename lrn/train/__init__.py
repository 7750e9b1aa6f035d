"""The training engine: presets, ``train`` and its errors."""

from lrn.train.config import PRESETS
from lrn.train.engine import Interrupted, TrainingError, train

__all__ = ["PRESETS", "Interrupted", "TrainingError", "train"]
