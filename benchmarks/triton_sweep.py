"""Launch-parameter sweep of the Triton LRN kernels: forward + backward time at one shape for
each BLOCK_H and pipeline depth (STAGES), the launcher's own choice marked.

    python benchmarks/triton_sweep.py --shape 64,512,1024 --dtype bfloat16 --out sweep.json

On a GPU it times with CUDA events (median of --repeats after --warmup); with --device cpu
(TRITON_INTERPRET=1) it only checks that every configuration runs and matches the reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lrn.ops import triton as kernels
from lrn.ops.reference import lrn_scan_reference


def run_once(gates, grad_out, grad_h):
    out, h_last = kernels.scan_forward(gates, None, None, 1, False, True, False)
    grads = kernels.scan_backward(grad_out, grad_h, gates, out, None, None, 1, False, True, False)
    return out, h_last, grads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="64,512,1024", help="B,T,H")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", required=True, help="JSON results")
    args = parser.parse_args()
    B, T, H = (int(v) for v in args.shape.split(","))
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    gates = torch.randn(T, B, 3 * H, generator=gen).to(device, dtype)
    grad_out, grad_h = torch.randn(T, B, H, generator=gen).to(device, dtype), torch.randn(1, B, H).to(device, dtype)
    ref_out, _ = lrn_scan_reference(gates.float())
    sms = kernels._sm_count(device)
    chosen = kernels.launch_config(H, B, sms)
    original = (kernels._launch_config, kernels.PIPELINE_STAGES)
    rows = []
    try:
        for block in (32, 64, 128, 256):
            for stages in (1, 2, 3, 4):
                kernels._launch_config = lambda H_, rows_, device_, b=block: (b, kernels.num_warps_for(b))
                kernels.PIPELINE_STAGES = stages
                out, _, _ = run_once(gates, grad_out, grad_h)
                error = float((out.float() - ref_out).abs().max())
                times = []
                for i in range(args.warmup + args.repeats):
                    if device.type == "cuda":
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        run_once(gates, grad_out, grad_h)
                        end.record()
                        torch.cuda.synchronize()
                        elapsed = start.elapsed_time(end) / 1e3
                    else:
                        started = time.perf_counter()
                        run_once(gates, grad_out, grad_h)
                        elapsed = time.perf_counter() - started
                    if i >= args.warmup:
                        times.append(elapsed)
                rows.append({"BLOCK_H": block, "num_warps": kernels.num_warps_for(block), "STAGES": stages,
                             "fwd_bwd_ms": 1e3 * statistics.median(times), "max_abs_error": error,
                             "launcher_choice": (block, kernels.num_warps_for(block)) == chosen
                             and stages == original[1]})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        kernels._launch_config, kernels.PIPELINE_STAGES = original
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"shape": [B, T, H], "dtype": args.dtype, "device": str(device), "sm_count": sms,
                   "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "rows": rows}, f,
                  indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
