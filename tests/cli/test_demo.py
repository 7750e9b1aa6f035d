"""``lrn demo`` and the adding problem it runs."""

from __future__ import annotations

import json

import matplotlib.image
import torch

from lrn.demo import run_demo, steps_to_solve
from lrn.tasks.adding import MEAN_BASELINE_MSE, _generator, generate
from lrn.train import train


def test_adding_problem_targets_are_the_sum_of_the_two_marked_values():
    inputs, targets = generate(500, 100, _generator(1))
    assert inputs.shape == (100, 500, 2) and targets.shape == (500,)
    markers = inputs[..., 1]
    assert torch.equal(markers.sum(0), torch.full((500,), 2.0))
    assert bool((markers[:50].sum(0) == 1).all())  # one marker in each half
    torch.testing.assert_close((inputs[..., 0] * markers).sum(0), targets)
    # Predicting the mean (1) scores Var(u1 + u2) = 1/6 on average.
    assert abs(float(((targets - 1) ** 2).mean()) - MEAN_BASELINE_MSE) < 0.03


def test_lrn_learns_the_demo_task_within_its_steps(tmp_path):
    # The demo's settings, fewer held-out sequences: LRN leaves the mean-predictor plateau.
    overrides = {"eval_every": 2000, "valid_size": 500, "test_size": 500}
    results = train("adding", None, "lrn", preset="small", out_dir=tmp_path / "r", overrides=overrides,
                    progress=False)
    assert results["config"]["seq_len"] == 50 and results["steps"] == 2000
    assert results["metrics"]["test"]["mse"] < MEAN_BASELINE_MSE / 2


def test_demo_trains_equal_steps_and_writes_table_plot_and_results(tmp_path, capsys):
    results = run_demo(tmp_path / "demo", steps=6, progress=False,
                       overrides={"valid_size": 64, "test_size": 64, "eval_every": 3, "hidden_size": 16})
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"lrn", "lstm", "gru", "always predict the mean"} <= set(rows)
    assert "every cell trained 6 steps on 1 thread(s); solved means test MSE < 0.0167" in out
    assert rows["lstm"].split("|")[5].strip() == "1.00"  # the x LSTM column
    image = matplotlib.image.imread(tmp_path / "demo" / "learning_curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    on_disk = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["cell"] for r in on_disk["runs"]] == ["lrn", "lstm", "gru"]
    assert all(r["steps"] == 6 for r in on_disk["runs"]) and on_disk["steps"] == 6
    assert all(curve["step"] == [3, 6] for curve in on_disk["curves"].values())  # a curve per cell, not a dot
    assert set(on_disk["step_seconds"]) == {"lrn", "lstm", "gru"}
    assert on_disk == json.loads(json.dumps(results))


def test_steps_to_solve_reads_the_first_step_under_the_threshold():
    curve = {"step": [100, 200, 300], "valid_mse": [0.1, 0.0166, 0.001]}
    assert steps_to_solve(curve) == 200
    assert steps_to_solve({"step": [100], "valid_mse": [0.0167]}) is None
