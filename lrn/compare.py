"""``lrn compare``: several cells on one task, compared the way the paper does.

Quality at equal training: every cell and seed runs the same preset for the same steps or
epochs into ``OUT/seed<S>/<cell>/`` (no wall-time budget, which would hand a faster cell
more steps on the steepest part of the curve).  Speed apart: the cells' task models are
timed in one process, interleaved round by round on the same batches shape, so that a
busy or idle spell of the machine falls on every cell alike.  Time-to-quality joins the
two: the steps each cell needs to reach the reference cell's final validation metric
(LSTM when compared), times its measured time per step.

Writes ``compare.json`` (every run's results, the per-cell summary, speed, time-to-quality),
``compare.md`` and two plots: ``curves.png`` (training loss and validation metric against
step, mean over seeds) and ``time_to_quality.png``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lrn.bench.machine import machine_info
from lrn.modules import parse_cell_spec
from lrn.ops.cpu import thread_count
from lrn.tasks import get_task
import lrn.train.distributed as distributed
from lrn.train.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint
from lrn.train.config import resolve_config
from lrn.train.engine import Interrupted, Trainer, train
from lrn.train.rng import seed_everything

#: interleaved rounds of the speed measurement; the first one more is a warm-up, not counted
SPEED_ROUNDS = 5


def cell_dir_name(cell: str) -> str:
    """A directory name for a cell spec: 'lrn:activation=identity' -> 'lrn-activation=identity'."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", cell).strip("-")


def run_dir_of(out_dir: Path, seed: int, cell: str) -> Path:
    return Path(out_dir) / f"seed{seed}" / cell_dir_name(cell)


def compare(task: str, data_dir: str | Path | None, cells: list[str], *, out_dir: str | Path,
            preset: str = "small", overrides: dict[str, Any] | None = None, seeds: list[int] = (0,),
            max_steps: int | None = None, device: str = "cpu", speed_steps: int = 30,
            progress: bool = True) -> dict[str, Any]:
    """Train every cell of ``cells`` with every seed of ``seeds`` under identical settings,
    measure speed apart, and write the comparison into ``out_dir``; returns compare.json's
    content.

    A run directory that already holds a finished run with these very settings is reused,
    and an interrupted one is resumed, so a long grid can be run in parts (``--cells lstm``,
    ``--seeds 1``, ...) and tabulated by a last call with all of them.  ``speed_steps``
    timed training steps per cell (0: no speed measurement); a speed.json measured earlier
    for the same cells and settings is reused (delete it to measure again)."""
    if not cells:
        raise ValueError("--cells: give at least one cell")
    if len(set(cells)) != len(cells):
        raise ValueError(f"--cells lists a cell twice: {','.join(cells)}")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds: give distinct non-negative seeds, got {seeds}")
    if speed_steps < 0:
        raise ValueError(f"--speed-steps must be >= 0, got {speed_steps}")
    for cell in cells:  # every spec is checked before the first run starts
        parse_cell_spec(cell)
    task_obj = get_task(task)
    out_dir = Path(out_dir)
    configs = {}
    for seed in seeds:
        config = resolve_config(task_obj, preset, None if data_dir is None else Path(data_dir), overrides, seed)
        if max_steps is not None:
            config["max_steps"] = max_steps
        if config.get("max_steps") is None and not config.get("max_epochs"):
            raise ValueError("compare trains every cell for the same steps: set --max-steps "
                             "(or the max_epochs setting)")
        configs[seed] = config
    runs = []
    for seed in seeds:
        for cell in cells:
            run_dir = run_dir_of(out_dir, seed, cell)
            finished = _finished_run(run_dir, cell, configs[seed])
            if finished is not None:
                print(f"{task_obj.name} {cell} seed {seed}: reusing the finished run in {run_dir}", flush=True)
                runs.append(finished)
                continue
            resume = _check_interrupted_run(run_dir, cell, configs[seed])
            try:
                runs.append(train(task_obj, data_dir, cell, out_dir=run_dir, resume=resume, preset=preset,
                                  overrides=overrides, seed=seed, max_steps=max_steps, device=device,
                                  progress=progress))
            except Interrupted as e:  # compare resumes by itself: no --resume to advise
                raise Interrupted(e.signum, f"{signal.Signals(e.signum).name} during {cell} seed {seed}: "
                                  f"checkpoint saved in {run_dir}; run the same lrn compare command "
                                  "again to continue") from None
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return {"runs": runs}  # only rank 0 measures and writes
    speed = None
    if speed_steps:
        speed = _speed(out_dir, task, data_dir, cells, configs[seeds[0]], device, speed_steps)
    logs = {(r["config"]["seed"], r["cell"]): _read_log(run_dir_of(out_dir, r["config"]["seed"], r["cell"]))
            for r in runs}
    summary = summarise(task_obj.name, runs, logs, speed)
    summary["preset"] = preset
    out_dir.mkdir(parents=True, exist_ok=True)
    summary["figures"] = plot_comparison(summary, logs, out_dir)
    atomic_write_json(out_dir / "compare.json", summary)
    atomic_write_text(out_dir / "compare.md", markdown_tables(summary))
    return summary


