"""lrn report: tables beside the paper's numbers, deduplication, self-contained HTML, small figures."""

import importlib
import json
import re

import pytest
from PIL import Image

from lrn.analysis.paper_numbers import PAPER_ROWS
from lrn.analysis.report import MAX_FIGURE_WIDTH, build_report, collect
from lrn.bench.measure import BenchConfig, run_bench


def _results(task, cell, metrics, *, data_dir, layer_norm=False, hidden=8, preset="paper"):
    return {"task": task, "cell": cell, "params": 12345, "preset": preset,
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
    for r in ner:  # a compare directory: per-seed, per-cell results.json and compare.json listing them
        _write(root / "ner" / "seed0" / r["cell"].replace(":", "-") / "results.json", r)
    _write(root / "ner" / "compare.json", {"task": "ner", "metric": "f1", "runs": ner})
    _write(root / "ner" / "seed0" / "lrn" / "log.json",
           {"train_loss": [3.0, 2.0, 1.0],
            "evals": [{"step": 1, "metrics": {"f1": 10.0}}, {"step": 3, "metrics": {"f1": 80.0}}]})
    # no data_dir in results.json: the dataset comes from the checkpoint's meta.json
    doc = _results("doc", "gru", {"accuracy": 90.0, "tokenizer": "v1"}, data_dir=None)  # a text field too
    _write(root / "doc-gru" / "results.json", doc)
    _write(root / "doc-gru" / "checkpoints" / "best-1" / "meta.json", {"data_dir": "/d/doc/ag_news"})
    return root


def test_runs_are_collected_once_with_their_dataset(runs):
    found = collect([runs])
    assert sorted((r.results["cell"], r.dataset) for r in found.runs) == [
        ("gru", "AG News"), ("lrn", "CoNLL-2003"), ("lrn:activation=identity", "CoNLL-2003")]


def test_tables_show_the_tasks_declared_metrics_only(tmp_path):
    scores = {"f1": 80.0, "precision": 81.0, "recall": 79.0, "f1_PER": 85.0, "recall_LOC": 88.0}
    _write(tmp_path / "runs" / "ner" / "results.json", _results("ner", "lrn", scores, data_dir="/d/ner/conll2003"))
    build_report([tmp_path / "runs"], tmp_path / "out")
    header = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
                  if line.startswith("| Model | #Params"))
    assert "f1 (test) | precision (test) | recall (test)" in header and "_PER" not in header and "_LOC" not in header


