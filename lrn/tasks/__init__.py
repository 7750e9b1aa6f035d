"""The paper's experiments as tasks, found by name (see lrn/tasks/base.py for the contract)."""

from __future__ import annotations

import importlib

from lrn.tasks.base import TASKS, DataError, Task, register

#: every task module; each registers one Task under its own name
TASK_NAMES = ("lm", "ner", "nli", "doc", "mt", "rc", "adding")

__all__ = ["TASKS", "TASK_NAMES", "DataError", "Task", "get_task", "register"]


def get_task(name: str) -> Task:
    """A fresh instance of the task called ``name`` (imports lrn.tasks.<name>)."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASK_NAMES)}")
    try:
        importlib.import_module(f"lrn.tasks.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"lrn.tasks.{name}":
            raise
        raise ValueError(f"task {name!r} is not available in this installation") from None
    return TASKS[name]()