def _finished_run(run_dir: Path, cell: str, config: dict[str, Any]) -> dict | None:
    """The results of a finished run of ``cell`` in ``run_dir`` made with ``config``, if any."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    if results["cell"] != cell or results["config"] != config or results.get("max_minutes") is not None:
        raise ValueError(f"{run_dir} holds a finished run with other settings: remove it or choose another --out")
    return results


def _check_interrupted_run(run_dir: Path, cell: str, config: dict[str, Any]) -> bool:
    """True when ``run_dir`` holds an interrupted run to resume; refuses one made with other
    settings (resuming it would train and tabulate the old ones)."""
    checkpoint = load_checkpoint(run_dir, "last")
    if checkpoint is None:
        return False
    old = checkpoint.meta["config"]
    changed = [f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in sorted(set(old) | set(config))
               if old.get(k) != config.get(k)]
    if checkpoint.meta["cell"] != cell or changed:
        raise ValueError(f"{run_dir} holds an interrupted run with other settings ({'; '.join(changed) or 'cell'}): "
                         "rerun with its settings, or remove it or choose another --out")
    return True


def _read_log(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "log.json"
    if not path.is_file():
        raise ValueError(f"{path}: missing (every finished run writes one; was the run directory edited?)")
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ speed
def _speed(out_dir: Path, task: str, data_dir, cells: list[str], config: dict[str, Any], device: str,
           steps: int) -> dict[str, Any]:
    path = out_dir / "speed.json"
    if path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if earlier["cells"] == cells and earlier["config"] == config and earlier["steps"] == steps:
            print(f"{task}: reusing the speed measured in {path} (delete it to measure again)", flush=True)
            return earlier
    speed = measure_speed(task, data_dir, cells, config, device, steps=steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, speed)
    return speed


def measure_speed(task: str, data_dir, cells: list[str], config: dict[str, Any], device: str = "cpu", *,
                  steps: int = 30, rounds: int = SPEED_ROUNDS) -> dict[str, Any]:
    """Median wall time of a training step (forward, backward, clipping, optimiser) of each
    cell in the task's own model and batches, measured interleaved: ``rounds`` rounds (after
    one warm-up round), each running ``steps / rounds`` steps of every cell, the order
    rotating from round to round."""
    proc = distributed.Process(device=torch.device(device))
    data = get_task(task).load_data(None if data_dir is None else Path(data_dir), config)
    trainers, batches = {}, {}
    for cell in cells:
        task_obj = get_task(task)  # its own instance: a task may carry state between batches
        seed_everything(int(config["seed"]))
        model = task_obj.build_model(config, data, cell).to(proc.device)
        trainers[cell] = Trainer(task_obj, data, model, config, proc, out_dir=Path(os.devnull), cell=cell,
                                 preset="-", data_dir=None, progress=False)
        batches[cell] = _endless_batches(trainers[cell])
    per_round = max(1, math.ceil(steps / rounds))
    before = machine_info(proc.device)
    times: dict[str, list[float]] = {cell: [] for cell in cells}
    for r in range(rounds + 1):
        order = cells[r % len(cells):] + cells[:r % len(cells)]
        for cell in order:
            trainer = trainers[cell]
            for _ in range(per_round):
                trainer.train_step(next(batches[cell]))
            if r > 0:
                times[cell] += trainer.step_seconds[-per_round:]
    result = {}
    for cell in cells:
        q1, median, q3 = statistics.quantiles(times[cell], n=4, method="inclusive")
        result[cell] = {"median_s": statistics.median(times[cell]), "q1_s": q1, "q3_s": q3,
                        "n": len(times[cell])}
    return {"cells": cells, "config": config, "steps": steps, "rounds": rounds, "per_cell": result,
            "machine": before, "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "numba_threads": thread_count()}


def _endless_batches(trainer: Trainer):
    """The task's training batches, epoch after epoch."""
    while True:
        empty = True
        for batch in trainer.task.train_batches(trainer.data, trainer.config, epoch=trainer.epoch):
            empty = False
            yield batch
        if empty:
            raise ValueError(f"task {trainer.task.name} made no training batches")
        trainer.epoch += 1




