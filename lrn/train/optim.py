"""Optimisers and learning-rate schedules, both checkpointable.

Config keys read here: optimizer ("sgd" | "adam" | "adadelta" | "asgd" | "nt-asgd"), lr,
weight_decay, momentum (sgd), rho and eps (adadelta, the optimiser of the authors' R-Net),
lr_schedule ("constant" | "linear" | "cosine" | "plateau" | "epoch_decay" | "inverse_time"),
warmup_steps, max_steps, decay_factor and patience (plateau), decay_factor and
decay_start_epoch (epoch_decay: the lr is multiplied by decay_factor at the end of every
epoch from epoch decay_start_epoch on, as in Zaremba et al. 2014), decay_rate
(inverse_time: lr / (1 + decay_rate * epochs done), as in Ma & Hovy 2016), nonmono (nt-asgd).

"nt-asgd" is the non-monotonically triggered ASGD of Merity et al. (2018) used by the
LRN authors' language models: plain SGD until the validation metric has not improved
on the best of all but the last ``nonmono`` evaluations, then averaged SGD (evaluation
and the best checkpoint use the averaged weights).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adadelta", "asgd", "nt-asgd")
SCHEDULES = ("constant", "linear", "cosine", "plateau", "epoch_decay", "inverse_time")


def build_optimizer(kind: str, params, config: dict[str, Any]) -> torch.optim.Optimizer:
    lr, wd = float(config["lr"]), float(config.get("weight_decay", 0.0))
    if kind in ("sgd", "nt-asgd"):
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(config.get("momentum", 0.0)))
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if kind == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd, rho=float(config.get("rho", 0.9)),
                                    eps=float(config.get("eps", 1e-6)))
    if kind == "asgd":
        # t0=0, lambd=0: average from the first step on, no lr decay (as in AWD-LSTM / MoS).
        return torch.optim.ASGD(params, lr=lr, t0=0, lambd=0.0, weight_decay=wd)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")


def check_config(config: dict[str, Any]) -> None:
    if config.get("optimizer", "sgd") not in OPTIMIZERS:
        raise ValueError(f"config optimizer must be one of {OPTIMIZERS}, got {config['optimizer']!r}")
    if config.get("lr_schedule", "constant") not in SCHEDULES:
        raise ValueError(f"config lr_schedule must be one of {SCHEDULES}, got {config['lr_schedule']!r}")
    if config.get("lr_schedule") in ("linear", "cosine") and not config.get("max_steps"):
        raise ValueError(f"lr_schedule {config['lr_schedule']!r} decays to 0 at max_steps: set max_steps")
    if config.get("lr_schedule") == "plateau" and int(config.get("patience", 1)) < 1:
        # patience 0 cuts the lr at the first validation that does not improve, which locks
        # an early stall in for good
        raise ValueError(f"config patience must be >= 1 for the plateau schedule, got {config['patience']!r}")
    if config.get("lr_schedule") == "inverse_time" and config.get("decay_rate") is None:
        raise ValueError("lr_schedule 'inverse_time' divides the lr by 1 + decay_rate * epoch: set decay_rate")
    if not float(config.get("lr", 0)) > 0:
        raise ValueError(f"config lr must be positive, got {config.get('lr')!r}")


class Optimization:
    """The optimiser, its schedule and the NT-ASGD switch, as one checkpointable unit."""

    def __init__(self, model: nn.Module, config: dict[str, Any]):
        check_config(config)
        self.model = model
        self.config = config
        self.requested = config.get("optimizer", "sgd")
        self.active = "sgd" if self.requested == "nt-asgd" else self.requested
        self.optimizer = build_optimizer(self.active, model.parameters(), config)
        self.plateau_factor = 1.0   # product of plateau decays so far
        self.bad_evals = 0          # evaluations since the last improvement (plateau)
        self.history: list[float] = []  # validation metrics, lower is better (sign-adjusted)

    # ----------------------------------------------------------------- lr
    def lr_at(self, step: int, epoch: int = 0) -> float:
        """Learning rate for optimiser step ``step`` of epoch ``epoch`` (both 0-based)."""
        base = float(self.config["lr"]) * self.plateau_factor
        warmup = int(self.config.get("warmup_steps", 0))
        if step < warmup:
            return base * (step + 1) / warmup
        kind = self.config.get("lr_schedule", "constant")
        if kind == "epoch_decay":
            decays = max(0, epoch + 1 - int(self.config["decay_start_epoch"]))
            return base * float(self.config["decay_factor"]) ** decays
        if kind == "inverse_time":
            return base / (1.0 + float(self.config["decay_rate"]) * epoch)
        total = self.config.get("max_steps")
        if kind in ("linear", "cosine") and total:
            progress = min(1.0, (step - warmup) / max(1, int(total) - warmup))
            if kind == "linear":
                return base * (1.0 - progress)
            return base * 0.5 * (1.0 + math.cos(math.pi * progress))
        return base

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # --------------------------------------------------------- validation
    def on_validation(self, loss_like: float) -> None:
        """React to a validation result (lower is better): plateau decay, NT-ASGD switch."""
        if self.config.get("lr_schedule") == "plateau":
            if self.history and loss_like >= min(self.history):
                self.bad_evals += 1
                if self.bad_evals >= int(self.config.get("patience", 1)) + 1:
                    self.plateau_factor *= float(self.config.get("decay_factor", 0.25))
                    self.bad_evals = 0
            else:
                self.bad_evals = 0
        nonmono = int(self.config.get("nonmono", 5))
        if (self.requested == "nt-asgd" and self.active == "sgd" and len(self.history) > nonmono
                and loss_like > min(self.history[:-nonmono])):
            self.switch_to_asgd()
        self.history.append(loss_like)

    def switch_to_asgd(self) -> None:
        self.active = "asgd"
        self.optimizer = build_optimizer("asgd", self.model.parameters(), self.config)

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Inside: the model holds ASGD's averaged weights (a no-op for other optimisers)."""
        if self.active != "asgd":
            yield
            return
        saved = []
        with torch.no_grad():
            for p in self.model.parameters():
                ax = self.optimizer.state.get(p, {}).get("ax")
                if ax is not None:
                    saved.append((p, p.detach().clone()))
                    p.copy_(ax)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in saved:
                    p.copy_(value)

    # --------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"active": self.active, "optimizer": self.optimizer.state_dict(),
                "plateau_factor": self.plateau_factor, "bad_evals": self.bad_evals,
                "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["active"] != self.active:
            self.switch_to_asgd()
        self.optimizer.load_state_dict(state["optimizer"])
        self.plateau_factor = float(state["plateau_factor"])
        self.bad_evals = int(state["bad_evals"])
        self.history = [float(v) for v in state["history"]]
