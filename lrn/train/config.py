"""A run's configuration: the task's preset, updated with the user's overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lrn.tasks.base import Task

PRESETS = ("tiny", "small", "anchor", "paper")

#: keys the engine itself reads; they may be set even when a preset leaves them out
ENGINE_KEYS = frozenset({
    "seed", "max_steps", "max_epochs", "eval_every", "batch_size", "lr", "optimizer",
    "momentum", "weight_decay", "clip", "lr_schedule", "warmup_steps", "decay_factor",
    "patience", "nonmono", "amp", "rho", "eps", "decay_start_epoch",
})

ENGINE_DEFAULTS: dict[str, Any] = {
    "max_steps": None, "max_epochs": None, "eval_every": 0, "optimizer": "sgd",
    "weight_decay": 0.0, "clip": 0.0, "lr_schedule": "constant", "warmup_steps": 0, "amp": True,
}


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as JSON when it parses
    (numbers, true/false, null, lists), else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def resolve_config(task: Task, preset: str, data_dir: Path | None, overrides: dict[str, Any] | None,
                   seed: int) -> dict[str, Any]:
    """Every hyper-parameter of the run (JSON-serialisable, written to results.json)."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    config = {**ENGINE_DEFAULTS, **task.config(preset, data_dir)}
    for key, value in (overrides or {}).items():
        if key not in config and key not in ENGINE_KEYS:
            known = ", ".join(sorted(config))
            raise ValueError(f"unknown setting {key!r} for task {task.name} (known: {known})")
        old = config.get(key)
        # Keep the preset's type: '--set lr=1' stays a float, 'layer_norm=1' is refused.
        if isinstance(old, bool) != isinstance(value, bool) and old is not None:
            raise ValueError(f"setting {key!r} must be {type(old).__name__}, got {value!r}")
        if isinstance(old, float) and isinstance(value, int):
            value = float(value)
        config[key] = value
    config["seed"] = seed
    json.dumps(config)  # fail early on a value results.json could not hold
    return config
