"""The paper's ablations as `lrn compare` cell specs, on a tiny LM corpus and a tiny CoNLL file."""

import json
import math

import pytest

from lrn.analysis.report import build_report
from lrn.cli import main
from lrn.predict import load_run

ABLATIONS = ["lrn", "lrn:activation=identity", "lrn:layer_norm=true", "olrn", "lrn:recurrent_gates=false"]


def _lm_corpus(root):
    words = "the cat sat on the mat and the dog sat on the log".split()
    for split, lines in (("train", 40), ("valid", 4), ("test", 4)):
        text = "\n".join(" ".join(words[i % 5:] + words[:i % 5]) for i in range(lines))
        (root / f"{split}.txt").write_text(text + "\n")


def _conll(root):
    sentence = "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO\n.\tO\n"
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text(sentence + "\n" + sentence)


@pytest.mark.parametrize("task,make_data", [("lm", _lm_corpus), ("ner", _conll)])
def test_every_ablation_trains_and_is_what_it_says(task, make_data, tmp_path):
    make_data(tmp_path)
    out = tmp_path / "compare"
    assert main(["compare", task, "--data", str(tmp_path), "--preset", "tiny", "--max-steps", "2",
                 "--cells", ",".join(ABLATIONS), "--speed-steps", "2", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "compare.json").read_text())
    assert [r["cell"] for r in summary["runs"]] == ABLATIONS
    assert list(summary["speed"]["per_cell"]) == ABLATIONS  # each variant timed in the task's model
    for run in summary["runs"]:
        assert all(math.isfinite(v) for v in run["metrics"]["test"].values())
    params = {r["cell"]: r["params"] for r in summary["runs"]}
    assert params["lrn:activation=identity"] == params["lrn"] == params["lrn:recurrent_gates=false"]
    assert params["olrn"] > params["lrn"] and params["lrn:layer_norm=true"] > params["lrn"]
    layers = {}
    for cell in ABLATIONS:
        model = load_run(out / "seed0" / cell.replace(":", "-")).model
        layers[cell] = next(m for m in model.modules() if type(m).__name__ == "LRN")
    assert layers["lrn:activation=identity"].activation == "identity"
    assert layers["lrn:layer_norm=true"].layer_norm and not layers["lrn"].layer_norm
    assert layers["olrn"].output_gate and not layers["lrn:recurrent_gates=false"].recurrent_gates
    build_report([out], tmp_path / "report")
    table = (tmp_path / "report" / "report.md").read_text()
    assert all(f"| {cell} |" in table for cell in ABLATIONS)