def test_tables_put_published_numbers_beside_matching_runs_only(runs, tmp_path):
    build_report([runs], tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    row = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| lrn")}
    assert "| 129K | 88.56 |" in row["lrn"]  # the paper's CoNLL-2003 LRN row
    assert "80.00" in row["lrn"] and "0.0123" in row["lrn"]
    assert "88.56" not in row["lrn:activation=identity"]  # an ablation has no published row
    # AG News is not one of the paper's datasets: reference table, not adjacent columns
    assert "not on AG News" in text and "| AmaPolar | Base | lrn | 151K |" in text
    assert "![training and validation curves at equal steps](figures/curves-ner-conll-2003-paper-cpu.png)" in text
    # A text-valued test field is no table column: it is shown once under its table.
    assert "tokenizer (test)" not in text and "tokenizer: `v1`" in text


def test_other_presets_get_no_paper_columns(tmp_path):
    root = tmp_path / "runs"
    _write(root / "seed0" / "lrn" / "results.json",
           _results("ner", "lrn", {"f1": 80.0}, data_dir="/d/ner/conll2003", preset="small"))
    build_report([root], tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| lrn"))
    assert "88.56" not in row and "are not set beside this preset's" in text
    assert "## Published numbers" in text and "| CoNLL-2003 | Base | lrn | 129K | 88.56 |" in text


def test_rows_follow_the_papers_cell_order_with_each_variant_after_its_cell(tmp_path):
    root = tmp_path / "runs"
    for cell, layer_norm in [("lrn", False), ("sru:layer_norm=true", False), ("lstm", False), ("sru", False),
                             ("gru", True)]:
        _write(root / "seed0" / (cell.replace(":", "-") + ("-ln" if layer_norm else "")) / "results.json",
               _results("ner", cell, {"f1": 80.0}, data_dir="/d/ner/conll2003", preset="small",
                        layer_norm=layer_norm))
    build_report([root], tmp_path / "out")
    lines = (tmp_path / "out" / "report.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Model | #Params")) + 2
    table = lines[start:lines.index("", start)]  # the comparison table, up to its blank line
    models = [line.split("|")[1].strip() for line in table]
    assert models == ["lstm", "gru +LN", "sru", "sru:layer_norm=true", "lrn"]


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


def test_seeds_are_one_row_with_mean_and_std_and_anchor_numbers_are_cited(tmp_path):
    root = tmp_path / "runs"
    for seed, ppl, wall_s in ((0, 110.0, 1070.0), (1, 120.0, 1400.0)):
        r = _results("lm", "lstm", {"ppl": ppl, "loss": 4.7}, data_dir="/d/lm/ptb")
        r["preset"], r["config"]["seed"], r["wall_s"] = "anchor", seed, wall_s
        _write(root / f"seed{seed}" / "lstm" / "results.json", r)
    build_report([root], tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| lstm"))
    assert "| 115.00 ± 7.07 |" in row and "| 2 |" in row  # (110 + 120) / 2, sample std, 2 seeds
    assert "| 18–23 |" in row  # minutes per run: 1070 s and 1400 s, shortest to longest
    assert "Anchor: the published baseline" in text and "test ppl 114.5" in text


def _seeds(root, cell, ppls, data_dir="/d/lm/ptb"):
    for seed, ppl in enumerate(ppls):
        r = _results("lm", cell, {"ppl": ppl, "loss": 4.7}, data_dir=data_dir)
        r["config"]["seed"] = seed
        _write(root / f"seed{seed}" / cell / "results.json", r)


def test_readme_block_says_tie_or_difference_from_the_seeds(tmp_path):
    from lrn.analysis.report import README_BEGIN, README_END

    root = tmp_path / "runs"
    _seeds(root / "tie", "lstm", [100.0, 102.0, 104.0])  # 102 ± 2
    _seeds(root / "tie", "lrn", [101.0, 104.0, 107.0])  # 104 ± 3: within 2 + 3
    _seeds(root / "apart", "lstm", [100.0, 101.0, 102.0], data_dir="/d/lm/wikitext-2")  # 101 ± 1
    _seeds(root / "apart", "lrn", [90.0, 91.0, 92.0], data_dir="/d/lm/wikitext-2")  # 91 ± 1: lower ppl
    _seeds(root / "apart", "gru", [95.0, 97.0], data_dir="/d/lm/wikitext-2")  # a grid not yet complete
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{README_BEGIN}\nold line\n{README_END}\nafter\n")
    build_report([root], tmp_path / "out", readme=readme)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{README_END}\nafter\n") and "old line" not in text
    ptb = next(line for line in text.splitlines() if "PTB" in line)
    assert "lstm 102.00 ± 2.00, lrn 104.00 ± 3.00" in ptb and "a tie" in ptb
    wt2 = next(line for line in text.splitlines() if "WT2" in line)
    assert "LRN better" in wt2 and "gru 96.00 ± 1.41 (2 seeds)" in wt2 and "lrn 91.00 ± 1.00." in wt2
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="needs exactly one"):
        build_report([root], tmp_path / "out", readme=readme)


def test_a_comparison_brings_its_speed_time_to_quality_and_headline(tmp_path):
    from lrn.analysis.report import README_BEGIN, README_END
    from lrn.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", "adding", "--preset", "tiny", "--cells", "lstm,lrn", "--seeds", "0,1,2", "--max-steps",
                 "4", "--speed-steps", "4", "--out", str(out), "--no-progress", "--set", "batches_per_epoch=5",
                 "--set", "valid_size=32", "--set", "test_size=32", "--set", "eval_every=2"]) == 0
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    build_report([out], tmp_path / "report", readme=readme)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Speed, measured apart by `lrn compare` (`cmp`)" in text and "| lrn |" in text
    assert "Time to quality" in text and "![time to quality](figures/ttq-" in text
    assert list((tmp_path / "report" / "figures").glob("ttq-*.png"))
    line = readme.read_text().splitlines()[1]
    assert "lstm" in line and "lrn" in line and "Training step, measured apart: LRN" in line


