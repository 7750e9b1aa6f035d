"""How much LRN and torch's GRU slow down when other processes keep every core busy.

    python benchmarks/contention.py --out benchmarks/cpu_contention.json --markdown benchmarks/cpu_contention.md

For each workload (a layer's training step at a benchmark shape, a cell's training step, a
decoding step at batch 1) and each torch thread count, every implementation is timed
interleaved twice: on the idle machine, then beside ``--hogs`` CPU-bound processes (pure
Python busy loops, one per core by default).  The slowdown is the busy median over the idle
median; the issue's target is LRN's slowdown at most 2x GRU's.  Run it on an otherwise idle
machine: the "idle" phase must be idle.
"""

from __future__ import annotations

import argparse
import os

import torch

import lrn
from lrn.bench.interleaved import busy_cores, interleaved_medians
from lrn.bench.machine import machine_info
from lrn.bench.report import emit


def workloads() -> dict[str, dict[str, callable]]:
    """name -> {impl: a callable running one step}."""
    torch.manual_seed(0)
    out = {}
    x = torch.randn(128, 32, 256, requires_grad=True)  # (T, B, H): a benchmark target shape
    layers = {"lrn": lrn.LRN(256, 256), "gru": torch.nn.GRU(256, 256)}

    def layer_step(module):
        def run():
            module.zero_grad(set_to_none=True)
            module(x)[0].sum().backward()
        return run

    out["layer train (B=32, T=128, H=256)"] = {k: layer_step(m) for k, m in layers.items()}
    xc, hc = torch.randn(256, 64, requires_grad=True), torch.randn(256, 64)
    cells = {"lrn": lrn.LRNCell(64, 64), "gru": torch.nn.GRUCell(64, 64)}

    def cell_step(module):
        def run():
            module.zero_grad(set_to_none=True)
            module(xc, hc).sum().backward()
        return run

    out["cell train (B=256, H=64)"] = {k: cell_step(m) for k, m in cells.items()}
    x1, h1 = torch.randn(1, 256), torch.randn(1, 256)
    decoders = {"lrn": lrn.LRNCell(256, 256), "gru": torch.nn.GRUCell(256, 256)}

    def decode_step(module):
        def run():
            with torch.no_grad():
                module(x1, h1)
        return run

    out["cell decode (B=1, H=256)"] = {k: decode_step(m) for k, m in decoders.items()}
    return out


def run(threads_list: list[int], hogs: int, rounds: int, seconds_per_sample: float) -> dict:
    rows = []
    before = machine_info(torch.device("cpu"))
    for threads in threads_list:
        torch.set_num_threads(threads)
        for name, fns in workloads().items():
            idle = interleaved_medians(fns, rounds, seconds_per_sample)
            with busy_cores(hogs):
                busy = interleaved_medians(fns, rounds, seconds_per_sample)
            slowdown = {impl: busy[impl] / idle[impl] for impl in fns}
            rows.append({"workload": name, "threads": threads, "idle_s": idle, "busy_s": busy, "slowdown": slowdown,
                         "lrn_slowdown_over_gru": slowdown["lrn"] / slowdown["gru"]})
    return {"machine": before, "hogs": hogs, "rounds": rounds, "rows": rows}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"{m['cpu_model']}, {m['usable_cpus']} CPUs; busy = {report['hogs']} CPU-bound processes beside the "
             f"benchmark; medians of {report['rounds']} interleaved samples.", "",
             "| workload | torch threads | lrn idle ms | lrn busy ms | gru idle ms | gru busy ms | lrn slowdown "
             "| gru slowdown | lrn / gru slowdown |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        i, b, s = r["idle_s"], r["busy_s"], r["slowdown"]
        lines.append(f"| {r['workload']} | {r['threads']} | {1e3 * i['lrn']:.3f} | {1e3 * b['lrn']:.3f} | "
                     f"{1e3 * i['gru']:.3f} | {1e3 * b['gru']:.3f} | {s['lrn']:.2f} | {s['gru']:.2f} | "
                     f"{r['lrn_slowdown_over_gru']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="torch thread counts (default %(default)s)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count(), help="busy processes (default: one per CPU)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds-per-sample", type=float, default=0.05)
    parser.add_argument("--out")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    report = run([int(t) for t in args.threads.split(",")], args.hogs, args.rounds, args.seconds_per_sample)
    emit(report, markdown(report), args.out, args.markdown)


if __name__ == "__main__":
    main()
