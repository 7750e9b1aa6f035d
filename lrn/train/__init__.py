"""The training engine shared by every task: train and evaluate."""

from lrn.train.config import PRESETS
from lrn.train.engine import Interrupted, TrainingError, train
from lrn.train.runs import evaluate_run, load_run

__all__ = ["PRESETS", "Interrupted", "TrainingError", "evaluate_run", "load_run", "train"]
