"""The ``lrn`` command: subcommands, one-line errors with exit status 2, optional plugins."""

from __future__ import annotations

import json
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
    assert cli.main(["compare", "adding", "--cells", "lrn,gru", "--max-steps", "3", "--out", str(out), *TINY]) == 0
    table = (out / "compare.md").read_text()
    assert table.startswith("| Model | #Params | test mse |")
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["lrn", "gru"]
    summary = json.loads((out / "compare.json").read_text())
    assert [r["cell"] for r in summary["runs"]] == ["lrn", "gru"]
    assert summary["runs"][0]["config"] == {**summary["runs"][1]["config"]}  # identical settings
    assert (out / "lrn" / "results.json").is_file() and (out / "gru" / "results.json").is_file()


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


def test_missing_plugin_is_absent_and_broken_plugin_is_reported(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_lrn_plugin.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGINS", (("lrn.not_installed_module", "top"), ("broken_lrn_plugin", "top")))
    parser = cli.build_parser()
    err = capsys.readouterr().err
    assert "not_installed_module" not in err
    assert "broken_lrn_plugin could not be imported (RuntimeError: boom)" in err
    assert parser.parse_args(["info"]).command == "info"
    sys.modules.pop("broken_lrn_plugin", None)


def test_generate_refuses_a_run_of_another_task(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "adding", "--cell", "lrn", "--max-steps", "2", "--out", str(run), *TINY]) == 0
    err = _error(capsys, ["generate", str(run), "--words", "5"])
    assert "generate needs a language model" in err


def test_compare_reuses_finished_runs_with_the_same_settings(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "adding", "--max-steps", "2", "--out", str(out), *TINY]
    assert cli.main([*argv, "--cells", "lrn"]) == 0
    first = json.loads((out / "lrn" / "results.json").read_text())
    capsys.readouterr()
    assert cli.main([*argv, "--cells", "lrn,atr"]) == 0  # lrn reused, atr trained
    assert "adding lrn: reusing the finished run" in capsys.readouterr().out
    summary = json.loads((out / "compare.json").read_text())
    assert summary["runs"][0] == first and summary["runs"][1]["cell"] == "atr"
    err = _error(capsys, ["compare", "adding", "--max-steps", "3", "--out", str(out), *TINY, "--cells", "lrn"])
    assert "holds a finished run with other settings" in err


def test_compare_table_shows_the_tasks_further_columns():
    from lrn.train.compare import markdown_table

    run = {"cell": "lrn", "params": 1500, "steps": 7, "time_per_batch_s": 0.25,
           "metrics": {"valid": {"bleu": 30.0}, "test": {"bleu": 31.25, "decode_ms_per_sent": 4.5}}}
    table = markdown_table({"metric": "bleu", "columns": ["decode_ms_per_sent"], "runs": [run]})
    assert table.splitlines() == [
        "| Model | #Params | test bleu | valid bleu | test decode_ms_per_sent | Time s/batch | steps |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| lrn | 1.5K | 31.25 | 30 | 4.5 | 0.2500 | 7 |"]
