"""Timing and peak memory of every implementation at each shape: the measuring half of
``lrn bench`` (the package docstring describes the method)."""

from __future__ import annotations

import gc
import importlib.util
import math
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import lrn
from lrn.allocator import freed_memory_kept, glibc
from lrn.bench.machine import machine_info
from lrn.bench.rows import BASELINES, CELLS, DEFAULT_GRID, MODES, Impl, Part, Row, Shape, Timing, default_cells
from lrn.bench.targets import evaluate_targets
from lrn.functional import lrn_scan
from lrn.ops.linear import linear, onednn_backed_empty

DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "bfloat16": torch.bfloat16, "float16": torch.float16}
COPY_BYTES = 256 * 2**20  # far beyond any cache, so the copy runs at memory speed
MIN_SAMPLE_S = 0.01  # shorter calls are repeated within a sample (timer and sync overhead)
MEMORY_ROUNDS = 3  # peak memory: median of this many (CPU figures vary by ~10% call to call)


@dataclass
class BenchConfig:
    shapes: list[Shape] = field(default_factory=lambda: list(DEFAULT_GRID))
    cells: list[str] = field(default_factory=lambda: default_cells())
    backends: list[str] | None = None  # LRN backends; None: every one available on the device
    device: str = "cpu"
    dtype: str = "float32"
    repeats: int = 5
    warmup: int = 2
    memory: bool = True


def lrn_backends(device: torch.device, requested: list[str] | None) -> list[str]:
    """The LRN backends to time: "cpu" runs on CPU tensors only; triton on CPU tensors runs
    only in its interpreter, which is a correctness tool, not something to time."""
    runs_on = {"cpu": "cpu", "triton": "cuda"}
    usable = [b for b in lrn.available_backends() if runs_on.get(b, device.type) == device.type]
    if requested is None:
        return usable
    for backend in requested:
        if backend not in usable:
            raise ValueError(f"--backends: {backend!r} cannot run on {device.type} here; "
                             f"usable: {', '.join(usable)}")
    return list(requested)


# ------------------------------------------------------------------ measuring
@dataclass
class Timed:
    name: str  # an implementation ("lstm", "lrn[cpu]"), "matmul", "recurrence[cpu]" or "copy"
    mode: str  # "forward" or "train" ("copy" for the copy)
    fn: Callable[[], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn: Callable[[], None], device: torch.device, calls: int = 1) -> float:
    """Seconds per call of ``calls`` back-to-back calls."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / calls


def _proc_status_bytes(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def cpu_peak_method() -> str | None:
    """Why CPU peak memory cannot be measured here, or None when it can."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _proc_status_bytes("VmHWM")
    except (OSError, AttributeError) as err:
        return f"needs Linux /proc/self/clear_refs and VmHWM ({err})"
    if glibc() is None:
        return "needs glibc's malloc_trim"
    return None


