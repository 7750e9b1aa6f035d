"""The adding problem (Hochreiter & Schmidhuber 1997): a generated long-range task.

Each input step carries two channels: a value drawn uniformly from [0, 1] and a
marker that is 1 at exactly two steps (one in each half of the sequence) and 0
elsewhere.  The target is the sum of the two marked values, read from the last
step's output.  Always predicting the mean, 1, scores an MSE of Var(u1 + u2) = 2/12
= 0.167; a model that solves the task scores near 0.  The markers sit up to
``seq_len`` steps before the answer, so the task needs long-range memory.

Data are generated, never read: training batches from (seed, epoch, rank), the
valid and test sets from fixed seeds of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrn.tasks.base import Task, register
from lrn.tasks.text import make_rnn_from_spec

#: MSE of always predicting the mean of the target (the variance of a sum of two U(0, 1))
MEAN_BASELINE_MSE = 2.0 / 12.0

PRESETS: dict[str, dict[str, Any]] = {
    # seconds, for tests
    "tiny": dict(seq_len=20, hidden_size=32, batch_size=32, batches_per_epoch=50, lr=1e-2,
                 optimizer="adam", clip=1.0, max_steps=60, eval_every=20, valid_size=256, test_size=256),
    # the demo (`lrn demo`): hidden 128 and sequences of 50 steps, a size at which the three
    # cells' speeds differ as in real models.  Chosen so that LSTM, GRU and LRN all leave the
    # mean-predictor plateau within the 2000 steps (trial runs at lr 2e-3, 1 thread, seed 0:
    # validation MSE at step 2000 GRU 0.0013, LSTM 0.012, LRN 0.038), and the three runs take
    # about 2 minutes on 2 busy cores.
    "small": dict(seq_len=50, hidden_size=128, batch_size=32, batches_per_epoch=100, lr=2e-3,
                  optimizer="adam", clip=1.0, max_steps=2000, eval_every=200, valid_size=1000,
                  test_size=2000),
}

_VALID_SEED, _TEST_SEED = 10_007, 20_011  # held-out sets, distinct from every training seed


def generate(num: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` sequences: inputs (T, N, 2) [value, marker], targets (N,)."""
    values = torch.rand(seq_len, num, generator=generator)
    half = seq_len // 2
    first = torch.randint(0, half, (num,), generator=generator)
    second = torch.randint(half, seq_len, (num,), generator=generator)
    markers = torch.zeros(seq_len, num)
    cols = torch.arange(num)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    targets = values[first, cols] + values[second, cols]
    return torch.stack([values, markers], dim=-1), targets


def _generator(*seeds: int) -> torch.Generator:
    """A reproducible stream of its own for each (seed, epoch, rank, ...) tuple."""
    mixed = 0
    for s in seeds:
        mixed = (mixed * 1_000_003 + s + 1) % 2**63
    g = torch.Generator()
    g.manual_seed(mixed)
    return g


@dataclass
class AddingData:
    valid: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


class AddingModel(nn.Module):
    """A recurrent layer read out at the last step by a linear regressor."""

    def __init__(self, cell: str, hidden_size: int, layer_norm: bool):
        super().__init__()
        self.rnn = make_rnn_from_spec(cell, 2, hidden_size, layer_norm=layer_norm)
        self.head = nn.Linear(self.rnn.output_size, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(inputs)  # (T, B, H)
        return self.head(out[-1]).squeeze(-1)  # (B,)


@register
class AddingTask(Task):
    name = "adding"
    metrics = ("mse",)
    primary_metric = "mse"
    higher_is_better = False
    needs_data = False

    def config(self, preset: str, data_dir: Path | None) -> dict[str, Any]:
        if preset not in PRESETS:
            raise ValueError(f"the adding problem has presets {', '.join(PRESETS)}; the LRN paper "
                             f"has no adding experiment to take a {preset!r} preset from")
        return dict(PRESETS[preset], layer_norm=False)

    def load_data(self, data_dir: Path | None, config: dict[str, Any], vocab: dict | None = None) -> AddingData:
        if int(config["seq_len"]) < 2:
            raise ValueError(f"seq_len must be at least 2, got {config['seq_len']}")
        return AddingData(
            valid=generate(int(config["valid_size"]), int(config["seq_len"]), _generator(_VALID_SEED)),
            test=generate(int(config["test_size"]), int(config["seq_len"]), _generator(_TEST_SEED)),
        )

    def vocab_state(self, data: AddingData) -> dict:
        return {}

    def build_model(self, config: dict[str, Any], data: AddingData, cell: str) -> nn.Module:
        return AddingModel(cell, int(config["hidden_size"]), bool(config["layer_norm"]))

    def train_batches(self, data: AddingData, config: dict[str, Any], *, epoch: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = _generator(int(config["seed"]), epoch, rank)
        for _ in range(int(config["batches_per_epoch"]) // world_size):
            yield generate(int(config["batch_size"]), int(config["seq_len"]), g)

    def loss(self, model: nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, int]:
        inputs, targets = (t.to(device) for t in batch)
        predictions = model(inputs)
        return nn.functional.mse_loss(predictions.float(), targets), targets.numel()

    def evaluate(self, model: nn.Module, data: AddingData, split: str, config: dict[str, Any],
                 device: torch.device) -> dict[str, float]:
        inputs, targets = getattr(data, split)
        squared = 0.0
        for start in self.progress(range(0, targets.numel(), 500), f"{split} mse"):
            x = inputs[:, start:start + 500].to(device)
            y = targets[start:start + 500].to(device)
            squared += float(((model(x).float() - y) ** 2).sum())
        return {"mse": squared / targets.numel()}
