"""``lrn demo``: LRN, LSTM and GRU side by side on the adding problem, in under 3 minutes.

No data and no flags needed: the task is generated (lrn/tasks/adding.py, sequences of
100 steps).  Every cell trains for the same time budget with identical settings; then a
table of test MSE, time per batch and parameters is printed and the learning curves
are plotted.  Always predicting the mean scores an MSE of 0.167.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lrn.compare import format_params
from lrn.tasks.adding import MEAN_BASELINE_MSE
from lrn.train import train
from lrn.train.checkpoint import atomic_write_json

CELLS = ("lrn", "lstm", "gru")
#: training seconds per cell: 3 cells plus validation, start-up and plotting stay under 3 minutes
SECONDS_PER_CELL = 40.0
#: an MSE this far under the mean predictor's counts as solving the task
SOLVED_MSE = MEAN_BASELINE_MSE / 10


def run_demo(out_dir: str | Path | None = None, *, seconds: float | None = None, plot: str | Path | None = None,
             progress: bool = True, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, print the table, write the plot (and with ``out_dir`` the runs and results.json).
    ``overrides`` change settings of the adding task's small preset (tests make it smaller)."""
    seconds = SECONDS_PER_CELL if seconds is None else seconds
    if not seconds > 0:
        raise ValueError(f"--seconds must be positive, got {seconds}")
    print(f"The adding problem (Hochreiter & Schmidhuber 1997), sequences of 100 steps: "
          f"{', '.join(CELLS)} each train for {seconds:g} s.", flush=True)
    with tempfile.TemporaryDirectory(prefix="lrn-demo-") as scratch:
        runs_dir = Path(out_dir) if out_dir is not None else Path(scratch)
        # A demo of speed: every cell gets the same training time (lrn compare, by contrast,
        # gives every cell the same steps and times them apart).
        runs = [train("adding", None, cell, out_dir=runs_dir / cell, preset="small", overrides=overrides,
                      max_minutes=seconds / 60.0, progress=progress) for cell in CELLS]
        curves = {cell: _curves(runs_dir / cell) for cell in CELLS}
    results = {"task": "adding", "seq_len": runs[0]["config"]["seq_len"],
               "seconds_per_cell": seconds, "mean_baseline_mse": MEAN_BASELINE_MSE, "solved_mse": SOLVED_MSE,
               "runs": runs}
    print(table(results), end="")
    plot_path = Path(plot) if plot else (Path(out_dir) / "learning_curves.png" if out_dir else Path("lrn-demo.png"))
    plot_curves(curves, plot_path)
    print(f"learning curves: {plot_path}")
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "results.json", results)
        print(f"results: {Path(out_dir) / 'results.json'}")
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["", "| Model | test MSE | solved | Time ms/batch | steps | #Params |",
             "|---|---:|:---:|---:|---:|---:|"]
    for run in results["runs"]:
        mse = run["metrics"]["test"]["mse"]
        lines.append(f"| {run['cell']} | {mse:.4f} | {'yes' if mse < SOLVED_MSE else 'no'} | "
                     f"{1000 * run['time_per_batch_s']:.1f} | {run['steps']} | {format_params(run['params'])} |")
    lines.append(f"| always predict the mean | {MEAN_BASELINE_MSE:.4f} | no | | | |")
    return "\n".join(lines) + "\n\n"


def _curves(run_dir: Path) -> dict[str, list[float]]:
    """Validation MSE against training seconds, from the run's log.json."""
    import json

    log = json.loads((run_dir / "log.json").read_text())
    elapsed, total = [0.0], 0.0
    for seconds in log["step_seconds"]:
        total += seconds
        elapsed.append(total)
    return {"seconds": [elapsed[e["step"]] for e in log["evals"]],
            "valid_mse": [e["metrics"]["mse"] for e in log["evals"]]}


def plot_curves(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for cell, curve in curves.items():
        ax.plot(curve["seconds"], curve["valid_mse"], marker=".", label=cell)
    ax.axhline(MEAN_BASELINE_MSE, color="gray", linestyle="--", label="predict the mean")
    ax.set_yscale("log")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation MSE")
    ax.set_title("Adding problem, T = 100")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