# -------------------------------------------------------------- summaries
def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value) and the values."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarise(task: str, runs: list[dict], logs: dict[tuple, dict] | None = None,
              speed: dict | None = None) -> dict[str, Any]:
    """Per cell (in first-seen order): test and validation metrics as mean ± std over seeds;
    with ``logs`` (log.json of each (seed, cell)) and ``speed``, time-to-quality."""
    task_obj = get_task(task)
    metric = task_obj.primary_metric
    by_cell: dict[str, list[dict]] = {}
    for run in runs:
        by_cell.setdefault(run["cell"], []).append(run)
    cells = []
    for cell, group in by_cell.items():
        test_names = [k for k, v in group[0]["metrics"]["test"].items() if not isinstance(v, str)]
        cells.append({
            "cell": cell, "params": group[0]["params"], "seeds": [r["config"]["seed"] for r in group],
            "steps": sorted({r["steps"] for r in group}),
            "test": {k: mean_std([r["metrics"]["test"][k] for r in group]) for k in test_names},
            "valid": mean_std([(r["metrics"]["valid"] or {}).get(metric, math.nan) for r in group]),
            "train_time_per_batch_s": mean_std([r["time_per_batch_s"] for r in group if r["time_per_batch_s"]]),
        })
    summary = {"task": task, "metric": metric, "higher_is_better": task_obj.higher_is_better,
               "columns": list(task_obj.table_metrics), "runs": runs, "cells": cells, "speed": speed,
               "time_to_quality": None}
    if logs and speed:
        summary["time_to_quality"] = time_to_quality(summary, logs, speed)
    return summary


def _valid_curve(log: dict, metric: str) -> list[tuple[int, float]]:
    return [(e["step"], e["metrics"][metric]) for e in log["evals"] if metric in (e.get("metrics") or {})]


def time_to_quality(summary: dict, logs: dict[tuple, dict], speed: dict) -> dict[str, Any]:
    """Steps and estimated seconds for each cell to reach the reference cell's final
    validation metric (mean over its seeds); the reference is lstm when compared, else the
    first cell.  Seconds = the first validation step at or past the target x the cell's
    measured median time per step; a seed that never gets there counts as not reached."""
    metric, higher = summary["metric"], summary["higher_is_better"]
    cells = [c["cell"] for c in summary["cells"]]
    reference = "lstm" if "lstm" in cells else cells[0]
    finals = [_valid_curve(logs[(s, reference)], metric)[-1][1]
              for s in next(c["seeds"] for c in summary["cells"] if c["cell"] == reference)]
    target = statistics.fmean(finals)
    rows = []
    for entry in summary["cells"]:
        cell = entry["cell"]
        step_s = speed["per_cell"][cell]["median_s"] if cell in speed["per_cell"] else None
        reached = []
        for seed in entry["seeds"]:
            curve = _valid_curve(logs[(seed, cell)], metric)
            hit = next((step for step, value in curve if (value >= target if higher else value <= target)), None)
            if hit is not None:
                reached.append(hit)
        steps = statistics.fmean(reached) if reached else None
        rows.append({"cell": cell, "reached": len(reached), "of": len(entry["seeds"]), "steps": steps,
                     "seconds": None if steps is None or step_s is None else steps * step_s})
    ref_seconds = next(r["seconds"] for r in rows if r["cell"] == reference)
    for row in rows:
        row["vs_reference"] = (row["seconds"] / ref_seconds
                               if row["seconds"] is not None and ref_seconds else None)
    return {"reference": reference, "metric": metric, "target": target, "cells": rows}


