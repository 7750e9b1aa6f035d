"""A/B timing of two source trees of lrn (e.g. a commit checked out with `git worktree add`):
run it once per tree, alternating, and compare the medians.

    python benchmarks/ab_tree.py /path/to/tree      # prints one JSON line

Measures (median of 15 after 3 warm-ups): ``lrn_recurrence(backend="cpu")`` forward + backward
at three shapes with 1 and 2 torch threads, and one LRN layer's training step (256 -> 256,
T=128, B=32) in float32 and bfloat16.
"""

import json
import statistics
import sys
import time

sys.path.insert(0, sys.argv[1])

import torch  # noqa: E402

import lrn  # noqa: E402
from lrn.functional import lrn_recurrence  # noqa: E402

assert lrn.__file__.startswith(sys.argv[1]), f"imported {lrn.__file__}, not the tree {sys.argv[1]}"


def median_time(step, repeats=15, warmup=3):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


torch.manual_seed(0)
result = {}
for threads in (1, 2):
    torch.set_num_threads(threads)
    for T, B, H in ((256, 64, 512), (64, 16, 256), (512, 1, 256)):
        q, k, v = (torch.randn(T, B, H, requires_grad=True) for _ in range(3))
        result[f"scan t{threads} {T}x{B}x{H}"] = median_time(
            lambda: lrn_recurrence(q, k, v, backend="cpu")[0].sum().backward())
torch.set_num_threads(2)
for dtype in (torch.float32, torch.bfloat16):
    layer = lrn.LRN(256, 256).to(dtype)
    x = torch.randn(128, 32, 256, dtype=dtype, requires_grad=True)
    result[f"layer {dtype}"] = median_time(lambda: layer(x)[0].float().sum().backward(), repeats=10)
print(json.dumps(result))
