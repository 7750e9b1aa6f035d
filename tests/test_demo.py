"""``lrn demo`` and the adding problem it runs."""

from __future__ import annotations

import json

import matplotlib.image
import torch

from lrn.demo import run_demo
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


def test_lrn_solves_the_adding_problem_with_100_steps(tmp_path):
    # The demo's settings, fewer held-out sequences; solved in ~1200 steps.
    overrides = {"eval_every": 1500, "valid_size": 500, "test_size": 500}
    results = train("adding", None, "lrn", preset="small", out_dir=tmp_path / "r", max_steps=1500,
                    overrides=overrides, progress=False)
    assert results["config"]["seq_len"] == 100
    assert results["metrics"]["test"]["mse"] < MEAN_BASELINE_MSE / 3


def test_demo_writes_table_plot_and_results(tmp_path, capsys):
    results = run_demo(tmp_path / "demo", seconds=0.5, progress=False,
                       overrides={"valid_size": 64, "test_size": 64, "eval_every": 5})
    out = capsys.readouterr().out
    assert "| lrn |" in out and "| lstm |" in out and "| gru |" in out and "predict the mean" in out
    image = matplotlib.image.imread(tmp_path / "demo" / "learning_curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    on_disk = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert on_disk["seconds_per_cell"] == 0.5 and [r["cell"] for r in on_disk["runs"]] == ["lrn", "lstm", "gru"]
    assert on_disk == json.loads(json.dumps(results))
