"""DistributedDataParallel training with 2 CPU processes (gloo) under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys

from lrn.train.checkpoint import load_checkpoint


def test_torchrun_two_processes_trains_and_only_rank0_writes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lrn", "train", "adding", "--preset", "tiny", "--cell", "lrn", "--out", str(out),
           "--max-steps", "8", "--no-progress", "--set", "batches_per_epoch=10",
           "--set", "valid_size=64", "--set", "test_size=64", "--set", "eval_every=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["steps"] == 8
    # Each rank trained on its own shard: 8 steps x 2 ranks x 32 sequences.
    assert results["tokens_per_s"] > 0
    log = json.loads((out / "log.json").read_text())
    assert len(log["train_loss"]) == 8 and [e["step"] for e in log["evals"]] == [4, 8]
    # Rank 0 alone reports.
    summaries = [json.loads(block) for block in _json_blocks(proc.stdout)]
    assert len(summaries) == 1 and summaries[0]["metrics"] == results["metrics"]
    # The checkpoint holds each rank's RNG state, so that every rank resumes exactly.
    assert len(load_checkpoint(out, "last").trainer_state()["rank_rng"]) == 2
    written = sorted(p.name for p in out.iterdir())
    assert written == [".lock", "checkpoints", "log.json", "results.json"]  # .lock: the run lock


def _json_blocks(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines():
        if line == "{":
            current = [line]
        elif current:
            current.append(line)
            if line == "}":
                blocks.append("\n".join(current))
                current = []
    return blocks
