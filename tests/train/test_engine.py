"""The training engine: exact resumption, atomic checkpoints, signals, non-finite losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lrn.tasks.adding import AddingTask
from lrn.train import Interrupted, TrainingError, train
from lrn.train import checkpoint as ckpt
from lrn.train.checkpoint import load_checkpoint

# 5 batches per epoch, so that runs cross epoch boundaries; tiny held-out sets.
FAST = dict(batches_per_epoch=5, valid_size=64, test_size=64, eval_every=3, batch_size=16)


def run(out: Path, steps: int, resume: bool = False, task="adding", **overrides):
    return train(task, None, "lrn", preset="tiny", overrides={**FAST, **overrides}, out_dir=out,
                 max_steps=steps, resume=resume, progress=False)


def log(out: Path) -> dict:
    return json.loads((out / "log.json").read_text())


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    whole = run(tmp_path / "whole", 11)
    run(tmp_path / "split", 7)  # stops inside the second epoch
    resumed = run(tmp_path / "split", 11, resume=True)
    assert log(tmp_path / "split")["train_loss"] == log(tmp_path / "whole")["train_loss"]
    assert len(log(tmp_path / "whole")["train_loss"]) == 11
    assert resumed["metrics"] == whole["metrics"]
    a = load_checkpoint(tmp_path / "whole", "last").model_state()
    b = load_checkpoint(tmp_path / "split", "last").model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_results_json_has_every_field(tmp_path):
    results = run(tmp_path / "r", 6)
    on_disk = json.loads((tmp_path / "r" / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    for key in ("task", "cell", "params", "preset", "config", "steps", "wall_s", "time_per_batch_s",
                "tokens_per_s", "metrics"):
        assert key in on_disk, key
    assert on_disk["steps"] == 6 and on_disk["params"] == 3 * 32 * (2 + 1) + 33
    assert set(on_disk["metrics"]) == {"valid", "test"} and "mse" in on_disk["metrics"]["test"]
    assert on_disk["config"]["lr"] == 1e-2 and on_disk["config"]["seed"] == 0


def test_a_run_directory_is_not_overwritten(tmp_path):
    run(tmp_path / "r", 2)
    with pytest.raises(ValueError, match="already holds a run"):
        run(tmp_path / "r", 2)


def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    out = tmp_path / "r"
    run(out, 3)  # checkpoint at step 3
    before = load_checkpoint(out, "last")
    weights = before.model_state()

    def crash(*args, **kwargs):  # a kill after model.safetensors was written, before trainer.pt
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        run(out, 6, resume=True)
    after = load_checkpoint(out, "last")
    assert after.directory == before.directory and after.meta["step"] == 3
    assert all(torch.equal(weights[k], v) for k, v in after.model_state().items())
    monkeypatch.undo()
    assert run(out, 6, resume=True)["steps"] == 6  # the debris of the failed write is harmless


class NaNAt(AddingTask):
    """The adding task whose loss turns NaN at one step."""

    calls = 0

    def loss(self, model, batch, device):
        loss, n = super().loss(model, batch, device)
        NaNAt.calls += 1
        return (loss * float("nan") if NaNAt.calls == 5 else loss), n


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    NaNAt.calls = 0
    out = tmp_path / "r"
    with pytest.raises(TrainingError, match=r"loss is nan at step 5.*last good checkpoint \(step 3\)"):
        train(NaNAt(), None, "lrn", preset="tiny", overrides=FAST, out_dir=out, max_steps=10, progress=False)
    last = load_checkpoint(out, "last")
    assert last.meta["step"] == 3
    assert all(torch.isfinite(t).all() for t in last.model_state().values())
    assert not (out / "results.json").exists()


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "lrn", "train", "adding", "--preset", "tiny", "--cell", "lrn",
           "--out", str(out), "--no-progress", "--max-steps", "100000",
           *[f"--set={k}={v}" for k, v in FAST.items()]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    step = load_checkpoint(out, "last").meta["step"]
    assert step >= 3 and not (out / "results.json").exists()
    results = run(out, step + 2, resume=True)
    assert results["steps"] == step + 2


def test_sigint_during_a_step_saves_and_raises(tmp_path):
    class StopAt(AddingTask):
        def loss(self, model, batch, device):
            if self.steps_seen == 4:
                os.kill(os.getpid(), signal.SIGINT)
            self.steps_seen += 1
            return super().loss(model, batch, device)

    task = StopAt()
    task.steps_seen = 0
    with pytest.raises(Interrupted, match="SIGINT at step 5"):
        train(task, None, "lrn", preset="tiny", overrides=FAST, out_dir=tmp_path / "r", max_steps=50,
              progress=False)
    assert load_checkpoint(tmp_path / "r", "last").meta["step"] == 5


def test_damaged_checkpoints_are_refused_naming_the_file(tmp_path):
    run(tmp_path / "r", 2)
    checkpoint = load_checkpoint(tmp_path / "r", "last")
    weights = checkpoint.directory / "model.safetensors"
    good = weights.read_bytes()
    # one flipped byte in a weight: the sha256 in meta.json no longer matches
    weights.write_bytes(good[:-3] + bytes([good[-3] ^ 0xFF]) + good[-2:])
    with pytest.raises(ValueError, match=r"model.safetensors: the weights do not match the sha256"):
        run(tmp_path / "r", 4, resume=True)
    # truncated, and the hash left out: safetensors' own check, named
    weights.write_bytes(good[:40])
    meta = json.loads((checkpoint.directory / "meta.json").read_text())
    del meta["weights_sha256"]
    (checkpoint.directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"model.safetensors: not readable weights"):
        load_checkpoint(tmp_path / "r", "last").model_state()
    # a pickle that would run code is refused, not executed
    evil = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94"
    (checkpoint.directory / "trainer.pt").write_bytes(evil + b"\x8c\x04true\x94\x85\x94R\x94.")
    with pytest.raises(ValueError, match=r"trainer.pt: not a readable trainer state"):
        load_checkpoint(tmp_path / "r", "last").trainer_state()


@pytest.mark.parametrize("pointer,message", [
    ("{not json", r"last.json: not valid JSON"),
    ('{"dir": "../../elsewhere"}', r"last.json: not a checkpoint pointer of this run"),
    ('{"dir": "best-00000002-1"}', r"last.json: not a checkpoint pointer of this run"),
    ('{"dir": "last-99999999-1"}', r"last-99999999-1/meta.json: missing"),
])
def test_bad_checkpoint_pointers_are_refused_naming_the_file(tmp_path, pointer, message):
    run(tmp_path / "r", 2)
    (tmp_path / "r" / "checkpoints" / "last.json").write_text(pointer)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(tmp_path / "r", "last")


def test_a_second_run_on_the_same_directory_is_refused_while_the_first_runs(tmp_path):
    from lrn.train.engine import run_lock

    with run_lock(tmp_path / "r"):
        code = ("from lrn.train import train; train('adding', None, 'lrn', preset='tiny', out_dir=%r, "
                "max_steps=1, progress=False)" % str(tmp_path / "r"))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert f"is in use by another run (pid {os.getpid()})" in done.stderr
    run(tmp_path / "r", 1)  # released: the directory is usable again


def test_resume_refuses_settings_that_would_be_ignored(tmp_path):
    run(tmp_path / "r", 2)
    with pytest.raises(ValueError, match=r"these --set values differ: lr: 0.01 -> 0.5"):
        train("adding", None, "lrn", preset="tiny", overrides={**FAST, "lr": 0.5}, out_dir=tmp_path / "r",
              max_steps=4, resume=True, progress=False)
    assert run(tmp_path / "r", 4, resume=True)["steps"] == 4  # the same settings: resumed


def test_a_run_killed_inside_its_first_checkpoint_write_starts_again(tmp_path):
    out = tmp_path / "r"
    (out / "checkpoints" / ".tmp-last-00000003-1").mkdir(parents=True)  # what a kill leaves
    with pytest.raises(ValueError, match="no complete checkpoint to resume from"):
        run(out, 3, resume=True)
    assert run(out, 3)["steps"] == 3  # no manual deletion needed
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the debris is cleared by the next write


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    steps = 40
    whole = run(tmp_path / "whole", steps)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lrn", "train", "adding", "--preset", "tiny", "--cell", "lrn", "--out", str(out),
           "--no-progress", "--max-steps", str(steps), *[f"--set={k}={v}" for k, v in FAST.items()]]
    rng = torch.Generator().manual_seed(0)
    interrupted = 0
    for _ in range(3):
        argv = cmd + (["--resume"] if (out / "checkpoints" / "last.json").exists() else [])
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not (out / "checkpoints").exists():  # the run is training and writing checkpoints
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(float(torch.rand(1, generator=rng)) * 0.5)  # anywhere, checkpoint writes included
        interrupted += proc.poll() is None
        proc.kill()
        proc.wait(timeout=60)
    assert interrupted >= 1  # at least one kill landed mid-run
    resume = (out / "checkpoints" / "last.json").exists()
    finished = run(out, steps, resume=resume) if not (out / "results.json").exists() else None
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == whole["metrics"] and results["steps"] == steps
    assert log(out)["train_loss"] == log(tmp_path / "whole")["train_loss"]
    a = load_checkpoint(tmp_path / "whole", "last").model_state()
    b = load_checkpoint(out, "last").model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert finished is None or finished["metrics"] == whole["metrics"]


def test_progress_bars_count_what_the_run_is_held_to(tmp_path, capsys):
    # A step budget: the bar's total is the steps.  A time budget: seconds of training steps.
    train("adding", None, "lrn", preset="tiny", out_dir=tmp_path / "steps", max_steps=8, progress=True)
    steps_bar = capsys.readouterr().err
    assert "adding lrn" in steps_bar and "8/8" in steps_bar
    results = train("adding", None, "lrn", preset="tiny", out_dir=tmp_path / "time", max_minutes=0.02,
                    overrides={"max_steps": None}, progress=True)
    time_bar = capsys.readouterr().err
    assert "s of training steps" in time_bar and "/1 s of training steps" in time_bar
    assert "adding: valid mse" in time_bar  # validation shows a bar of its own
    assert results["steps"] > 0 and results["max_minutes"] == 0.02
