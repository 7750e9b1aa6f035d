"""``lrn demo``: LRN, LSTM and GRU on the adding problem, at equal steps, then their speed.

No data and no flags needed: the task is generated (lrn/tasks/adding.py: sequences of 50
steps, hidden size 128, batches of 32, 2000 steps).  The three cells train the same number of steps
with identical settings (``lrn compare``), so the curves show what each learns per step;
then one training step of each is timed apart, interleaved, after a warm-up (so compiling
the kernels is not counted), and the wall-time panel redraws the curves against that
measured time.  The task counts as solved below a tenth of the MSE of always predicting
the mean (0.167), i.e. below 0.0167.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from lrn.compare import compare, format_params
from lrn.tasks.adding import MEAN_BASELINE_MSE
from lrn.train.checkpoint import atomic_write_json

CELLS = ("lrn", "lstm", "gru")
#: an MSE this far under the mean predictor's counts as solving the task
SOLVED_MSE = MEAN_BASELINE_MSE / 10
#: training steps timed per cell after training, interleaved (lrn compare --speed-steps)
SPEED_STEPS = 40
#: torch threads: one keeps the demo within 3 minutes on a busy 2-core machine (with two,
#: GRU's steps took 2-5x longer beside two other busy processes)
THREADS = 1


def run_demo(out_dir: str | Path | None = None, *, steps: int | None = None, plot: str | Path | None = None,
             threads: int = THREADS, progress: bool = True, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, time, print the table, write the plot (and with ``out_dir`` the runs and
    results.json).  ``steps`` defaults to the adding task's small preset; ``overrides``
    change its settings (tests make it smaller)."""
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(out_dir, steps, plot, progress, overrides)
    finally:
        torch.set_num_threads(before)


def _run(out_dir: str | Path | None, steps: int | None, plot: str | Path | None, progress: bool,
         overrides: dict[str, Any] | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lrn-demo-") as scratch:
        runs_dir = Path(out_dir) if out_dir is not None else Path(scratch)
        summary = compare("adding", None, list(CELLS), out_dir=runs_dir, preset="small", overrides=overrides,
                          max_steps=steps, speed_steps=SPEED_STEPS, progress=progress)
        curves = {cell: _valid_curve(runs_dir / "seed0" / cell) for cell in CELLS}
    config = summary["runs"][0]["config"]
    results = {"kind": "lrn.demo", "task": "adding", "threads": torch.get_num_threads(),
               "seq_len": config["seq_len"], "hidden_size": config["hidden_size"],
               "batch_size": config["batch_size"], "steps": config["max_steps"],
               "mean_baseline_mse": MEAN_BASELINE_MSE, "solved_mse": SOLVED_MSE,
               "step_seconds": {cell: s["median_s"] for cell, s in summary["speed"]["per_cell"].items()},
               "machine": summary["speed"]["machine"], "curves": curves,
               "runs": [{k: run[k] for k in ("cell", "params", "steps", "metrics")} for run in summary["runs"]]}
    print(table(results), end="")
    plot_path = Path(plot) if plot else (Path(out_dir) / "learning_curves.png" if out_dir else Path("lrn-demo.png"))
    plot_curves(results, plot_path)
    print(f"learning curves: {plot_path}")
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "results.json", results)
        print(f"results: {Path(out_dir) / 'results.json'}")
    return results


def steps_to_solve(curve: dict[str, list[float]]) -> int | None:
    """The first validation step with an MSE below SOLVED_MSE, or None."""
    return next((step for step, mse in zip(curve["step"], curve["valid_mse"]) if mse < SOLVED_MSE), None)


def table(results: dict[str, Any]) -> str:
    """Quality at equal steps, then speed measured apart and the time to solve the task."""
    lstm_s = results["step_seconds"]["lstm"]
    lines = ["", f"The adding problem, T = {results['seq_len']}, hidden {results['hidden_size']}, "
                 f"batch {results['batch_size']}: every cell trained {results['steps']} steps on "
                 f"{results['threads']} thread(s); solved means test MSE < {SOLVED_MSE:.4f}.", "",
             "| Model | test MSE | solved | ms/step (measured apart) | x LSTM | steps to solve | time to solve "
             "| #Params |", "|---|---:|:---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        cell = run["cell"]
        mse, step_s = run["metrics"]["test"]["mse"], results["step_seconds"][cell]
        solve = steps_to_solve(results["curves"][cell])
        lines.append(f"| {cell} | {mse:.4f} | {'yes' if mse < SOLVED_MSE else 'no'} | {1000 * step_s:.1f} | "
                     f"{step_s / lstm_s:.2f} | {'–' if solve is None else solve} | "
                     f"{'–' if solve is None else f'{solve * step_s:.1f} s'} | {format_params(run['params'])} |")
    lines.append(f"| always predict the mean | {MEAN_BASELINE_MSE:.4f} | no | | | | | |")
    return "\n".join(lines) + "\n\n"


def _valid_curve(run_dir: Path) -> dict[str, list[float]]:
    """Validation MSE against step, from the run's log.json."""
    log = json.loads((run_dir / "log.json").read_text(encoding="utf-8"))
    return {"step": [e["step"] for e in log["evals"]], "valid_mse": [e["metrics"]["mse"] for e in log["evals"]]}


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """Two panels: validation MSE against training step, and against the wall time those
    steps take at each cell's measured time per step."""
    from matplotlib.figure import Figure  # Agg canvas: no display needed

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for cell, curve in results["curves"].items():
        seconds = [step * results["step_seconds"][cell] for step in curve["step"]]
        line, = by_step.plot(curve["step"], curve["valid_mse"], marker=".", label=cell)
        by_time.plot(seconds, curve["valid_mse"], marker=".", color=line.get_color(), label=cell)
    for ax in (by_step, by_time):
        ax.axhline(MEAN_BASELINE_MSE, color="gray", linestyle="--", label="predict the mean")
        ax.axhline(SOLVED_MSE, color="black", linestyle=":", label="solved")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    by_step.set_xlabel("training step (equal for every cell)")
    by_step.set_ylabel("validation MSE")
    by_time.set_xlabel("training time (s): steps x each cell's measured time per step")
    by_step.legend()
    fig.suptitle(f"Adding problem, T = {results['seq_len']}, hidden {results['hidden_size']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