def peak_memory(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes that one call of ``fn`` holds beyond what was held before it.

    CUDA: torch's allocator peak.  CPU: the process's peak resident set size (which also
    sees oneDNN and numba allocations, which torch's profiler would miss): free memory is
    first handed back to the OS (malloc_trim) so the baseline holds no cached free pages,
    then the kernel's high-water mark is reset (clear_refs 5) and read after the call.
    The caller collects garbage first (gc.collect takes ~0.4 s here, so once per shape).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    glibc().malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    base = _proc_status_bytes("VmRSS")
    fn()
    return _proc_status_bytes("VmHWM") - base


def copy_timed(device: torch.device) -> Timed:
    """A large same-device tensor copy, timed in every round beside the recurrence so that
    both see the same machine load; it moves 2 * COPY_BYTES (read + write)."""
    src = torch.ones(COPY_BYTES // 4, device=device)
    dst = torch.zeros_like(src)  # both touched: no page faults inside the timing
    return Timed("copy", "copy", lambda: dst.copy_(src))


def recurrence_bytes(B: int, T: int, H: int, itemsize: int) -> dict[str, int]:
    """Bytes the LRN recurrence must move at the least.  Forward: read the gates (3H), write
    the output (H).  Backward: read gates, outputs and output gradient, write the gate
    gradient (3H + H + H + 3H).  A training step is both."""
    forward = T * B * 4 * H * itemsize
    return {"forward": forward, "train": forward + T * B * 8 * H * itemsize}


# ------------------------------------------------------------------ one shape
def _build(impl: str, H: int, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    if impl == "sru_pkg":
        from sru import SRU

        module = SRU(H, H, num_layers=1)
    else:
        cell, _, backend = impl.partition("[")
        kwargs = {"backend": backend.rstrip("]")} if backend else {}
        module = lrn.make_rnn(cell, H, H, **kwargs)
    return module.to(device=device, dtype=dtype)


def _steps(name: str, module: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> list[Timed]:
    params = list(module.parameters())

    def forward() -> None:
        with torch.no_grad():
            module(x)

    def train() -> None:
        for p in params:  # as optimizer.zero_grad(set_to_none=True): every step allocates grads
            p.grad = None
        x.grad = None
        out = module(x)[0]
        out.backward(grad_out)

    return [Timed(name, "forward", forward), Timed(name, "train", train)]


def _lrn_parts(B: int, T: int, H: int, x: torch.Tensor, backends: list[str]) -> list[Timed]:
    """The LRN layer's matmul alone and its recurrence alone (per backend)."""
    weight = (torch.randn(3 * H, H, device=x.device, dtype=x.dtype) / H**0.5).requires_grad_()
    bias = torch.zeros(3 * H, device=x.device, dtype=x.dtype, requires_grad=True)
    grad_gates = torch.randn(T, B, 3 * H, device=x.device, dtype=x.dtype)
    if x.device.type == "cpu" and x.dtype == torch.float32:
        # In the layer the recurrence's backward writes this gradient into oneDNN-owned
        # memory, which the projection's backward reads without a copy: time the same.
        grad_gates = onednn_backed_empty(T, B, 3 * H).copy_(grad_gates)
    with torch.no_grad():
        gates = F.linear(x, weight, bias).requires_grad_()  # (T, B, 3H), realistic values
    grad_out = torch.randn(T, B, H, device=x.device, dtype=x.dtype)

    # The same projection the layer runs (oneDNN for float32 on CPU).
    def matmul_forward() -> None:
        with torch.no_grad():
            linear(x, weight, bias)

    def matmul_train() -> None:
        weight.grad = bias.grad = x.grad = None
        linear(x, weight, bias).backward(grad_gates)

    parts = [Timed("matmul", "forward", matmul_forward), Timed("matmul", "train", matmul_train)]
    for backend in backends:
        def scan_forward(backend=backend) -> None:
            with torch.no_grad():
                lrn_scan(gates, backend=backend)

        def scan_train(backend=backend) -> None:
            gates.grad = None
            lrn_scan(gates, backend=backend)[0].backward(grad_out)

        parts += [Timed(f"recurrence[{backend}]", "forward", scan_forward),
                  Timed(f"recurrence[{backend}]", "train", scan_train)]
    return parts


def bench_shape(shape: Shape, impls: list[str], backends: list[str], config: BenchConfig,
                device: torch.device, copy: Timed | None, bar: tqdm) -> Row:
    """Time (and measure the memory of) every implementation at one shape."""
    B, T, H = shape
    dtype = DTYPES[config.dtype]
    torch.manual_seed(0)
    x = torch.randn(T, B, H, device=device, dtype=dtype, requires_grad=True)  # (T, B, I=H)
    grad_out = torch.randn(T, B, H, device=device, dtype=dtype)
    errors: dict[str, str] = {}
    items: list[Timed] = []
    for impl in impls:
        try:
            items += _steps(impl, _build(impl, H, device, dtype), x, grad_out)
        except (RuntimeError, ValueError, NotImplementedError) as err:
            errors[impl] = f"{type(err).__name__}: {err}"
    if backends:
        items += _lrn_parts(B, T, H, x, backends) + [copy]

    samples: dict[tuple[str, str], list[float]] = {(t.name, t.mode): [] for t in items}
    calls = {key: 1 for key in samples}  # per sample; set from the warm-up timings
    for round_ in range(config.warmup + config.repeats):
        shift = round_ % max(len(items), 1)
        for item in items[shift:] + items[:shift]:  # rotate: no call always follows the same one
            if item.name in errors:
                continue
            bar.set_postfix_str(f"B={B} T={T} H={H} {item.name} {item.mode}", refresh=False)
            try:
                seconds = _time_call(item.fn, device, calls[(item.name, item.mode)])
            except (RuntimeError, ValueError, NotImplementedError) as err:
                # One failing implementation (an unsupported dtype, out of memory) must not
                # end a long run: it is reported in the JSON and on stderr.
                errors[item.name] = f"{type(err).__name__}: {err}"
                tqdm.write(f"lrn bench: {item.name} failed at B={B} T={T} H={H}: {errors[item.name]}")
                continue
            if round_ < config.warmup:
                calls[(item.name, item.mode)] = max(1, math.ceil(MIN_SAMPLE_S / seconds))
            else:
                samples[(item.name, item.mode)].append(seconds)
        bar.update(1)

    peak_samples: dict[tuple[str, str], list[int]] = {}
    if config.memory:
        gc.collect()
        for _ in range(MEMORY_ROUNDS):
            for item in items:
                if item.name in impls and item.name not in errors:
                    bar.set_postfix_str(f"B={B} T={T} H={H} {item.name} {item.mode} memory", refresh=False)
                    peak_samples.setdefault((item.name, item.mode), []).append(peak_memory(item.fn, device))
            bar.update(1)
    peaks = {key: statistics.median(values) for key, values in peak_samples.items()}
    return _summarise(shape, impls, backends, samples, calls, peaks, errors, config)


def _summarise(shape: Shape, impls: list[str], backends: list[str], samples: dict, calls: dict,
               peaks: dict, errors: dict, config: BenchConfig) -> Row:
    B, T, H = shape
    median_ms = {key: statistics.median(v) * 1e3 for key, v in samples.items() if v}
    row = Row(B, T, H, errors=errors,
              load_average_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    for impl in impls:
        if impl in errors:
            continue
        row.impls[impl] = Impl({mode: Timing(
            median_ms[(impl, mode)], min(samples[(impl, mode)]) * 1e3, [s * 1e3 for s in samples[(impl, mode)]],
            calls[(impl, mode)],
            {base: median_ms[(impl, mode)] / median_ms[(base, mode)] for base in BASELINES if (base, mode) in median_ms},
            peaks[(impl, mode)] / 2**20 if (impl, mode) in peaks else None) for mode in MODES})
    if not backends or "matmul" in errors:
        return row
    row.matmul = {mode: Part(median_ms[("matmul", mode)]) for mode in MODES}
    if ("copy", "copy") in median_ms:
        row.copy_gbps = 2 * COPY_BYTES / median_ms[("copy", "copy")] / 1e6
    moved = recurrence_bytes(B, T, H, DTYPES[config.dtype].itemsize)
    for backend in backends:
        impl, part = f"lrn[{backend}]", f"recurrence[{backend}]"
        if impl not in row.impls or part in errors:
            continue
        entry = row.impls[impl]
        entry.recurrence = {mode: Part(median_ms[(part, mode)], moved[mode] / median_ms[(part, mode)] / 1e6)
                            for mode in MODES}
        entry.recurrence_bytes = moved
        layer = {mode: entry.timing[mode].median_ms for mode in MODES}
        entry.matmul_share = {mode: row.matmul[mode].median_ms / layer[mode] for mode in MODES}
        entry.layer_over_matmul = {mode: layer[mode] / row.matmul[mode].median_ms for mode in MODES}
    return row


def run_bench(config: BenchConfig, *, progress: bool = True) -> dict:
    """Run the benchmark; returns the report (the JSON ``lrn bench --out`` writes)."""
    if config.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
    unknown = [c for c in config.cells if c not in CELLS]
    if unknown:
        raise ValueError(f"--cells: unknown {', '.join(unknown)}; choose from {', '.join(CELLS)}")
    if "sru_pkg" in config.cells and not importlib.util.find_spec("sru"):
        raise ValueError("--cells sru_pkg needs the `sru` package (pip install sru)")
    if not config.shapes or any(len(s) != 3 or min(s) < 1 for s in config.shapes):
        raise ValueError(f"shapes must be (B, T, H) triples of positive integers, got {config.shapes}")
    if config.repeats < 1 or config.warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {config.repeats}, {config.warmup}")
    if config.device.partition(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {config.device!r}")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    backends = lrn_backends(device, config.backends) if "lrn" in config.cells else []
    impls = [c for c in config.cells if c != "lrn"] + [f"lrn[{b}]" for b in backends]
    memory_problem = cpu_peak_method() if config.memory and device.type == "cpu" else None
    if memory_problem:
        tqdm.write(f"lrn bench: no peak-memory figures: {memory_problem}")
        config = BenchConfig(**{**asdict(config), "memory": False})

    report = {
        "machine": machine_info(device),
        "config": asdict(config) | {"backends": backends, "impls": impls},
        "memory_method": ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
                          "peak RSS (VmHWM after clear_refs) minus RSS after malloc_trim")
                         if config.memory else memory_problem,
        # Whether freed CPU memory is reused (lrn.keep_freed_memory, on under the `lrn` command)
        # or page-faulted in again on every call: it changes every CPU figure, LSTM's too.
        "cpu_allocator": "glibc, freed memory kept" if freed_memory_kept() else "default",
        "results": [],
    }
    rounds = config.warmup + config.repeats + MEMORY_ROUNDS * int(config.memory)
    copy = copy_timed(device) if backends else None
    with tqdm(total=len(config.shapes) * rounds, desc="lrn bench", unit="round",
              disable=not progress) as bar:
        for shape in config.shapes:
            report["results"].append(bench_shape(shape, impls, backends, config, device, copy, bar).to_json())
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["targets"] = evaluate_targets(report)
    return report


