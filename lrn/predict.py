"""Trained runs put to use: one loader for every task, then evaluate, predict, generate,
translate or answer.  The layer above the engine (lrn/train/) and below the CLI.

    run = load_run("runs/ner")                       # vocabularies only: enough to predict
    lines = predict_file("runs/ner", "raw.txt")      # the task's output lines
    metrics = evaluate_run("runs/ner", "test")       # reads the dataset the run trained on
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from lrn.tasks import get_task
from lrn.tasks.base import DataError, Task
from lrn.tasks.text import text_lines
from lrn.train.checkpoint import load_checkpoint


class LoadedRun(NamedTuple):
    """A trained run, ready to predict: ``task, config, data, model = load_run(run_dir)``."""

    task: Task
    config: dict[str, Any]
    data: Any      # the task's data object; without with_data, its vocabularies only
    model: nn.Module  # in eval mode, on the requested device


def load_run(run_dir: str | Path, *, device: str = "cpu", with_data: bool = False,
             data_dir: str | Path | None = None, task: str | None = None) -> LoadedRun:
    """The run's best model (its last one if it never validated).

    Without ``with_data`` only the checkpoint is read (vocabularies included): enough to
    predict on new input.  With it, the dataset's splits are read too, from ``data_dir``
    or else the directory the run was trained on.  ``task`` names the task the caller
    expects, for a clear error when the run is of another one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run directory")
    checkpoint = load_checkpoint(run_dir, "best") or load_checkpoint(run_dir, "last")
    if checkpoint is None:
        raise ValueError(f"{run_dir}: no checkpoint found (is it a run directory of `lrn train`?)")
    meta = checkpoint.meta
    if task is not None and meta["task"] != task:
        raise ValueError(f"{run_dir} holds a run of task {meta['task']!r}; this command needs task {task!r}")
    run_task = get_task(meta["task"])
    config = meta["config"]
    if with_data:
        data_dir = data_dir if data_dir is not None else meta["data_dir"]
        data = run_task.load_data(None if data_dir is None else Path(data_dir), config, checkpoint.vocab)
    else:
        data = run_task.vocab_data(config, checkpoint.vocab)
    # The checkpoint holds every weight: no pretrained-embeddings file is read again (it
    # may be large, or gone since training).
    build_config = {**config, "embeddings": None} if "embeddings" in config else config
    model = run_task.build_model(build_config, data, meta["cell"])
    model.load_state_dict(checkpoint.model_state())
    model.to(device).eval()
    return LoadedRun(run_task, config, data, model)


def evaluate_run(run_dir: str | Path, split: str = "test", *, device: str = "cpu",
                 data_dir: str | Path | None = None, progress: bool = False) -> dict[str, float]:
    """Metrics of the run's best model on ``split`` ('valid' | 'test') of its dataset."""
    if split not in ("valid", "test"):
        raise ValueError(f"--split must be 'valid' or 'test', got {split!r}")
    run = load_run(run_dir, device=device, with_data=True, data_dir=data_dir)
    run.task.show_progress = progress
    with torch.no_grad():
        return run.task.evaluate(run.model, run.data, split, run.config, torch.device(device))


def predict_file(run_dir: str | Path, path: str | Path, *, task: str | None = None, device: str = "cpu",
                 progress: bool = False) -> list[str]:
    """The task's output lines for the raw input file ``path`` (ner: CoNLL blocks, nli: a
    label per pair, doc: a class per document)."""
    run = load_run(run_dir, device=device, task=task)
    run.task.show_progress = progress
    with torch.no_grad():
        return list(run.task.predict_file(run.model, run.data, run.config, Path(path), torch.device(device)))


def generate(run_dir: str | Path, words: int, *, temperature: float = 1.0, seed: int = 0,
             device: str = "cpu") -> str:
    """``words`` words sampled from a trained language model, one line per ``<eos>``."""
    from lrn.tasks.lm import generate as sample

    run = load_run(run_dir, device=device, task="lm")
    return sample(run.model, run.data.vocab, words, temperature=temperature, seed=seed, device=device)


def translate(run_dir: str | Path, lines: Sequence[str], *, beam_size: int | None = None, device: str = "cpu",
              progress: bool = False) -> list[str]:
    """Translations of ``lines`` (one sentence each) by a trained mt run; ``beam_size``
    defaults to the run's (1: greedy)."""
    from lrn.tasks.mt import translate as decode

    if beam_size is not None and beam_size < 1:
        raise ValueError(f"--beam must be >= 1, got {beam_size}")
    run = load_run(run_dir, device=device, task="mt")
    return decode(run.model, run.data.tokenizer, lines, run.config, torch.device(device), beam_size=beam_size,
                  progress=progress)


def answer(run_dir: str | Path, context_path: str | Path, question: str, *,
           device: str = "cpu") -> tuple[str, int, int]:
    """The span of the text in ``context_path`` that a trained rc run gives as the answer to
    ``question``: (text, start, end), character offsets into the file's text."""
    path = Path(context_path)
    if not path.is_file():
        raise DataError("context file not found", path)
    context = "".join(line for _, line in text_lines(path))
    if not context.strip():
        raise DataError("context file is empty", path)
    run = load_run(run_dir, device=device, task="rc")
    return run.task.answer(run.model, run.data, run.config, context, question, torch.device(device))
