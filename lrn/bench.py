"""``lrn bench``: speed and memory of one LRN layer against nn.LSTM, nn.GRU, ATR and SRU.

For every shape (B, T, H) of a grid (input size = H, one layer, time-major input):
  * each implementation's forward (under no_grad) and training step (forward, then
    backward of a fixed random output gradient into the parameters and the input);
  * for LRN also its parts: the input projection x W^T + b alone (the layer's matmul)
    and the recurrence alone (``lrn.functional.lrn_scan`` on precomputed gates), from
    which the matmul share and the recurrence's effective memory bandwidth follow;
  * the peak extra memory of each forward and training step.
All timed calls of a shape are interleaved (one call of each, in an order rotated every
round) after ``warmup`` untimed rounds, so load changes hit every implementation alike;
calls shorter than 10 ms are repeated back to back within one sample.  We report medians
(and minima), and ratios of medians to nn.LSTM / nn.GRU measured in the same rounds.
docs/performance.md describes the method and its caveats.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import lrn
from lrn.allocator import freed_memory_kept, glibc
from lrn.functional import lrn_scan, resolve_backend
from lrn.ops.linear import linear, onednn_backed_empty

Shape = tuple[int, int, int]  # (B, T, H)

DEFAULT_GRID: list[Shape] = [(B, T, H) for H in (256, 512) for T in (128, 512, 1024) for B in (16, 32, 64)]
TARGET_SHAPES: dict[str, list[Shape]] = {
    "cpu": [(32, 128, 256), (16, 1024, 256), (64, 256, 512)],
    "cuda": [(64, 512, 1024)],
}
CELLS = ("lstm", "gru", "atr", "sru", "lrn", "sru_pkg")  # sru_pkg: the `sru` package (Lei et al.)
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("forward", "train")
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


def default_cells() -> list[str]:
    cells = ["lstm", "gru", "atr", "sru", "lrn"]
    return cells + ["sru_pkg"] if importlib.util.find_spec("sru") else cells


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


def parse_shapes(text: str) -> list[Shape]:
    """``"32,128,256;16,1024,256"`` -> [(32, 128, 256), (16, 1024, 256)] as (B, T, H)."""
    shapes = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--shapes: expected 'B,T,H' with three positive integers, got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    if not shapes:
        raise ValueError(f"--shapes: no shape in {text!r}")
    return shapes


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
                lrn_scan(gates, None, None, 1, False, "tanh", False, backend)

        def scan_train(backend=backend) -> None:
            gates.grad = None
            lrn_scan(gates, None, None, 1, False, "tanh", False, backend)[0].backward(grad_out)

        parts += [Timed(f"recurrence[{backend}]", "forward", scan_forward),
                  Timed(f"recurrence[{backend}]", "train", scan_train)]
    return parts


def bench_shape(shape: Shape, impls: list[str], backends: list[str], config: BenchConfig,
                device: torch.device, copy: Timed | None, bar: tqdm) -> dict:
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


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def _summarise(shape: Shape, impls: list[str], backends: list[str], samples: dict, calls: dict,
               peaks: dict, errors: dict, config: BenchConfig) -> dict:
    B, T, H = shape
    timed = {key: _median_ms(v) for key, v in samples.items() if v}
    # The load average tells how much other work shared the CPU while this shape ran.
    result: dict = {"B": B, "T": T, "H": H, "input_size": H, "impls": {}, "errors": errors,
                    "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    for impl in impls:
        if impl in errors:
            continue
        entry: dict = {}
        for mode in MODES:
            entry[f"{mode}_ms"] = timed[(impl, mode)]
            entry[f"{mode}_min_ms"] = min(samples[(impl, mode)]) * 1e3
            entry[f"{mode}_samples_ms"] = [s * 1e3 for s in samples[(impl, mode)]]
            entry[f"{mode}_calls_per_sample"] = calls[(impl, mode)]
            entry[f"{mode}_ratio"] = {base: timed[(impl, mode)] / timed[(base, mode)]
                                      for base in ("lstm", "gru") if (base, mode) in timed}
            if (impl, mode) in peaks:
                entry[f"{mode}_peak_mb"] = peaks[(impl, mode)] / 2**20
        result["impls"][impl] = entry
    if not backends or "matmul" in errors:
        return result
    result["matmul"] = {f"{mode}_ms": timed[("matmul", mode)] for mode in MODES}
    if ("copy", "copy") in timed:
        result["copy_gbps"] = 2 * COPY_BYTES / timed[("copy", "copy")] / 1e6
    moved = recurrence_bytes(B, T, H, DTYPES[config.dtype].itemsize)
    for backend in backends:
        impl, part = f"lrn[{backend}]", f"recurrence[{backend}]"
        if impl not in result["impls"] or part in errors:
            continue
        entry = result["impls"][impl]
        recurrence = {f"{mode}_ms": timed[(part, mode)] for mode in MODES}
        recurrence |= {f"{mode}_gbps": moved[mode] / timed[(part, mode)] / 1e6 for mode in MODES}
        recurrence["bytes"] = moved
        entry["recurrence"] = recurrence
        # matmul share: the projection's time as a fraction of the whole layer's.
        entry["matmul_share"] = {mode: timed[("matmul", mode)] / entry[f"{mode}_ms"] for mode in MODES}
        entry["layer_over_matmul"] = {mode: entry[f"{mode}_ms"] / timed[("matmul", mode)] for mode in MODES}
    return result


# ------------------------------------------------------------------ the run
def machine_info(device: torch.device) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flag_set = set(flags.group(1).split()) if flags else set()

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpu_simd": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flag_set],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("torch", "numpy", "numba", "triton", "sru", "lrn-torch")},
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


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
            report["results"].append(bench_shape(shape, impls, backends, config, device, copy, bar))
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["targets"] = evaluate_targets(report)
    return report


# ------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Target:
    device: str
    dtype: str
    shapes: tuple[Shape, ...] | None  # None: every shape of the run
    what: str
    limit: float
    at_least: bool  # True: value >= limit; False: value <= limit
    value: Callable[[dict, dict], float | None]  # (shape result, lrn entry) -> value


def _ratio(mode: str, base: str) -> Callable[[dict, dict], float | None]:
    return lambda result, entry: entry[f"{mode}_ratio"].get(base)


def _memory_vs_gru(result: dict, entry: dict) -> float | None:
    gru = result["impls"].get("gru", {})
    if "train_peak_mb" not in entry or not gru.get("train_peak_mb"):
        return None  # not measured, or below the page granularity of a tiny shape
    return entry["train_peak_mb"] / gru["train_peak_mb"]


def _bandwidth(mode: str) -> Callable[[dict, dict], float | None]:
    return lambda result, entry: (entry["recurrence"][f"{mode}_gbps"] / result["copy_gbps"]
                                  if "recurrence" in entry and "copy_gbps" in result else None)


_CPU, _GPU = tuple(TARGET_SHAPES["cpu"]), tuple(TARGET_SHAPES["cuda"])
TARGETS = (
    Target("cpu", "float32", _CPU, "train time / nn.LSTM", 0.40, False, _ratio("train", "lstm")),
    Target("cpu", "float32", _CPU, "train time / nn.GRU", 0.45, False, _ratio("train", "gru")),
    Target("cpu", "float32", _CPU, "forward time / nn.LSTM", 0.55, False, _ratio("forward", "lstm")),
    Target("cpu", "float32", _CPU, "train time / its matmul", 1.15, False,
           lambda result, entry: entry.get("layer_over_matmul", {}).get("train")),
    Target("cuda", "bfloat16", _GPU, "train time / cuDNN LSTM", 0.15, False, _ratio("train", "lstm")),
    Target("cuda", "bfloat16", _GPU, "recurrence forward bandwidth / copy", 0.70, True, _bandwidth("forward")),
    Target("cuda", "bfloat16", _GPU, "recurrence train bandwidth / copy", 0.70, True, _bandwidth("train")),
    Target("cpu", "float32", None, "train memory / nn.GRU", 1.0, False, _memory_vs_gru),
    Target("cuda", "bfloat16", None, "train memory / nn.GRU", 1.0, False, _memory_vs_gru),
)


def evaluate_targets(report: dict) -> list[dict]:
    """The project's targets that this run measured, each with its value and whether it is met.
    "LRN" is the backend that ``backend="auto"`` picks for this device and dtype."""
    config = report["config"]
    device = torch.device(config["device"])
    impl = f"lrn[{resolve_backend('auto', device, DTYPES[config['dtype']])}]"
    found = []
    for target in TARGETS:
        if (target.device, target.dtype) != (device.type, config["dtype"]):
            continue
        for result in report["results"]:
            shape = (result["B"], result["T"], result["H"])
            entry = result["impls"].get(impl)
            if (target.shapes is not None and shape not in target.shapes) or entry is None:
                continue
            value = target.value(result, entry)
            if value is None:
                continue
            met = value >= target.limit if target.at_least else value <= target.limit
            found.append({"impl": impl, "B": shape[0], "T": shape[1], "H": shape[2], "what": target.what,
                          "value": value, "limit": target.limit,
                          "op": ">=" if target.at_least else "<=", "met": met})
    return found


# ------------------------------------------------------------------ output
def format_markdown(report: dict) -> str:
    """The report as markdown tables (what docs/performance.md shows)."""
    lines = ["| B | T | H | impl | fwd ms median [min] | train ms median [min] | fwd / LSTM "
             "| train / LSTM | train / GRU | fwd peak MB | train peak MB |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def num(value: float | None, digits: int = 2) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    for r in report["results"]:
        for impl, e in r["impls"].items():
            lines.append(
                f"| {r['B']} | {r['T']} | {r['H']} | {impl} | "
                f"{e['forward_ms']:.1f} [{e['forward_min_ms']:.1f}] | "
                f"{e['train_ms']:.1f} [{e['train_min_ms']:.1f}] | {num(e['forward_ratio'].get('lstm'))} | "
                f"{num(e['train_ratio'].get('lstm'))} | {num(e['train_ratio'].get('gru'))} | "
                f"{num(e.get('forward_peak_mb'), 1)} | {num(e.get('train_peak_mb'), 1)} |")
        for impl, message in r["errors"].items():
            lines.append(f"| {r['B']} | {r['T']} | {r['H']} | {impl} | failed: {message[:80]} |"
                         + " |" * 6)
    lines += ["", "| B | T | H | impl | matmul fwd / train ms | recurrence fwd / train ms "
              "| recurrence GB/s fwd / train | copy GB/s | % of copy fwd / train "
              "| matmul share fwd / train | layer / matmul fwd / train |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        for impl, e in r["impls"].items():
            if "recurrence" not in e:
                continue
            rec, m, copy = e["recurrence"], r["matmul"], r.get("copy_gbps", math.nan)
            lines.append(
                f"| {r['B']} | {r['T']} | {r['H']} | {impl} | {m['forward_ms']:.1f} / {m['train_ms']:.1f} | "
                f"{rec['forward_ms']:.1f} / {rec['train_ms']:.1f} | "
                f"{rec['forward_gbps']:.1f} / {rec['train_gbps']:.1f} | {copy:.1f} | "
                f"{100 * rec['forward_gbps'] / copy:.0f} / {100 * rec['train_gbps'] / copy:.0f} | "
                f"{e['matmul_share']['forward']:.2f} / {e['matmul_share']['train']:.2f} | "
                f"{e['layer_over_matmul']['forward']:.2f} / {e['layer_over_matmul']['train']:.2f} |")
    if report["targets"]:
        lines += ["", "| B | T | H | impl | target | value | limit | met |", "|---|---|---|---|---|---:|---:|---|"]
        for t in report["targets"]:
            lines.append(f"| {t['B']} | {t['T']} | {t['H']} | {t['impl']} | {t['what']} | "
                         f"{t['value']:.3f} | {t['op']} {t['limit']:.2f} | {'yes' if t['met'] else 'NO'} |")
    if report["config"]["device"] == "cpu":
        lines += ["", f"CPU allocator: {report.get('cpu_allocator', 'not recorded')}."]
    return "\n".join(lines) + "\n"


def _sweep(results: list[dict], axis: str) -> tuple[list[dict], str]:
    """The longest run of shapes that differ only in ``axis`` ("T" or "B"), sorted along it,
    and a label naming the two fixed dimensions.  Among equally long runs, the one with the
    largest fixed dimensions: its timings are the least sensitive to noise."""
    fixed = [d for d in ("B", "T", "H") if d != axis]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(tuple(r[d] for d in fixed), []).append(r)
    key, members = max(groups.items(), key=lambda kv: (len({r[axis] for r in kv[1]}), kv[0]))
    return sorted(members, key=lambda r: r[axis]), ", ".join(f"{d}={v}" for d, v in zip(fixed, key))


def plot_report(report: dict, path: str | Path) -> None:
    """PNG: training time, forward time and training memory against T and against B; time
    lines are medians, shaded down to the minima."""
    from matplotlib.figure import Figure  # Agg canvas: no display needed

    rows = [("train_ms", "forward+backward (ms)"), ("forward_ms", "forward, no_grad (ms)"),
            ("train_peak_mb", "training peak memory (MB)")]
    fig = Figure(figsize=(12, 13), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    config = report["config"]
    fig.suptitle(f"lrn bench: {config['device']} {config['dtype']}, one layer, input size = H "
                 f"({report['machine']['cpu_model'] if config['device'] == 'cpu' else report['machine']['gpu']})")
    for col, axis in enumerate(("T", "B")):
        members, fixed = _sweep(report["results"], axis)
        for row, (key, label) in enumerate(rows):
            ax = axes[row][col]
            for impl in config["impls"]:
                points = [(r[axis], r["impls"][impl][key]) for r in members
                          if key in r["impls"].get(impl, {})]
                if not points:
                    continue
                line, = ax.plot(*zip(*points), marker="o", label=impl)
                if key.endswith("_ms"):  # shade down to the minimum: how noisy the median was
                    minima = [r["impls"][impl][key.replace("_ms", "_min_ms")] for r in members
                              if key in r["impls"].get(impl, {})]
                    ax.fill_between([x for x, _ in points], minima, [y for _, y in points],
                                    color=line.get_color(), alpha=0.2, linewidth=0)
            ax.set_xlabel(f"{axis} ({fixed})")
            ax.set_ylabel(label)
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)  # from 0, so linear growth shows as a straight line
            ax.grid(alpha=0.3)
            if len({r[axis] for r in members}) < 2:
                ax.set_title(f"only one value of {axis} in this grid", fontsize=9)
        axes[0][col].legend(fontsize=8)
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------ CLI
def add_cli(subparsers) -> None:
    """Register ``lrn bench``."""
    p = subparsers.add_parser("bench", help="time LRN against LSTM, GRU, ATR and SRU",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("grid", "targets"), default="grid",
                   help="grid: B in 16,32,64 x T in 128,512,1024 x H in 256,512; targets: the "
                        "project's target shapes for --device")
    p.add_argument("--shapes", help="'B,T,H;B,T,H;...' instead of the preset")
    p.add_argument("--cells", help=f"comma-separated, from {', '.join(CELLS)} (default: "
                                   f"{', '.join(default_cells())})")
    p.add_argument("--backends", help="comma-separated LRN backends (default: all available)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per shape (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--out", help="write the report as JSON here")
    p.add_argument("--plot", help="write a PNG of time and memory vs T and vs B here")
    p.add_argument("--markdown", help="also write the markdown tables here")
    p.set_defaults(func=run_cli)


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def run_cli(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if args.shapes:
        shapes = parse_shapes(args.shapes)
    elif args.preset == "targets":
        shapes = TARGET_SHAPES[device.type]
    else:
        shapes = list(DEFAULT_GRID)
    config = BenchConfig(shapes=shapes, cells=_split(args.cells) or default_cells(),
                         backends=_split(args.backends), device=args.device, dtype=args.dtype,
                         repeats=args.repeats, warmup=args.warmup, memory=not args.no_memory)
    report = run_bench(config)
    table = format_markdown(report)
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.plot:
        plot_report(report, args.plot)
    return 0