def test_the_demo_block_shows_its_table_and_picture(tmp_path):
    from lrn.analysis.report import README_BEGIN, README_DEMO_BEGIN, README_DEMO_END, README_END

    curve = {"step": [100, 200], "valid_mse": [0.1, 0.01]}
    demo = {"kind": "lrn.demo", "task": "adding", "threads": 1, "seq_len": 50, "hidden_size": 128, "batch_size": 32, "steps": 200,
            "mean_baseline_mse": 1 / 6, "solved_mse": 1 / 60,
            "step_seconds": {"lrn": 0.005, "lstm": 0.01, "gru": 0.02},
            "machine": {"cpu_model": "test cpu", "load_average": [0.5, 0.5, 0.5]},
            "curves": {"lrn": curve, "lstm": curve, "gru": curve},
            "runs": [{"cell": c, "params": 1000, "steps": 200, "metrics": {"test": {"mse": 0.01}}}
                     for c in ("lrn", "lstm", "gru")]}
    _write(tmp_path / "runs" / "demo" / "results.json", demo)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_DEMO_BEGIN}\nold\n{README_DEMO_END}\n{README_BEGIN}\n{README_END}\n")
    build_report([tmp_path / "runs"], tmp_path / "docs", readme=readme)
    text = readme.read_text()
    assert "| lrn | 0.0100 | yes | 5.0 | 0.50 | 200 | 1.0 s | 1.0K |" in text and "old" not in text
    assert "](docs/figures/demo-0.png)" in text and (tmp_path / "docs" / "figures" / "demo-0.png").is_file()


def test_a_demos_own_runs_stay_out_of_the_comparison_tables(tmp_path):
    demo = {"kind": "lrn.demo", "task": "adding", "runs": []}
    _write(tmp_path / "runs" / "demo" / "results.json", demo)
    mse = {"mse": 0.01}
    _write(tmp_path / "runs" / "demo" / "seed0" / "lrn" / "results.json",
           _results("adding", "lrn", mse, data_dir=None, preset="small"))
    _write(tmp_path / "runs" / "demo" / "compare.json",
           {"task": "adding", "runs": [_results("adding", "lrn", mse, data_dir=None, preset="small")],
            "speed": {"per_cell": {}}})
    compared = _results("adding", "gru", mse, data_dir=None, preset="small")
    _write(tmp_path / "runs" / "adding-small" / "seed0" / "gru" / "results.json", compared)
    found = collect([tmp_path / "runs"])
    assert [r.results["cell"] for r in found.runs] == ["gru"]
    assert found.compares == [] and len(found.demos) == 1


def test_the_speed_block_states_the_range_of_the_real_programs_report(tmp_path):
    from lrn.analysis.report import README_BEGIN, README_END, README_SPEED_BEGIN, README_SPEED_END
    from lrn.bench.report import REAL_PROGRAMS_KIND

    def row(program, threads, idle, busy):
        return {"program": program, "threads": threads, "idle_s": {"gru": 1.0, "lrn": idle},
                "busy_s": {"gru": 2.0, "lrn": 2 * busy}, "lrn_over_gru_idle": idle, "lrn_over_gru_busy": busy}

    report = {"kind": REAL_PROGRAMS_KIND, "hogs": 2, "rounds": 7,
              "machine": {"cpu_model": "test cpu", "usable_cpus": 2, "load_average": [0.1, 0.1, 0.1]},
              "rows": [row("a", 1, 0.5, 0.9), row("b", 1, 1.04, 1.2), row("a", 2, 0.7, 0.3)]}
    _write(tmp_path / "runs" / "real_programs.json", report)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_SPEED_BEGIN}\nold\n{README_SPEED_END}\n{README_BEGIN}\n{README_END}\n")
    build_report([tmp_path / "runs"], tmp_path / "docs", readme=readme)
    line = readme.read_text().splitlines()[2]
    assert "In 2 realistic workloads" in line and "1/2 torch threads, test cpu" in line
    assert "0.50-1.04x nn.GRU's on the idle machine and 0.30-1.20x beside 2 CPU-bound processes" in line
    assert "| b | 1 | 1000.00 | 1040.00 | 1.04 |" in (tmp_path / "docs" / "report.md").read_text()


