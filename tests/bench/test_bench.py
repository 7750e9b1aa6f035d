"""Smoke tests of ``lrn bench``: report structure, derived figures, outputs.  No timing assertions:
speed is measured by the benchmark, never asserted in tests."""

import argparse
import json

import pytest
import torch

from lrn.bench.cli import add_cli, parse_shapes
from lrn.bench.measure import BenchConfig, recurrence_bytes, run_bench
from lrn.bench.report import format_markdown, plot_report
from lrn.bench.targets import evaluate_targets
from lrn.functional import resolve_backend

TINY = [(2, 4, 8), (2, 6, 8), (3, 4, 8)]  # (B, T, H): two values of T at B=2, two of B at T=4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report():
    config = BenchConfig(shapes=TINY, cells=["lstm", "gru", "lrn"], backends=["reference"],
                         repeats=1, warmup=1)
    return run_bench(config, progress=False)


def test_report_structure(report):
    assert report["config"]["impls"] == ["lstm", "gru", "lrn[reference]"]
    assert {"cpu_model", "torch_threads", "versions", "date_utc"} <= report["machine"].keys()
    assert [(r["B"], r["T"], r["H"]) for r in report["results"]] == TINY
    for result in report["results"]:
        assert result["errors"] == {}
        assert result["copy_gbps"] > 0
        impls = result["impls"]
        assert set(impls) == {"lstm", "gru", "lrn[reference]"}
        for entry in impls.values():
            for mode in ("forward", "train"):
                assert entry[f"{mode}_ms"] > 0 and len(entry[f"{mode}_samples_ms"]) == 1
                assert entry[f"{mode}_peak_mb"] >= 0
        assert impls["lstm"]["train_ratio"]["lstm"] == 1.0
        assert impls["gru"]["forward_ratio"]["gru"] == 1.0
        lrn = impls["lrn[reference]"]
        assert lrn["train_ratio"]["lstm"] == pytest.approx(lrn["train_ms"] / impls["lstm"]["train_ms"])
        assert lrn["matmul_share"]["train"] == pytest.approx(result["matmul"]["train_ms"] / lrn["train_ms"])
        assert lrn["layer_over_matmul"]["forward"] * lrn["matmul_share"]["forward"] == pytest.approx(1.0)
        moved = recurrence_bytes(result["B"], result["T"], result["H"], 4)
        assert lrn["recurrence"]["bytes"] == moved
        assert lrn["recurrence"]["train_gbps"] == pytest.approx(
            moved["train"] / lrn["recurrence"]["train_ms"] / 1e6)
    json.loads(json.dumps(report))  # the report is plain JSON


def test_recurrence_bytes_by_hand():
    # B=2, T=4, H=8, float32: forward reads 3H gates and writes H outputs per (t, b):
    # 8 * 32 * 4 bytes = 1024; backward moves 8H per (t, b): 8 * 64 * 4 = 2048 more.
    assert recurrence_bytes(2, 4, 8, 4) == {"forward": 1024, "train": 3072}


