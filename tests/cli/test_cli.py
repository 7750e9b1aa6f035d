"""The ``lrn`` command: subcommands, one-line errors with exit status 2, optional plugins."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from lrn import cli

TINY = ["--preset", "tiny", "--no-progress", "--set", "batches_per_epoch=5", "--set", "valid_size=32",
        "--set", "test_size=32", "--set", "eval_every=2"]


def test_info_lists_versions_and_backends(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("python", "torch", "numpy", "numba", "triton", "backends"):
        assert name in out
    assert "reference" in out.split("backends")[1].splitlines()[0]


def test_train_eval_and_compare(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "adding", "--cell", "lrn", "--max-steps", "4", "--out", str(run), *TINY]) == 0
    results = json.loads((run / "results.json").read_text())
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--split", "valid"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["valid"]["mse"] == pytest.approx(results["metrics"]["valid"]["mse"], rel=1e-6)

    out = tmp_path / "cmp"
    argv = ["compare", "adding", "--cells", "lrn,gru", "--seeds", "0,1", "--max-steps", "3", "--speed-steps", "4",
            "--out", str(out), *TINY]
    assert cli.main(argv) == 0
    table = (out / "compare.md").read_text()
    assert "| Model | #Params | test mse | valid mse | steps | seeds |" in table
    summary = json.loads((out / "compare.json").read_text())
    assert [(r["cell"], r["config"]["seed"]) for r in summary["runs"]] == [("lrn", 0), ("gru", 0), ("lrn", 1), ("gru", 1)]
    for seed in (0, 1):
        assert (out / f"seed{seed}" / "lrn" / "results.json").is_file()
    # quality: mean ± std over the two seeds, every run at the same steps
    lrn_row = summary["cells"][0]
    values = [r["metrics"]["test"]["mse"] for r in summary["runs"] if r["cell"] == "lrn"]
    assert lrn_row["test"]["mse"]["values"] == values and lrn_row["steps"] == [3]
    assert lrn_row["test"]["mse"]["mean"] == pytest.approx(sum(values) / 2)
    assert lrn_row["test"]["mse"]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    # speed apart: interleaved rounds, a median per cell
    speed = summary["speed"]["per_cell"]
    assert set(speed) == {"lrn", "gru"} and all(s["n"] >= 4 and s["median_s"] > 0 for s in speed.values())
    assert (out / "speed.json").is_file() and (out / "curves.png").is_file() and (out / "time_to_quality.png").is_file()
    ttq = summary["time_to_quality"]
    assert ttq["reference"] == "lrn" and [r["cell"] for r in ttq["cells"]] == ["lrn", "gru"]
    ref = ttq["cells"][0]
    assert ref["reached"] >= 1 and ref["seconds"] == pytest.approx(ref["steps"] * speed["lrn"]["median_s"])


def _error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrn: error: ") and err.count("\n") == 1, err
    return err


def test_bad_data_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "ptb.train.txt").write_text("a b c\n")
    (data / "ptb.valid.txt").write_text("a b\n")
    run = tmp_path / "run"
    err = _error(capsys, ["train", "lm", "--data", str(data), "--cell", "lrn", "--out", str(run), *TINY[:3]])
    assert "ptb.test.txt: missing test split" in err
    (data / "ptb.test.txt").write_bytes(b"a\n\xfe\n")
    err = _error(capsys, ["train", "lm", "--data", str(data), "--cell", "lrn", "--out", str(run), *TINY[:3]])
    assert "ptb.test.txt:2: not valid UTF-8" in err
    assert not run.exists()


@pytest.mark.parametrize("argv,message", [
    (["train", "adding", "--cell", "lrn", "--set", "hiden_size=3"], "unknown setting 'hiden_size'"),
    (["train", "adding", "--cell", "lstm", "--layer-norm"], "layer_norm is not available"),
    (["train", "adding", "--cell", "lrn:activation=cube"], "activation"),
    (["train", "adding", "--cell", "lrn", "--preset", "paper"], "no adding experiment"),
    (["train", "lm", "--cell", "lrn"], "needs --data"),
    (["train", "adding"], "--cell is required"),
    (["eval", "/nonexistent/run"], "no such run directory"),
])
def test_argument_errors(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    err = _error(capsys, [*argv, "--out", str(run)] if argv[0] == "train" else argv)
    assert message in err
    assert not (run / "results.json").exists() and not (run / "checkpoints").exists()


def test_the_parser_imports_nothing_heavy():
    # `lrn --help` must answer at once: building the parser imports neither torch nor any task.
    code = ("import sys, lrn.cli; lrn.cli.build_parser(); "
            "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'numba', 'tqdm', 'matplotlib') "
            "or m.startswith(('lrn.tasks', 'lrn.train', 'lrn.modules', 'lrn.ops'))])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_every_subcommand_is_registered():
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"train", "compare", "eval", "generate", "demo", "presets", "info", "translate",
                                "predict", "bench", "analyze", "report"}
    predict = next(a for a in sub.choices["predict"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(predict.choices) == {"ner", "nli", "doc", "rc"}


def test_generate_refuses_a_run_of_another_task(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "adding", "--cell", "lrn", "--max-steps", "2", "--out", str(run), *TINY]) == 0
    err = _error(capsys, ["generate", str(run), "--words", "5"])
    assert "holds a run of task 'adding'; this command needs task 'lm'" in err


def test_compare_reuses_finished_runs_with_the_same_settings(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "adding", "--max-steps", "2", "--speed-steps", "0", "--out", str(out), *TINY]
    assert cli.main([*argv, "--cells", "lrn"]) == 0
    first = json.loads((out / "seed0" / "lrn" / "results.json").read_text())
    capsys.readouterr()
    assert cli.main([*argv, "--cells", "lrn,atr"]) == 0  # lrn reused, atr trained
    assert "adding lrn seed 0: reusing the finished run" in capsys.readouterr().out
    summary = json.loads((out / "compare.json").read_text())
    assert summary["runs"][0] == first and summary["runs"][1]["cell"] == "atr" and summary["speed"] is None
    err = _error(capsys, ["compare", "adding", "--max-steps", "3", "--speed-steps", "0", "--out", str(out), *TINY,
                          "--cells", "lrn"])
    assert "holds a finished run with other settings" in err
    # an interrupted run (a checkpoint, no results.json) resumes only with its own settings
    (out / "seed0" / "atr" / "results.json").unlink()
    err = _error(capsys, ["compare", "adding", "--max-steps", "3", "--speed-steps", "0", "--out", str(out), *TINY,
                          "--cells", "atr"])
    assert "holds an interrupted run with other settings (max_steps: 2 -> 3)" in err
    assert cli.main([*argv, "--cells", "lrn,atr"]) == 0  # same settings: resumed, finished
    assert json.loads((out / "seed0" / "atr" / "results.json").read_text())["steps"] == 2
    err = _error(capsys, [*argv, "--cells", "lrn", "--seeds", "0,x"])
    assert "--seeds expects comma-separated integers" in err
    err = _error(capsys, [*argv, "--cells", "lrn", "--seeds", "1,1"])
    assert "--seeds: give distinct non-negative seeds" in err


def test_compare_tables_show_mean_std_speed_and_time_to_quality():
    from lrn.compare import markdown_tables, summarise

    def run(cell, seed, bleu, valid):
        return {"cell": cell, "params": 1500, "steps": 7, "time_per_batch_s": 0.25, "config": {"seed": seed},
                "metrics": {"valid": {"bleu": valid}, "test": {"bleu": bleu, "ppl": 9.0, "bleu_tok_uncased": 1.0,
                                                                "decode_ms_per_sent": 4.5}}}

    runs = [run("lstm", 0, 30.0, 29.0), run("lstm", 1, 32.0, 31.0), run("lrn", 0, 31.0, 30.0), run("lrn", 1, 31.0, 30.0)]
    # validation curves: lstm ends at 29 and 31 (target 30); lrn reaches 30 at step 4 and 6
    logs = {(0, "lstm"): [(2, 20.0), (7, 29.0)], (1, "lstm"): [(2, 25.0), (7, 31.0)],
            (0, "lrn"): [(4, 30.0), (7, 30.0)], (1, "lrn"): [(2, 10.0), (6, 30.5)]}
    logs = {k: {"evals": [{"step": s, "metrics": {"bleu": v}} for s, v in curve], "train_loss": [1.0] * 7}
            for k, curve in logs.items()}
    speed = {"rounds": 5, "per_cell": {"lstm": {"median_s": 2.0, "q1_s": 1.9, "q3_s": 2.1, "n": 10},
                                       "lrn": {"median_s": 1.0, "q1_s": 0.9, "q3_s": 1.2, "n": 10}},
             "machine": {"cpu_model": "test cpu", "torch_threads": 1, "load_average": [0.1, 0.1, 0.1]},
             "load_average_after": [0.2, 0.1, 0.1], "numba_threads": 1}
    summary = summarise("mt", runs, logs, speed)
    lines = markdown_tables(summary).splitlines()
    assert ("| Model | #Params | test bleu | valid bleu | test bleu_tok_uncased | test decode_ms_per_sent | steps "
            "| seeds |") in lines
    assert "| lstm | 1.5K | 31.00 ± 1.41 | 30.00 ± 1.41 | 1.00 ± 0.00 | 4.50 ± 0.00 | 7 | 0,1 |" in lines
    assert "| lrn | 1.0000 | 0.9000–1.2000 | 0.50 |" in lines
    # lstm: seed 0 never reaches 30 (ends at 29), seed 1 at step 7: 7 x 2 s; lrn: (4 + 6) / 2 x 1 s
    assert "| lstm | 1/2 | 7 | 14 | 1.00 |" in lines
    assert "| lrn | 2/2 | 5 | 5 | 0.36 |" in lines


def test_interrupted_compare_says_to_rerun_it(tmp_path, monkeypatch, capsys):
    import signal

    import lrn.compare
    from lrn.train import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT, "SIGINT at step 1: ... --resume")

    monkeypatch.setattr(lrn.compare, "train", interrupted)
    assert cli.main(["compare", "adding", "--cells", "lrn", "--out", str(tmp_path / "c"), *TINY]) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "SIGINT during lrn seed 0" in err and "run the same lrn compare command again" in err
    assert "--resume" not in err


def test_file_system_errors_are_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    err = _error(capsys, ["train", "adding", "--cell", "lrn", "--max-steps", "1", "--out",
                          str(tmp_path / "file" / "run"), *TINY])
    assert "Not a directory" in err or "File exists" in err
    monkeypatch.setenv("LRN_DEBUG", "1")  # the traceback on request
    with pytest.raises(OSError):
        cli.main(["train", "adding", "--cell", "lrn", "--max-steps", "1", "--out", str(tmp_path / "file" / "run"),
                  *TINY])


def test_presets_lists_every_setting_set_accepts(capsys):
    assert cli.main(["presets", "adding", "--preset", "tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# adding, preset tiny")
    settings = dict(line.split(" = ", 1) for line in lines if not line.startswith("#"))
    assert lines[-1].startswith("# also accepted, unset in this preset:") and "momentum" in lines[-1]
    assert settings["lr"] == "0.01" and "batch_size" in settings and settings["seed"] == "0"
    err = _error(capsys, ["presets", "doc", "--preset", "anchor"])
    assert "no 'anchor' preset" in err
