"""``lrn compare``: the same task and settings for several cells, and a paper-style table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch.distributed as dist

from lrn.modules import parse_cell_spec
from lrn.tasks import get_task
from lrn.train.checkpoint import atomic_write_json, atomic_write_text
from lrn.train.config import resolve_config
from lrn.train.engine import train


def cell_dir_name(cell: str) -> str:
    """A directory name for a cell spec: 'lrn:activation=identity' -> 'lrn-activation=identity'."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", cell).strip("-")


def compare(task: str, data_dir: str | Path | None, cells: list[str], *, out_dir: str | Path,
            preset: str = "small", overrides: dict[str, Any] | None = None, seed: int = 0,
            max_steps: int | None = None, max_minutes: float | None = None, device: str = "cpu",
            progress: bool = True) -> dict[str, Any]:
    """Train every cell of ``cells`` with identical settings into ``out_dir/<cell>/``;
    write ``compare.md`` and ``compare.json``; returns compare.json's content.

    A cell whose run directory already holds a finished run with these very settings is
    reused, and an interrupted one is resumed: a long comparison can be run cell by cell
    (``--cells lstm``, then ``--cells gru``, ...) and tabulated by a last call with all cells."""
    if not cells:
        raise ValueError("--cells: give at least one cell")
    if len(set(cells)) != len(cells):
        raise ValueError(f"--cells lists a cell twice: {','.join(cells)}")
    for cell in cells:  # every spec is checked before the first run starts
        parse_cell_spec(cell)
    task_obj = get_task(task)
    out_dir = Path(out_dir)
    settings = dict(preset=preset, overrides=overrides, seed=seed, max_steps=max_steps,
                    max_minutes=max_minutes, device=device, progress=progress)
    runs = []
    for cell in cells:
        run_dir = out_dir / cell_dir_name(cell)
        finished = _finished_run(run_dir, task_obj, data_dir, cell, settings)
        if finished is not None:
            print(f"{task_obj.name} {cell}: reusing the finished run in {run_dir}", flush=True)
            runs.append(finished)
            continue
        resume = (run_dir / "checkpoints" / "last.json").is_file()
        runs.append(train(task_obj, data_dir, cell, out_dir=run_dir, resume=resume, **settings))
    summary = {"task": task_obj.name, "metric": task_obj.primary_metric,
               "higher_is_better": task_obj.higher_is_better,
               "columns": list(task_obj.table_metrics), "runs": runs}
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return summary  # only rank 0 writes
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "compare.json", summary)
    atomic_write_text(out_dir / "compare.md", markdown_table(summary))
    return summary


def _finished_run(run_dir: Path, task, data_dir, cell: str, settings: dict[str, Any]) -> dict | None:
    """The results of a finished run of ``cell`` in ``run_dir`` made with ``settings``, if any."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    config = resolve_config(task, settings["preset"], None if data_dir is None else Path(data_dir),
                            settings["overrides"], settings["seed"])
    if settings["max_steps"] is not None:
        config["max_steps"] = settings["max_steps"]
    same = (results["cell"] == cell and results["config"] == config
            and results.get("max_minutes") == settings["max_minutes"])
    if not same:
        raise ValueError(f"{run_dir} holds a finished run with other settings: remove it or choose another --out")
    return results


def markdown_table(summary: dict[str, Any]) -> str:
    """Model | #Params | test metric (and the task's further test columns) | Time s/batch,
    one row per run, as in the paper's tables."""
    metric, columns = summary["metric"], summary.get("columns", [])
    lines = [f"| Model | #Params | test {metric} | valid {metric} | "
             + "".join(f"test {c} | " for c in columns) + "Time s/batch | steps |",
             "|---|---:|---:|---:|" + "---:|" * len(columns) + "---:|---:|"]
    for run in summary["runs"]:
        test = run["metrics"]["test"]
        valid = (run["metrics"]["valid"] or {}).get(metric, float("nan"))
        per_batch = run["time_per_batch_s"]
        lines.append(f"| {run['cell']} | {format_params(run['params'])} | {test[metric]:.4g} | {valid:.4g} | "
                     + "".join(f"{test.get(c, float('nan')):.4g} | " for c in columns)
                     + f"{'-' if per_batch is None else f'{per_batch:.4f}'} | {run['steps']} |")
    return "\n".join(lines) + "\n"


def format_params(n: int) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)
