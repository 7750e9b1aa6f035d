"""The LRN projection through oneDNN (lrn.ops.linear) against torch's F.linear, inside a whole
LRN layer or LRNCell training step (forward + backward), to place lrn.ops.linear's threshold.

    python benchmarks/linear_paths.py --threads 2 [--keep-freed-memory]

Both paths run the same module in alternation (5 rounds, the median of each); a ratio
below 1 means F.linear is faster.  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import lrn
import lrn.modules.base as base
import lrn.modules.lrn as cell_module
from lrn.ops.linear import linear, onednn_linear

# (kind, T, B, H): cell steps, then layers from small to the benchmark targets
SHAPES = [("cell", 1, 256, 64), ("cell", 1, 64, 256), ("cell", 1, 32, 512), ("layer", 8, 32, 256),
          ("layer", 32, 32, 256), ("layer", 64, 32, 256), ("layer", 128, 32, 256), ("layer", 128, 64, 512),
          ("layer", 1024, 16, 256), ("layer", 256, 64, 512)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep-freed-memory", action="store_true", help="call lrn.keep_freed_memory() first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        lrn.keep_freed_memory()
    onednn = onednn_linear
    print(f"threads {args.threads}, keep_freed_memory {args.keep_freed_memory}: ms per training step (median)")
    print("| kind | T | B | H | rows | oneDNN | F.linear | F.linear / oneDNN |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, T, B, H in SHAPES:
        module = lrn.LRNCell(H, H) if kind == "cell" else lrn.LRN(H, H)
        x = torch.randn(*((B, H) if kind == "cell" else (T, B, H)), requires_grad=True)
        h = torch.randn(B, H) if kind == "cell" else None

        def step() -> None:
            module.zero_grad(set_to_none=True)
            x.grad = None
            (module(x, h) if kind == "cell" else module(x)[0]).sum().backward()

        calls = int(min(300, max(5, 3e8 / (T * B * H * H))))
        times: dict[str, list[float]] = {"oneDNN": [], "F.linear": []}
        for _ in range(5):
            for path in times:
                base.linear = cell_module.linear = onednn if path == "oneDNN" else F.linear
                step()
                start = time.perf_counter()
                for _ in range(calls):
                    step()
                times[path].append((time.perf_counter() - start) / calls * 1e3)
        base.linear = cell_module.linear = linear
        o, f = statistics.median(times["oneDNN"]), statistics.median(times["F.linear"])
        print(f"| {kind} | {T} | {B} | {H} | {T * B} | {o:.3f} | {f:.3f} | {f / o:.2f} |", flush=True)


if __name__ == "__main__":
    main()