# ------------------------------------------------------------------ tables
def format_mean_std(values: list[float | None], digits: int | None = None) -> str:
    """"mean ± sample std" of the values that are numbers (just the value for one; "–" for none).
    ``digits`` after the point: by default 2, or 4 when every value is below 1 (MSE-like metrics)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if digits is None:
        digits = 2 if max(abs(v) for v in values) >= 1 else 4
    stats = mean_std(values)
    return (f"{stats['mean']:.{digits}f}" if len(values) == 1
            else f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}")


def _pm(stats: dict | None) -> str:
    return format_mean_std(stats["values"] if stats else [])


def format_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def quality_table(summary: dict) -> str:
    """Model | #Params | test metric | valid metric | further test columns | steps | seeds:
    mean ± std over the seeds."""
    metric, columns = summary["metric"], [c for c in summary.get("columns", []) if c != summary["metric"]]
    lines = [f"| Model | #Params | test {metric} | valid {metric} | "
             + "".join(f"test {c} | " for c in columns) + "steps | seeds |",
             "|---|---:|---:|---:|" + "---:|" * len(columns) + "---:|---|"]
    for c in summary["cells"]:
        lines.append(f"| {c['cell']} | {format_params(c['params'])} | {_pm(c['test'].get(metric))} | "
                     f"{_pm(c['valid'])} | " + "".join(f"{_pm(c['test'].get(k))} | " for k in columns)
                     + f"{'/'.join(map(str, c['steps']))} | {','.join(map(str, c['seeds']))} |")
    return "\n".join(lines) + "\n"


def speed_table(summary: dict) -> str:
    speed = summary["speed"]
    per_cell = speed["per_cell"]
    base = "lstm" if "lstm" in per_cell else next(iter(per_cell))
    lines = [f"| Model | s/batch (median) | interquartile range | x {base} |", "|---|---:|---:|---:|"]
    for cell, s in per_cell.items():
        lines.append(f"| {cell} | {s['median_s']:.4f} | {s['q1_s']:.4f}–{s['q3_s']:.4f} | "
                     f"{s['median_s'] / per_cell[base]['median_s']:.2f} |")
    m = speed["machine"]
    load = m.get("load_average")
    note = (f"{speed['rounds']} interleaved rounds after a warm-up, {per_cell[base]['n']} timed steps per "
            f"cell; {m.get('gpu') or m.get('cpu_model')}, torch threads {m.get('torch_threads')}, "
            f"LRN kernel threads {speed.get('numba_threads')}, load average {load[0]:.2f} before"
            if load else "") + (f" / {speed['load_average_after'][0]:.2f} after" if speed.get("load_average_after")
                                else "")
    return "\n".join(lines) + "\n\n" + note + ".\n"


def time_to_quality_table(summary: dict) -> str:
    ttq = summary["time_to_quality"]
    higher = summary["higher_is_better"]
    lines = [f"Target: {ttq['reference']}'s final validation {ttq['metric']} "
             f"({'>=' if higher else '<='} {ttq['target']:.4g}, mean over its seeds).", "",
             f"| Model | reached (seeds) | steps (mean) | est. seconds | x {ttq['reference']} |",
             "|---|---:|---:|---:|---:|"]
    for row in ttq["cells"]:
        steps = "–" if row["steps"] is None else f"{row['steps']:.0f}"
        seconds = "–" if row["seconds"] is None else f"{row['seconds']:.0f}"
        ratio = "–" if row["vs_reference"] is None else f"{row['vs_reference']:.2f}"
        lines.append(f"| {row['cell']} | {row['reached']}/{row['of']} | {steps} | {seconds} | {ratio} |")
    return "\n".join(lines) + "\n"


def markdown_tables(summary: dict) -> str:
    out = ["Quality at equal training (mean ± std over seeds):", "", quality_table(summary)]
    if summary.get("speed"):
        out += ["Speed, measured apart (a training step of each cell's task model):", "", speed_table(summary)]
    if summary.get("time_to_quality"):
        out += ["Time to quality (validation steps x measured time per step):", "", time_to_quality_table(summary)]
    return "\n".join(out)


# ------------------------------------------------------------------ plots
def _smooth(values: list[float], window: int) -> list[float]:
    """Mean over the last ``window`` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def mean_curves(summary: dict, logs: dict[tuple, dict]) -> dict[str, dict[str, list]]:
    """Per cell: the smoothed training loss per step and the validation metric per
    validation step, each the mean over the cell's seeds (cut to the shortest seed)."""
    metric = summary["metric"]
    curves = {}
    for entry in summary["cells"]:
        cell = entry["cell"]
        losses = [logs[(s, cell)]["train_loss"] for s in entry["seeds"]]
        n = min(map(len, losses))
        window = max(1, n // 100)
        smoothed = [_smooth(x[:n], window) for x in losses]
        valid = [_valid_curve(logs[(s, cell)], metric) for s in entry["seeds"]]
        m = min(map(len, valid))
        curves[cell] = {"train": [statistics.fmean(v[i] for v in smoothed) for i in range(n)],
                        "valid_steps": [valid[0][i][0] for i in range(m)],
                        "valid": [statistics.fmean(v[i][1] for v in valid) for i in range(m)]}
    return curves


def plot_comparison(summary: dict, logs: dict[tuple, dict], out_dir: Path) -> list[str]:
    """curves.png and, with a speed measurement, time_to_quality.png in ``out_dir``."""
    from lrn.analysis.figures import plot_equal_step_curves, plot_time_to_quality

    curves = mean_curves(summary, logs)
    title = f"{summary['task']} ({summary.get('preset', '')}), mean over seeds"
    names = [plot_equal_step_curves(curves, out_dir / "curves.png", title, metric=summary["metric"]).name]
    if summary.get("time_to_quality"):
        seconds = {cell: summary["speed"]["per_cell"][cell]["median_s"] for cell in curves}
        names.append(plot_time_to_quality(curves, seconds, summary["time_to_quality"],
                                          out_dir / "time_to_quality.png", title).name)
    return names
