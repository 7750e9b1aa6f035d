"""The project's speed and memory targets, checked against a benchmark report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lrn.bench.rows import TARGET_SHAPES, Impl, Row, Shape, rows_of


@dataclass(frozen=True)
class Target:
    device: str
    dtype: str
    shapes: tuple[Shape, ...] | None  # None: every shape of the run
    what: str
    limit: float
    at_least: bool  # True: value >= limit; False: value <= limit
    value: Callable[[Row, Impl], float | None]  # (the shape's row, the LRN entry) -> value; None: not measured


def _ratio(mode: str, base: str) -> Callable[[Row, Impl], float | None]:
    return lambda row, impl: impl.timing[mode].ratio.get(base)


def _memory_vs_gru(row: Row, impl: Impl) -> float | None:
    gru = row.impls.get("gru")
    ours, theirs = impl.timing["train"].peak_mb, gru.timing["train"].peak_mb if gru else None
    if ours is None or not theirs:
        return None  # not measured, or below the page granularity of a tiny shape
    return ours / theirs


def _bandwidth(mode: str) -> Callable[[Row, Impl], float | None]:
    return lambda row, impl: (impl.recurrence[mode].gbps / row.copy_gbps
                              if impl.recurrence is not None and row.copy_gbps else None)


def _over_matmul(row: Row, impl: Impl) -> float | None:
    return None if impl.layer_over_matmul is None else impl.layer_over_matmul["train"]


_CPU, _GPU = tuple(TARGET_SHAPES["cpu"]), tuple(TARGET_SHAPES["cuda"])
TARGETS = (
    Target("cpu", "float32", _CPU, "train time / nn.LSTM", 0.40, False, _ratio("train", "lstm")),
    Target("cpu", "float32", _CPU, "train time / nn.GRU", 0.45, False, _ratio("train", "gru")),
    Target("cpu", "float32", _CPU, "forward time / nn.LSTM", 0.55, False, _ratio("forward", "lstm")),
    Target("cpu", "float32", _CPU, "train time / its matmul", 1.15, False, _over_matmul),
    Target("cuda", "bfloat16", _GPU, "train time / cuDNN LSTM", 0.15, False, _ratio("train", "lstm")),
    Target("cuda", "bfloat16", _GPU, "recurrence forward bandwidth / copy", 0.70, True, _bandwidth("forward")),
    Target("cuda", "bfloat16", _GPU, "recurrence train bandwidth / copy", 0.70, True, _bandwidth("train")),
    Target("cpu", "float32", None, "train memory / nn.GRU", 1.0, False, _memory_vs_gru),
    Target("cuda", "bfloat16", None, "train memory / nn.GRU", 1.0, False, _memory_vs_gru),
)


def evaluate_targets(report: dict) -> list[dict]:
    """The project's targets that this run measured, each with its value and whether it is met.
    "LRN" is the backend that ``backend="auto"`` picks for this device and dtype."""
    import torch

    from lrn.functional import resolve_backend

    config = report["config"]
    device = torch.device(config["device"])
    name = f"lrn[{resolve_backend('auto', device, getattr(torch, config['dtype']))}]"
    found = []
    for target in TARGETS:
        if (target.device, target.dtype) != (device.type, config["dtype"]):
            continue
        for row in rows_of(report):
            impl = row.impls.get(name)
            if (target.shapes is not None and row.shape not in target.shapes) or impl is None:
                continue
            value = target.value(row, impl)
            if value is None:
                continue
            met = value >= target.limit if target.at_least else value <= target.limit
            found.append({"impl": name, "B": row.B, "T": row.T, "H": row.H, "what": target.what,
                          "value": value, "limit": target.limit,
                          "op": ">=" if target.at_least else "<=", "met": met})
    return found
