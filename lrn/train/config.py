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
    "patience", "nonmono", "amp", "rho", "eps", "decay_start_epoch", "decay_rate",
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


#: engine settings and the values they accept: (kind, lowest, may be None)
RANGES: dict[str, tuple[type, float, bool]] = {
    "batch_size": (int, 1, False), "eval_every": (int, 0, False), "max_steps": (int, 0, True),
    "max_epochs": (int, 1, True), "warmup_steps": (int, 0, False), "clip": (float, 0, False),
    "weight_decay": (float, 0, False), "patience": (int, 1, False), "nonmono": (int, 1, False),
    "decay_start_epoch": (int, 0, False), "decay_rate": (float, 0, False),
}


def check_ranges(config: dict[str, Any]) -> None:
    """Refuse engine settings outside what they mean (a batch of 0, validating every -1 steps)."""
    for key, (kind, lowest, nullable) in RANGES.items():
        if key not in config or (config[key] is None and nullable):
            continue
        value = config[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= lowest
        if kind is int:
            ok = ok and float(value).is_integer()
        if not ok:
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"setting {key!r} must be {what} >= {lowest}"
                             f"{' (or null)' if nullable else ''}, got {value!r}")
    factor = config.get("decay_factor")
    if factor is not None and not (isinstance(factor, (int, float)) and 0 < factor <= 1):
        raise ValueError(f"setting 'decay_factor' must be in (0, 1], got {factor!r}")


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
        # null is allowed here (a task's "all"/"none"); check_ranges refuses it where it means nothing
        if isinstance(old, (int, float)) and not isinstance(old, bool) and value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool)):
            raise ValueError(f"setting {key!r} must be a number, got {value!r}")
        if isinstance(old, float) and isinstance(value, int):
            value = float(value)
        config[key] = value
    config["seed"] = seed
    check_ranges(config)
    json.dumps(config)  # fail early on a value results.json could not hold
    return config
