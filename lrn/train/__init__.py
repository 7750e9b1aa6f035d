"""The training engine shared by every task: train, evaluate, compare."""

from lrn.train.compare import compare, markdown_table
from lrn.train.config import PRESETS
from lrn.train.engine import Interrupted, TrainingError, train
from lrn.train.runs import evaluate_run, load_run

__all__ = ["PRESETS", "Interrupted", "TrainingError", "compare", "evaluate_run", "load_run",
           "markdown_table", "train"]
