"""Reading finished (or interrupted) runs back: ``lrn eval``, ``lrn generate``, ``lrn predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from lrn.tasks import get_task
from lrn.tasks.base import Task
from lrn.train.checkpoint import load_checkpoint


class LoadedRun(NamedTuple):
    """A trained run, ready to predict: ``task, config, data, model = load_run(run_dir)``."""

    task: Task
    config: dict[str, Any]
    data: Any
    model: nn.Module  # in eval mode, on the requested device


def load_run(run_dir: str | Path, *, device: str = "cpu", data_dir: str | Path | None = None) -> LoadedRun:
    """The run's best model (its last one if it never validated), with its data and vocabularies.

    ``data_dir`` defaults to the directory the run was trained on."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run directory")
    checkpoint = load_checkpoint(run_dir, "best") or load_checkpoint(run_dir, "last")
    if checkpoint is None:
        raise ValueError(f"{run_dir}: no checkpoint found (is it a run directory of `lrn train`?)")
    meta = checkpoint.meta
    task = get_task(meta["task"])
    data_dir = data_dir if data_dir is not None else meta["data_dir"]
    data = task.load_data(None if data_dir is None else Path(data_dir), meta["config"], checkpoint.vocab)
    # The checkpoint holds every weight: no pretrained-embeddings file is read again (it
    # may be large, or gone since training).
    build_config = {**meta["config"], "embeddings": None} if "embeddings" in meta["config"] else meta["config"]
    model = task.build_model(build_config, data, meta["cell"])
    model.load_state_dict(checkpoint.model_state())
    model.to(device).eval()
    return LoadedRun(task, meta["config"], data, model)


def evaluate_run(run_dir: str | Path, split: str = "test", *, device: str = "cpu",
                 data_dir: str | Path | None = None) -> dict[str, float]:
    if split not in ("valid", "test"):
        raise ValueError(f"--split must be 'valid' or 'test', got {split!r}")
    run = load_run(run_dir, device=device, data_dir=data_dir)
    with torch.no_grad():
        return run.task.evaluate(run.model, run.data, split, run.config, torch.device(device))