def test_plot_and_markdown(report, tmp_path):
    path = tmp_path / "bench.png"
    plot_report(report, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    table = format_markdown(report)
    assert table.count("| lrn[reference] |") == 2 * len(TINY)  # main table and parts table


def test_cli_writes_json_plot_and_markdown(tmp_path):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args([
        "bench", "--shapes", "2,4,8;3,4,8", "--cells", "gru,lrn", "--backends", "reference",
        "--repeats", "1", "--warmup", "0", "--no-memory", "--out", str(tmp_path / "r.json"),
        "--plot", str(tmp_path / "r.png"), "--markdown", str(tmp_path / "r.md")])
    assert args.func(args) == 0
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [(r["B"], r["T"], r["H"]) for r in saved["results"]] == [(2, 4, 8), (3, 4, 8)]
    assert "train_peak_mb" not in saved["results"][0]["impls"]["gru"]
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG_MAGIC
    assert "| gru |" in (tmp_path / "r.md").read_text()


def test_parse_shapes():
    assert parse_shapes("32,128,256; 16,1024,256;") == [(32, 128, 256), (16, 1024, 256)]
    for bad in ("32,128", "32,0,256", "a,b,c", ";"):
        with pytest.raises(ValueError, match="--shapes"):
            parse_shapes(bad)


@pytest.mark.parametrize("config, message", [
    (BenchConfig(cells=["lstm", "rnn"]), "--cells: unknown rnn"),
    (BenchConfig(dtype="int8"), "--dtype"),
    (BenchConfig(repeats=0), "--repeats"),
    (BenchConfig(cells=["lrn"], backends=["nope"]), "--backends: 'nope'"),
    # Triton on CPU tensors is its interpreter: a correctness tool, never timed.
    (BenchConfig(cells=["lrn"], backends=["triton"]), "--backends: 'triton' cannot run on cpu"),
    (BenchConfig(shapes=[(2, 0, 8)]), "shapes must be"),
])
def test_bad_config(config, message):
    with pytest.raises(ValueError, match=message):
        run_bench(config, progress=False)


def test_targets_hand_worked():
    lrn = f"lrn[{resolve_backend('auto', torch.device('cpu'), torch.float32)}]"

    def entry(train_ms, forward_ms, peak_mb, **extra):
        return {"train_ms": train_ms, "forward_ms": forward_ms, "train_peak_mb": peak_mb,
                "train_ratio": {"lstm": train_ms / 100, "gru": train_ms / 80},
                "forward_ratio": {"lstm": forward_ms / 20, "gru": forward_ms / 30}, **extra}

    result = {"B": 32, "T": 128, "H": 256, "impls": {
        "lstm": entry(100, 20, 50), "gru": entry(80, 30, 40),
        # 38/100 = 0.38 <= 0.40; 38/80 = 0.475 > 0.45; 12/20 = 0.6 > 0.55; 38/35 = 1.086 <= 1.15;
        # memory 30/40 = 0.75 <= 1.
        lrn: entry(38, 12, 30, layer_over_matmul={"train": 38 / 35, "forward": 12 / 10})}}
    report = {"config": {"device": "cpu", "dtype": "float32"}, "results": [result]}
    found = {t["what"]: (round(t["value"], 3), t["met"]) for t in evaluate_targets(report)}
    assert found == {
        "train time / nn.LSTM": (0.38, True),
        "train time / nn.GRU": (0.475, False),
        "forward time / nn.LSTM": (0.6, False),
        "train time / its matmul": (1.086, True),
        "train memory / nn.GRU": (0.75, True),
    }
    # Shape-specific targets apply only at their shapes; the memory target everywhere.
    result.update(B=4)
    assert [t["what"] for t in evaluate_targets(report)] == ["train memory / nn.GRU"]


def test_targets_across_runs_by_hand():
    from lrn.bench.report import format_targets_across_runs

    def run(time, *values):
        targets = [{"B": 32, "T": 128, "H": 256, "impl": "lrn[cpu]", "what": what, "op": "<=", "limit": limit,
                    "value": value, "met": value <= limit}
                   for (what, limit), value in zip((("train time / nn.LSTM", 0.40), ("train time / its matmul", 1.15)),
                                                   values)]
        return {"machine": {"date_utc": f"2026-12-05T{time}:00+00:00"}, "targets": targets}

    table = format_targets_across_runs([("a.json", run("09:01", 0.398, 1.16)), ("b.json", run("09:04", 0.405))])
    lines = table.splitlines()
    assert lines[0] == "| B | T | H | impl | target | limit | a.json (2026-12-05 09:01) | b.json (2026-12-05 09:04) | met |"
    # 0.398 <= 0.40 met, 0.405 not: 1 of 2; the matmul target is missing from run b: 0 of 1
    assert lines[2] == "| 32 | 128 | 256 | lrn[cpu] | train time / nn.LSTM | <= 0.40 | 0.398 | 0.405 NO | 1 of 2 |"
    assert lines[3] == "| 32 | 128 | 256 | lrn[cpu] | train time / its matmul | <= 1.15 | 1.160 NO | – | 0 of 1 |"


def test_ratio_ranges_by_hand():
    from lrn.bench.report import format_ratio_ranges
    from lrn.bench.rows import Impl, Row, Timing

    def impl(train_ms, forward_ms, peak_mb):
        def timing(ms, peak):
            return Timing(median_ms=ms, min_ms=ms, samples_ms=[ms], calls_per_sample=1,
                          ratio={"lstm": ms / base[0], "gru": ms / base[1]}, peak_mb=peak)
        return Impl(timing={"train": timing(train_ms, peak_mb), "forward": timing(forward_ms, None)})

    rows = []
    for lstm_ms, gru_ms, lrn_ms, lrn_mb in ((100, 200, 40, 30), (200, 250, 90, 60)):
        base = (lstm_ms, gru_ms)
        impls = {"lstm": impl(lstm_ms, lstm_ms, 50), "gru": impl(gru_ms, gru_ms, 60), "lrn[cpu]": impl(lrn_ms, lrn_ms, lrn_mb)}
        rows.append(Row(B=2, T=4, H=8, impls=impls))
    report = {"results": [row.to_json() for row in rows]}
    # train / LSTM 0.40 and 0.45; / GRU 0.20 and 0.36; memory / LSTM 0.60 and 1.20, / GRU 0.50 and 1.00;
    # the least memory at the first shape only (60 MB > 50 MB at the second)
    assert format_ratio_ranges(report) == (
        "Over the 2 shapes, lrn[cpu]'s training step takes 0.40-0.45x nn.LSTM's time and 0.20-0.36x nn.GRU's, "
        "its forward 0.40-0.45x nn.LSTM's; its training peak memory is 0.60-1.20x nn.LSTM's and 0.50-1.00x "
        "nn.GRU's, the least of all implementations at 1 of 2 shapes.\n")


def _benchmark_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cell_step_script_times_every_cell_shape_and_mode():
    cell_step = _benchmark_script("cell_step")
    report = cell_step.run([4, 8], [1, 3], rounds=2, seconds_per_sample=0.001, progress=False)
    assert [(r["H"], r["B"], r["mode"]) for r in report["results"]] == [
        (H, B, mode) for H in (4, 8) for B in (1, 3) for mode in ("forward", "train")]
    for r in report["results"]:
        assert set(r["median_us"]) == set(cell_step.CELLS) and all(v > 0 for v in r["median_us"].values())
        assert r["lrn_over_gru"] == pytest.approx(r["median_us"]["lrn"] / r["median_us"]["gru"])
    table = cell_step.markdown(report)
    assert table.count("\n| 8 | 3 | train | ") == 1
    assert "(1.00)" in table  # the GRUCell column is its own baseline


def test_real_programs_script_runs_each_program_with_both_cells():
    real_programs = _benchmark_script("real_programs")
    torch.manual_seed(0)
    for name, build in real_programs.PROGRAMS.items():
        for impl in real_programs.IMPLS:
            build(impl)()  # one step of each program runs, with either recurrent class


def test_rows_round_trip_through_json(report):
    from lrn.bench.rows import Row, rows_of

    assert [row.to_json() for row in rows_of(report)] == report["results"]
    assert all(isinstance(row, Row) and row.impls["lstm"].timing["train"].ratio["lstm"] == 1.0
               for row in rows_of(report))


def test_dropin_classifier_script_trains_every_variant(monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # its real_programs import
    dropin = _benchmark_script("dropin_classifier")
    articles = [(["goal", "match", "team"], 1), (["war", "talks", "minister"], 0)] * 4
    vocab = {w: i + 2 for i, w in enumerate(sorted({w for words, _ in articles for w in words}))}
    for variant in dropin.VARIANTS:
        run = dropin.train(variant, 0, articles, articles, vocab, epochs=2)
        assert len(run["test_accuracy"]) == 2 and all(0 <= a <= 100 for a in run["test_accuracy"])
        assert len(run["influence_by_fifth"]) == 5 and abs(sum(run["influence_by_fifth"]) - 1) < 1e-5
    biased = dropin.build("lrn forget bias 1", 10).rnn
    H = biased.hidden_size
    assert bool((biased.bias_ih_l1_reverse[:H] == 1).all()) and bool((biased.bias_ih_l1_reverse[H:] == 0).all())
    report = {"config": {"train_size": 8, "test_size": 8, "epochs": 2, "seeds": [0, 1]},
              "runs": [{"variant": v, "seed": s, "test_accuracy": [50.0 + s, 60.0 + s],
                        "influence_by_fifth": [0.5 - 0.1 * s, 0.1, 0.1, 0.1, 0.2 + 0.1 * s]}
                       for v in dropin.VARIANTS for s in (0, 1)]}
    table = dropin.markdown(report)
    assert "| gru | 50.5 ± 0.7 | 60.5 ± 0.7 |" in table and "| gru | 45.0 | 10.0 | 10.0 | 10.0 | 25.0 |" in table
    # --from rewrites the doc's generated block from a saved report, without training
    saved, doc = tmp_path / "saved.json", tmp_path / "doc.md"
    saved.write_text(json.dumps({**report, "machine": {"date_utc": "2026-01-01T00:00+00:00"}}))
    doc.write_text(f"intro\n{dropin.DOC_BEGIN}\nold\n{dropin.DOC_END}\nrest\n")
    monkeypatch.setattr("sys.argv", ["dropin_classifier.py", "--from", str(saved), "--doc", str(doc)])
    dropin.main()
    text = doc.read_text()
    assert "old" not in text and "| gru | 45.0 |" in text and text.endswith(f"{dropin.DOC_END}\nrest\n")


def test_dropin_position_influence_by_hand(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    dropin = _benchmark_script("dropin_classifier")

    class Readout(torch.nn.Module):  # logits from the first token only, or from the sum of all tokens
        def __init__(self, first_only: bool) -> None:
            super().__init__()
            self.first_only = first_only
            self.embedding = torch.nn.Embedding(20, 3)
            self.out = torch.nn.Linear(3, 2)

        def forward(self, tokens, lengths):
            embedded = self.embedding(tokens)  # (T, B, E), padding rows are the zero id's vector
            mask = (torch.arange(tokens.shape[0])[:, None] < lengths).unsqueeze(-1)
            return self.out(embedded[0] if self.first_only else (embedded * mask).sum(0))

    articles = [([f"w{i}" for i in range(10)], 0), ([f"w{i}" for i in range(5)], 1)]
    vocab = {f"w{i}": i + 2 for i in range(10)}
    first = dropin.position_influence(Readout(first_only=True), articles, vocab)
    assert first == pytest.approx([1.0, 0.0, 0.0, 0.0, 0.0])
    every = dropin.position_influence(Readout(first_only=False), articles, vocab)
    assert every == pytest.approx([0.2] * 5)  # every token moves the sum's margin equally