def test_a_docs_generated_tables_are_refilled_from_the_json_they_name(runs, tmp_path, monkeypatch):
    from lrn.bench.report import format_markdown

    bench = run_bench(BenchConfig(shapes=[(2, 4, 4)], cells=["gru", "lrn"], backends=["reference"],
                                  repeats=1, warmup=0, memory=False), progress=False)
    _write(tmp_path / "bench.json", bench)
    monkeypatch.chdir(tmp_path)  # the marker's path is read from where lrn report runs
    begin = "<!-- table of bench.json: generated by `lrn report --doc`; do not edit by hand -->"
    end = "<!-- end of generated table -->"
    doc = tmp_path / "perf.md"
    doc.write_text(f"# perf\n\n{begin}\n| old | table |\n{end}\n\nprose\n\n{begin}\n{end}\n")
    build_report([runs], tmp_path / "out", docs=[doc])
    table = format_markdown(bench).rstrip()
    assert table.splitlines()[0] in doc.read_text()
    measured = next(line for line in doc.read_text().splitlines() if line.startswith("Measured "))
    assert "median of 1 interleaved rounds after 0 warm-up rounds" in measured
    table = f"{measured}\n\n{table}"
    assert doc.read_text() == f"# perf\n\n{begin}\n{table}\n{end}\n\nprose\n\n{begin}\n{table}\n{end}\n"

    several = begin.replace("bench.json", "bench.json bench.json")  # several runs: their targets side by side
    doc.write_text(f"{several}\n{end}\n")
    build_report([runs], tmp_path / "out", docs=[doc])
    assert "| bench.json (" in doc.read_text() and "| met |" in doc.read_text()

    ratios = begin.replace("table of", "ratios of")  # LRN's range over the shapes, one line
    doc.write_text(f"{ratios}\n<!-- end of generated ratios -->\n")
    with pytest.raises(ValueError, match=r"perf.md:1: bench.json: no fused LRN backend"):  # reference only
        build_report([runs], tmp_path / "out", docs=[doc])
    fused = run_bench(BenchConfig(shapes=[(2, 4, 4)], cells=["lstm", "gru", "lrn"], backends=["cpu"],
                                  repeats=1, warmup=0, memory=False), progress=False)
    _write(tmp_path / "bench.json", fused)
    build_report([runs], tmp_path / "out", docs=[doc])
    assert doc.read_text().splitlines()[1].startswith("Over the 1 shapes, lrn[cpu]'s training step takes ")
    doc.write_text(f"{ratios.replace('bench.json', 'bench.json bench.json')}\n<!-- end of generated ratios -->\n")
    with pytest.raises(ValueError, match=r"perf.md:1: ratios are drawn from one `lrn bench` report"):
        build_report([runs], tmp_path / "out", docs=[doc])

    doc.write_text(f"# perf\n\n{begin.replace('bench.json', 'gone.json')}\n{end}\n")
    with pytest.raises(ValueError, match=r"perf.md:3: the generated table's source gone.json does not exist"):
        build_report([runs], tmp_path / "out", docs=[doc])
    with pytest.raises(ValueError, match=r"--doc .*missing.md: no such file"):
        build_report([runs], tmp_path / "out", docs=[tmp_path / "missing.md"])
    doc.write_text("# perf, no markers\n")
    with pytest.raises(ValueError, match="has no '<!-- table of SOURCE"):
        build_report([runs], tmp_path / "out", docs=[doc])
