"""What ``lrn bench`` records: one typed row per shape, and its JSON form.

The JSON layout (``lrn bench --out``, benchmarks/*.json) flattens each implementation's
timings into keys such as ``train_ms`` and ``forward_ratio``; those keys are written and
read here only.  This module imports nothing heavy: the CLI's parser reads its constants.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

Shape = tuple[int, int, int]  # (B, T, H)

DEFAULT_GRID: list[Shape] = [(B, T, H) for H in (256, 512) for T in (128, 512, 1024) for B in (16, 32, 64)]
TARGET_SHAPES: dict[str, list[Shape]] = {
    "cpu": [(32, 128, 256), (16, 1024, 256), (64, 256, 512)],
    "cuda": [(64, 512, 1024)],
}
#: every layer the benchmark builds with lrn.make_rnn, and sru_pkg: the `sru` package (Lei et al.)
CELLS = ("lstm", "gru", "atr", "sru", "lrn", "olrn", "sru_pkg")


def default_cells() -> list[str]:
    """Every cell of CELLS that is installed here."""
    return [c for c in CELLS if c != "sru_pkg" or importlib.util.find_spec("sru")]


DTYPE_NAMES = ("float32", "float64", "bfloat16", "float16")
MODES = ("forward", "train")
BASELINES = ("lstm", "gru")  # every time is also given as a ratio to these, measured in the same rounds


@dataclass
class Timing:
    """One implementation in one mode ("forward" or "train") at one shape."""

    median_ms: float
    min_ms: float
    samples_ms: list[float]
    calls_per_sample: int          # calls timed back to back within one sample
    ratio: dict[str, float]        # median / the baseline's median (BASELINES)
    peak_mb: float | None = None   # peak extra memory of one call; None: not measured


@dataclass
class Part:
    """A part of the LRN layer timed alone: its recurrence, or its matmul."""

    median_ms: float
    gbps: float | None = None  # effective memory bandwidth (the recurrence only)


@dataclass
class Impl:
    """An implementation at one shape: its timings per mode and, for an LRN backend, the
    recurrence alone and the matmul's share of the layer's time."""

    timing: dict[str, Timing]
    recurrence: dict[str, Part] | None = None
    recurrence_bytes: dict[str, int] | None = None
    matmul_share: dict[str, float] | None = None       # matmul time / layer time
    layer_over_matmul: dict[str, float] | None = None  # layer time / matmul time

    def to_json(self) -> dict:
        out: dict = {}
        for mode, t in self.timing.items():
            out |= {f"{mode}_ms": t.median_ms, f"{mode}_min_ms": t.min_ms, f"{mode}_samples_ms": t.samples_ms,
                    f"{mode}_calls_per_sample": t.calls_per_sample, f"{mode}_ratio": t.ratio}
            if t.peak_mb is not None:
                out[f"{mode}_peak_mb"] = t.peak_mb
        if self.recurrence is not None:
            rec: dict = {f"{mode}_ms": p.median_ms for mode, p in self.recurrence.items()}
            rec |= {f"{mode}_gbps": p.gbps for mode, p in self.recurrence.items()}
            out["recurrence"] = rec | {"bytes": self.recurrence_bytes}
        if self.matmul_share is not None:
            out["matmul_share"] = self.matmul_share
        if self.layer_over_matmul is not None:
            out["layer_over_matmul"] = self.layer_over_matmul
        return out

    @classmethod
    def from_json(cls, entry: dict) -> Impl:
        timing = {mode: Timing(entry[f"{mode}_ms"], entry.get(f"{mode}_min_ms", entry[f"{mode}_ms"]),
                               entry.get(f"{mode}_samples_ms", []), entry.get(f"{mode}_calls_per_sample", 1),
                               entry.get(f"{mode}_ratio", {}), entry.get(f"{mode}_peak_mb"))
                  for mode in MODES if f"{mode}_ms" in entry}
        rec = entry.get("recurrence")
        return cls(timing, None if rec is None else {mode: Part(rec[f"{mode}_ms"], rec.get(f"{mode}_gbps"))
                                                     for mode in MODES},
                   None if rec is None else rec.get("bytes"), entry.get("matmul_share"),
                   entry.get("layer_over_matmul"))


@dataclass
class Row:
    """Every implementation at one shape (B, T, H), input size = H."""

    B: int
    T: int
    H: int
    impls: dict[str, Impl] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # impl -> why it failed
    load_average_1min: float | None = None  # how much other work shared the CPU meanwhile
    matmul: dict[str, Part] | None = None   # the LRN layer's projection alone, per mode
    copy_gbps: float | None = None          # a large copy timed in the same rounds

    @property
    def shape(self) -> Shape:
        return self.B, self.T, self.H

    def to_json(self) -> dict:
        out: dict = {"B": self.B, "T": self.T, "H": self.H, "input_size": self.H,
                     "impls": {name: impl.to_json() for name, impl in self.impls.items()},
                     "errors": self.errors, "load_average_1min": self.load_average_1min}
        if self.matmul is not None:
            out["matmul"] = {f"{mode}_ms": p.median_ms for mode, p in self.matmul.items()}
        if self.copy_gbps is not None:
            out["copy_gbps"] = self.copy_gbps
        return out

    @classmethod
    def from_json(cls, r: dict) -> Row:
        matmul = r.get("matmul")
        return cls(r["B"], r["T"], r["H"], {name: Impl.from_json(e) for name, e in r["impls"].items()},
                   dict(r.get("errors", {})), r.get("load_average_1min"),
                   None if matmul is None else {mode: Part(matmul[f"{mode}_ms"]) for mode in MODES},
                   r.get("copy_gbps"))


def rows_of(report: dict) -> list[Row]:
    """The typed rows of a benchmark report (as ``lrn bench --out`` writes it)."""
    return [Row.from_json(r) for r in report["results"]]
