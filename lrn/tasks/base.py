"""The contract between the training engine (lrn/train/) and a task (lrn/tasks/<task>.py).

A task knows its data, its model, its loss and its metric; the engine knows
everything else (optimisation, schedules, checkpoints, progress, distributed
training, results.json).  Each task module defines one ``Task`` subclass and
registers it with ``register``; the CLI looks tasks up by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn


class DataError(ValueError):
    """Bad or missing input data.  The message is one line naming the file (and line)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class Task(ABC):
    """One of the paper's experiments.

    Config dicts are flat and JSON-serialisable: the preset's values, updated with
    the user's overrides.  The engine reads these common keys (a preset may set any):
    batch_size, lr, optimizer ("sgd" | "adam" | "asgd"), weight_decay, clip,
    max_steps, max_epochs, eval_every, warmup_steps, lr_schedule, hidden_size,
    num_layers, layer_norm, dropout.
    """

    name: ClassVar[str]
    #: metric names every evaluation reports (results.json["metrics"][split]); a task may
    #: report more (other test sets, a BLEU signature): those are kept in results.json too
    metrics: ClassVar[tuple[str, ...]]
    #: further test metrics shown as columns of ``lrn compare``'s table
    table_metrics: ClassVar[tuple[str, ...]] = ()
    #: the validation metric used to pick the best checkpoint
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool]

    @abstractmethod
    def config(self, preset: str, data_dir: Path) -> dict[str, Any]:
        """Every hyper-parameter of ``preset`` ('tiny' | 'small' | 'anchor' | 'paper') for this data."""

    @abstractmethod
    def load_data(self, data_dir: Path, config: dict[str, Any], vocab: dict | None = None) -> Any:
        """Read and index the splits; build vocabularies unless ``vocab`` (from
        ``vocab_state``) is given.  Raises DataError on bad input."""

    @abstractmethod
    def vocab_state(self, data: Any) -> dict:
        """JSON-serialisable vocabularies, saved with every checkpoint."""

    @abstractmethod
    def build_model(self, config: dict[str, Any], data: Any, cell: str) -> nn.Module:
        """The task's model with recurrent layers made by ``lrn.make_rnn(cell, ...)``."""

    @abstractmethod
    def train_batches(
        self, data: Any, config: dict[str, Any], *, epoch: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[Any]:
        """One epoch of training batches for this process (shard ``rank`` of ``world_size``),
        shuffled deterministically from ``epoch`` and config['seed']."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        """Mean training loss of ``batch`` and the number of items (tokens, sentences)
        it covers, for throughput."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Any, split: str, config: dict[str, Any],
                 device: torch.device) -> dict[str, float | str]:
        """Metrics of ``split`` ('valid' | 'test'): every name in ``metrics`` (numbers), and
        optionally more (numbers or strings)."""

    #: set by the engine (main process, progress on) and by ``lrn eval``/``lrn predict``: evaluation
    #: and prediction loops then show a transient progress bar of their own
    show_progress: bool = False

    def progress(self, iterable: Any, desc: str, total: int | None = None) -> Any:
        """``iterable``, with a progress bar named "<task>: <desc>" when ``show_progress`` is set."""
        if not self.show_progress:
            return iterable
        from tqdm.auto import tqdm  # the tasks extra; only reached when progress is asked for

        return tqdm(iterable, desc=f"{self.name}: {desc}", total=total, leave=False, dynamic_ncols=True)

    # Optional hooks; the defaults suit tasks whose batches are independent.
    #: False for tasks that generate their own data (the adding problem): no --data needed.
    needs_data: ClassVar[bool] = True

    def carry_state(self) -> dict[str, torch.Tensor]:
        """State carried from one training batch to the next (the LM's truncated-BPTT
        hidden state), saved with every checkpoint so that a resumed run continues
        exactly as an uninterrupted one."""
        return {}

    def load_carry_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``carry_state`` returned; the engine calls it after re-creating the
        interrupted epoch's batch iterator and skipping the batches already trained on."""

    def lr_scale(self, batch: Any) -> float:
        """Factor on the learning rate for ``batch`` (the LM scales it by its BPTT length)."""
        return 1.0

    def vocab_data(self, config: dict[str, Any], vocab: dict) -> Any:
        """The data object ``load_data`` would give, holding only the vocabularies of ``vocab``
        (from ``vocab_state``) and no splits: all a trained run needs to predict on new input."""
        if not self.needs_data:
            return self.load_data(None, config, vocab)
        raise NotImplementedError(f"{self.name}: no vocabulary-only data; evaluate with the dataset instead")

    def predict_file(self, model: nn.Module, data: Any, config: dict[str, Any], path: Path,
                     device: torch.device) -> Iterator[str]:
        """Output lines for the raw input in ``path`` (``lrn predict TASK RUN --input FILE``),
        for tasks whose input is a text file."""
        raise NotImplementedError(f"{self.name}: no prediction from a text file")


def preset_config(task: str, presets: dict[str, dict[str, Any]], preset: str, *, no_anchor: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    """A copy of ``presets[preset]`` updated with ``extra``; a clear error for an unknown name.
    ``no_anchor`` says why the task has no 'anchor' preset (a published baseline
    configuration reachable on this data and hardware)."""
    if preset == "anchor" and preset not in presets and no_anchor:
        raise ValueError(f"{task}: no 'anchor' preset: {no_anchor}")
    if preset not in presets:
        raise ValueError(f"{task}: unknown preset {preset!r} (choose from {sorted(presets)})")
    return dict(presets[preset], **extra)


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls
