"""Interleaved timing of a few callables, idle or beside CPU-bound processes (the benchmark
scripts' shared method: benchmarks/contention.py, benchmarks/real_programs.py)."""

from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator


def interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int,
                        seconds_per_sample: float) -> dict[str, float]:
    """Median seconds per call of each fn.  Every round takes one sample of each (a sample is
    the mean of as many calls as fill ``seconds_per_sample``), the order rotating every round,
    so that a change in the machine's load falls on every fn alike."""
    names = list(fns)
    calls = {}
    for name in names:  # warm-up, and the calls per sample from it
        fns[name]()
        start = time.perf_counter()
        fns[name]()
        calls[name] = max(1, int(seconds_per_sample / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            for _ in range(calls[name]):
                fns[name]()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_cores(processes: int) -> Iterator[None]:
    """``processes`` pure-Python busy loops (spawned, so nothing of the caller is shared) for
    the duration of the block."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_spin, daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let them get going
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
