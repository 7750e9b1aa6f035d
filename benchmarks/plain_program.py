"""Does a plain program get the speed `lrn bench` reports?  LRN's training step timed in fresh
processes that differ only in the allocator setting.

    python benchmarks/plain_program.py --out benchmarks/cpu_plain_program.json --markdown benchmarks/cpu_plain_program.md

Variants, each a new Python process that imports torch and lrn, builds one layer and times
its forward+backward (median of --steps after --warmup):

- plain: nothing special (from the first large kernel buffer on, lrn keeps freed memory);
- explicit: calls ``lrn.keep_freed_memory()`` first, as the ``lrn`` command and ``lrn bench`` do;
- glibc default: ``LRN_KEEP_FREED_MEMORY=0``, every large block page-faulted in anew.

The processes alternate (--rounds of each, in rotated order) so that a change in the
machine's load falls on every variant; the table gives the median over rounds and the
ratio to "explicit".  The issue's target: plain within 5% of explicit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

from lrn.bench.machine import machine_info
from lrn.bench.report import emit

VARIANTS = {
    "plain": ({}, False),
    "explicit": ({}, True),
    "glibc default": ({"LRN_KEEP_FREED_MEMORY": "0"}, False),
}

CHILD = r"""
import json, statistics, sys, time
import torch, lrn
B, T, H, threads, warmup, steps, explicit = json.loads(sys.argv[1])
if explicit:
    lrn.keep_freed_memory()
torch.set_num_threads(threads)
torch.manual_seed(0)
layer = lrn.LRN(H, H)
x = torch.randn(T, B, H, requires_grad=True)
times = []
for i in range(warmup + steps):
    start = time.perf_counter()
    layer.zero_grad(set_to_none=True)
    layer(x)[0].sum().backward()
    times.append(time.perf_counter() - start)
from lrn.allocator import freed_memory_kept
print(json.dumps({"median_s": statistics.median(times[warmup:]), "freed_memory_kept": freed_memory_kept()}))
"""


def run_child(variant: str, shape: tuple[int, int, int], threads: int, warmup: int, steps: int) -> dict:
    env_extra, explicit = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k != "LRN_KEEP_FREED_MEMORY"} | env_extra
    args = json.dumps([*shape, threads, warmup, steps, explicit])
    done = subprocess.run([sys.executable, "-c", CHILD, args], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(shape: tuple[int, int, int], threads: int, rounds: int, warmup: int, steps: int) -> dict:
    machine = machine_info(torch.device("cpu"))
    names = list(VARIANTS)
    samples: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(run_child(name, shape, threads, warmup, steps))
    medians = {name: statistics.median(s["median_s"] for s in samples[name]) for name in names}
    return {"machine": machine, "config": {"B": shape[0], "T": shape[1], "H": shape[2], "threads": threads,
                                           "rounds": rounds, "warmup": warmup, "steps": steps},
            "samples": samples, "median_s": medians,
            "ratio_to_explicit": {name: medians[name] / medians["explicit"] for name in names},
            "freed_memory_kept": {name: samples[name][0]["freed_memory_kept"] for name in names}}


def markdown(report: dict) -> str:
    c, m = report["config"], report["machine"]
    lines = [f"LRN({c['H']}, {c['H']}) forward+backward at B={c['B']}, T={c['T']}, {c['threads']} torch thread(s), "
             f"each variant a fresh process ({c['rounds']} rounds, median of {c['steps']} steps after "
             f"{c['warmup']}); {m['cpu_model']}, load average {m['load_average'][0]:.2f} at the start.", "",
             "| variant | ms per step | ratio to explicit | freed memory kept at the end |", "|---|---:|---:|---|"]
    for name in VARIANTS:
        lines.append(f"| {name} | {1e3 * report['median_s'][name]:.1f} | {report['ratio_to_explicit'][name]:.3f} | "
                     f"{report['freed_memory_kept'][name]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="64,256,512", help="B,T,H (default %(default)s, a benchmark target)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="processes per variant (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="(default %(default)s)")
    parser.add_argument("--steps", type=int, default=7, help="(default %(default)s)")
    parser.add_argument("--out", help="JSON report")
    parser.add_argument("--markdown", help="markdown table")
    args = parser.parse_args()
    B, T, H = (int(v) for v in args.shape.split(","))
    report = run((B, T, H), args.threads, args.rounds, args.warmup, args.steps)
    emit(report, markdown(report), args.out, args.markdown)


if __name__ == "__main__":
    main()
