"""The machine a measurement ran on: CPU, SIMD, threads, load, GPU and package versions.
Every timing file (lrn bench, lrn compare's speed.json, benchmarks/) records it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import torch


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
