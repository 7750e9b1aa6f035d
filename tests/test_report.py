"""lrn report: tables beside the paper's numbers, deduplication, self-contained HTML, small figures."""

import importlib
import json
import re

import pytest
from PIL import Image

from lrn.analysis.paper_numbers import PAPER_ROWS
from lrn.analysis.report import MAX_FIGURE_WIDTH, build_report, collect
from lrn.bench import BenchConfig, run_bench


def _results(task, cell, metrics, *, data_dir, layer_norm=False, hidden=8):
    return {"task": task, "cell": cell, "params": 12345, "preset": "tiny",
            "config": {"layer_norm": layer_norm, "seed": 0, "hidden_size": hidden},
            "steps": 3, "time_per_batch_s": 0.0123, "device": "cpu", "data_dir": data_dir,
            "metrics": {"valid": metrics, "test": metrics}}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    ner = [_results("ner", cell, {"f1": 80.0 + i, "precision": 81.0, "recall": 79.0},
                    data_dir="/d/ner/conll2003") for i, cell in enumerate(["lrn", "lrn:activation=identity"])]
    for r in ner:  # a compare directory: per-cell results.json and compare.json listing them
        _write(root / "ner" / r["cell"].replace(":", "-") / "results.json", r)
    _write(root / "ner" / "compare.json", {"task": "ner", "metric": "f1", "runs": ner})
    _write(root / "ner" / "lrn" / "log.json",
           {"evals": [{"step": 1, "metrics": {"f1": 10.0}}, {"step": 3, "metrics": {"f1": 80.0}}]})
    # no data_dir in results.json: the dataset comes from the checkpoint's meta.json
    doc = _results("doc", "gru", {"accuracy": 90.0, "tokenizer": "v1"}, data_dir=None)  # a text field too
    _write(root / "doc-gru" / "results.json", doc)
    _write(root / "doc-gru" / "checkpoints" / "best-1" / "meta.json", {"data_dir": "/d/doc/ag_news"})
    return root


def test_runs_are_collected_once_with_their_dataset(runs):
    found = collect([runs])
    assert sorted((r.results["cell"], r.dataset) for r in found.runs) == [
        ("gru", "AG News"), ("lrn", "CoNLL-2003"), ("lrn:activation=identity", "CoNLL-2003")]


def test_tables_put_published_numbers_beside_matching_runs_only(runs, tmp_path):
    build_report([runs], tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    row = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| lrn")}
    assert "| 129K | 88.56 |" in row["lrn"]  # the paper's CoNLL-2003 LRN row
    assert "80.00" in row["lrn"] and "0.0123" in row["lrn"]
    assert "88.56" not in row["lrn:activation=identity"]  # an ablation has no published row
    # AG News is not one of the paper's datasets: reference table, not adjacent columns
    assert "not on AG News" in text and "| AmaPolar | Base | lrn | 151K |" in text
    assert "![validation curves](figures/curves-ner-conll-2003-tiny-cpu.png)" in text
    # A text-valued test field is no table column: it is shown once under its table.
    assert "tokenizer (test)" not in text and "tokenizer: `v1`" in text


def test_html_is_self_contained_and_figures_are_small(runs, tmp_path):
    bench = run_bench(BenchConfig(shapes=[(2, 4, 4)], cells=["gru", "lrn"], backends=["reference"],
                                  repeats=1, warmup=0, memory=False), progress=False)
    _write(runs / "bench.json", bench)
    counts = build_report([runs], tmp_path / "out")
    assert counts == {"runs": 3, "benches": 1, "analyses": 0}
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in html and "88.56" in html
    sources = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    for png in (tmp_path / "out" / "figures").glob("*.png"):
        with Image.open(png) as image:
            assert image.width <= MAX_FIGURE_WIDTH


def test_nothing_to_report_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results.json, compare.json"):
        build_report([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(ValueError, match="does not exist"):
        build_report([tmp_path / "missing"], tmp_path / "out")


@pytest.mark.parametrize("task", sorted({r.task for r in PAPER_ROWS}))
def test_published_metrics_use_the_tasks_metric_names(task):
    try:
        importlib.import_module(f"lrn.tasks.{task}")
    except ModuleNotFoundError:
        pytest.skip(f"lrn.tasks.{task} is not part of this installation")
    from lrn.tasks import get_task

    names = set(get_task(task).metrics)
    for row in PAPER_ROWS:
        if row.task == task:
            assert set(row.metrics) <= names, (row, names)
