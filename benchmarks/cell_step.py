"""Latency of one recurrent step: lrn.LRNCell against torch's GRUCell and LSTMCell on the CPU,
forward alone (under torch.no_grad(), a decoder's inner loop) and forward+backward (a cell
trained step by step).

    python benchmarks/cell_step.py --out benchmarks/cpu_cell_step.json --markdown benchmarks/cpu_cell_step.md

For every hidden size, batch size and mode, the three cells are timed interleaved
(lrn.bench.interleaved: medians of --rounds samples, the order rotating); the table gives
microseconds per step and the ratio to GRUCell.  The issue's target: LRNCell <= GRUCell
everywhere.  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

import lrn
from lrn.bench.interleaved import interleaved_medians
from lrn.bench.machine import machine_info
from lrn.bench.report import emit

CELLS = ("lstm", "gru", "lrn")
MODES = ("forward", "train")


def build(cell: str, H: int) -> torch.nn.Module:
    return {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "lrn": lrn.LRNCell}[cell](H, H)


def step_fn(cell: str, mode: str, module: torch.nn.Module, x: torch.Tensor, h: torch.Tensor):
    """One step of ``module``: forward under no_grad, or forward+backward into the weights
    and the input (as inside a trained loop)."""
    state = (h, h) if cell == "lstm" else h

    def output():
        out = module(x, state)
        return out[0] if cell == "lstm" else out

    if mode == "forward":
        def forward():
            with torch.no_grad():
                output()
        return forward
    x.requires_grad_(True)

    def train():
        module.zero_grad(set_to_none=True)
        output().sum().backward()
    return train


def run(hiddens: list[int], batches: list[int], rounds: int, seconds_per_sample: float,
        progress: bool = True) -> dict:
    machine = machine_info(torch.device("cpu"))  # before: its load average is the idle machine's
    results = []
    groups = [(H, B, mode) for H in hiddens for B in batches for mode in MODES]
    for H, B, mode in tqdm(groups, desc="shapes", disable=not progress):
        torch.manual_seed(0)
        fns = {cell: step_fn(cell, mode, build(cell, H), torch.randn(B, H), torch.randn(B, H)) for cell in CELLS}
        medians = interleaved_medians(fns, rounds, seconds_per_sample)
        results.append({"H": H, "B": B, "mode": mode, "median_us": {c: 1e6 * s for c, s in medians.items()},
                        "lrn_over_gru": medians["lrn"] / medians["gru"]})
    return {"machine": machine, "config": {"hiddens": hiddens, "batches": batches, "rounds": rounds,
                                           "seconds_per_sample": seconds_per_sample,
                                           "torch_threads": torch.get_num_threads()},
            "results": results}


def markdown(report: dict) -> str:
    m, config = report["machine"], report["config"]
    worst = max(r["lrn_over_gru"] for r in report["results"])
    lines = [f"One step, microseconds (median of {config['rounds']} interleaved samples); ratio to GRUCell in "
             f"brackets. {m['cpu_model']}, {config['torch_threads']} torch thread(s), load average "
             f"{m['load_average'][0]:.2f} at the start. Largest LRNCell / GRUCell: {worst:.2f}.", "",
             "| H | B | mode | " + " | ".join(CELLS) + " |", "|---|---|---|" + "---:|" * len(CELLS)]
    for r in report["results"]:
        gru = r["median_us"]["gru"]
        cells = [f"{r['median_us'][c]:.1f} ({r['median_us'][c] / gru:.2f})" for c in CELLS]
        lines.append(f"| {r['H']} | {r['B']} | {r['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hiddens", default="64,256,512", help="hidden sizes (default %(default)s)")
    parser.add_argument("--batches", default="1,8,64,256", help="batch sizes (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=9, help="samples per cell (default %(default)s)")
    parser.add_argument("--seconds-per-sample", type=float, default=0.05, help="(default %(default)s)")
    parser.add_argument("--out", type=Path, help="JSON report")
    parser.add_argument("--markdown", type=Path, help="markdown table")
    args = parser.parse_args()
    report = run([int(h) for h in args.hiddens.split(",")], [int(b) for b in args.batches.split(",")],
                 args.rounds, args.seconds_per_sample)
    emit(report, markdown(report), args.out, args.markdown)


if __name__ == "__main__":
    main()
