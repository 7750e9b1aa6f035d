"""Latency of one recurrent step (a decoder's inner loop): lrn.LRNCell against torch's
GRUCell and LSTMCell, under torch.no_grad(), on the CPU.

    python benchmarks/cell_step.py --out benchmarks/cpu_cell_step.json --markdown benchmarks/cpu_cell_step.md

Each round calls every cell once per batch size, in a rotated order; a sample is the mean
of --calls back-to-back steps; the table gives the median sample in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

import lrn
from lrn.bench.machine import machine_info
from lrn.bench.report import emit

CELLS = ("lstm", "gru", "lrn[cpu]", "lrn[reference]")


def build(cell: str, H: int) -> torch.nn.Module:
    if cell == "lstm":
        return torch.nn.LSTMCell(H, H)
    if cell == "gru":
        return torch.nn.GRUCell(H, H)
    return lrn.LRNCell(H, H, backend=cell[len("lrn["):-1])


def step_fn(cell: str, module: torch.nn.Module, x: torch.Tensor, h: torch.Tensor):
    state = (h, h) if cell == "lstm" else h
    return lambda: module(x, state)


def run(batches: list[int], H: int, rounds: int, calls: int) -> dict:
    torch.manual_seed(0)
    steps = {}
    for B in batches:
        x, h = torch.randn(B, H), torch.randn(B, H)
        for cell in CELLS:
            steps[B, cell] = step_fn(cell, build(cell, H), x, h)
    samples: dict[tuple[int, str], list[float]] = {key: [] for key in steps}
    keys = list(steps)
    with torch.no_grad():
        for fn in steps.values():  # warm-up: numba compilation, oneDNN/MKL set-up
            for _ in range(20):
                fn()
        for r in tqdm(range(rounds), desc="rounds"):
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                fn = steps[key]
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples[key].append((time.perf_counter() - start) / calls * 1e6)
    results = [{"B": B, "H": H, "cell": cell, "median_us": statistics.median(samples[B, cell]),
                "min_us": min(samples[B, cell]), "samples_us": samples[B, cell]}
               for B, cell in keys]
    return {"machine": machine_info(torch.device("cpu")),
            "config": {"batches": batches, "H": H, "rounds": rounds, "calls": calls},
            "results": results}


def markdown(report: dict) -> str:
    by = {(r["B"], r["cell"]): r for r in report["results"]}
    H = report["config"]["H"]
    lines = [f"Step latency at H = {H}, microseconds per step (median [min]); ratio to GRUCell.", "",
             "| B | " + " | ".join(CELLS) + " |", "|---|" + "---:|" * len(CELLS)]
    for B in report["config"]["batches"]:
        gru = by[B, "gru"]["median_us"]
        cells = [f"{by[B, c]['median_us']:.1f} [{by[B, c]['min_us']:.1f}] ({by[B, c]['median_us'] / gru:.2f})"
                 for c in CELLS]
        lines.append(f"| {B} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4,16,64", help="comma-separated batch sizes")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200, help="steps per sample")
    parser.add_argument("--out", type=Path, help="JSON report")
    parser.add_argument("--markdown", type=Path, help="markdown table")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    report = run(batches, args.hidden, args.rounds, args.calls)
    emit(report, markdown(report), args.out, args.markdown)


if __name__ == "__main__":
    main()
