"""Inference latency of an LRN model in eager PyTorch and in ONNX Runtime, beside nn.GRU's,
for docs/deploy.md.

    python benchmarks/deploy_latency.py --out benchmarks/cpu_deploy.json --markdown benchmarks/cpu_deploy.md

The model is a small sequence encoder (a 2-layer recurrent stack, input 128, hidden 256,
read out by a linear layer at every step).  Each cell is exported once with a dynamic
sequence length and batch and run by onnxruntime at the
benchmark's shapes (nn.GRU with the TorchScript-based exporter: see ``export``); eager runs
under torch.inference_mode().  Every round calls every
(implementation, shape) once in a rotated order; a sample is the mean of --calls
back-to-back calls; the table gives the median sample in milliseconds, and the ONNX
outputs' largest difference from eager.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import lrn
from lrn.bench.machine import machine_info

INPUT, HIDDEN, LAYERS = 128, 256, 2


class Encoder(torch.nn.Module):
    def __init__(self, cell: str):
        super().__init__()
        self.rnn = lrn.make_rnn(cell, INPUT, HIDDEN, num_layers=LAYERS)
        self.out = torch.nn.Linear(HIDDEN, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B, INPUT) -> (T, B, 16)
        return self.out(self.rnn(x)[0])


def export(model: Encoder, cell: str, path: Path) -> None:
    """LRN through the dynamo exporter (a Scan over time); nn.GRU through the TorchScript-based
    one, which maps it to ONNX's GRU op (torch 2.13's dynamo export of nn.GRU bakes the example
    length into a Reshape, so its graph fails at any other T)."""
    example = (torch.randn(20, 4, INPUT),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cell == "gru":
            torch.onnx.export(model, example, str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "T", 1: "B"}, "y": {0: "T", 1: "B"}})
        else:
            dims = {0: torch.export.Dim("T", min=1, max=4096), 1: torch.export.Dim("B", min=1, max=1024)}
            torch.onnx.export(model, example, str(path), dynamo=True, dynamic_shapes=(dims,), input_names=["x"],
                              output_names=["y"])


def run(shapes: list[tuple[int, int]], rounds: int, calls: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    impls, errors = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for cell in ("lrn", "gru"):
            torch.manual_seed(0)
            model = Encoder(cell).eval()
            impls[f"{cell} eager"] = lambda x, m=model: m(x)
            path = Path(scratch) / f"{cell}.onnx"
            export(model, cell, path)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            impls[f"{cell} onnxruntime"] = lambda x, s=session: torch.from_numpy(s.run(None, {"x": x.numpy()})[0])
            for T, B in shapes:  # the exported graph runs at every shape and equals eager
                x = torch.randn(T, B, INPUT)
                with torch.inference_mode():
                    want = model(x)
                errors[f"{cell} T={T} B={B}"] = float((impls[f"{cell} onnxruntime"](x) - want).abs().max())
    inputs = {shape: torch.randn(shape[0], shape[1], INPUT) for shape in shapes}
    samples = {(name, shape): [] for name in impls for shape in shapes}
    keys = list(samples)
    with torch.inference_mode():
        for r in range(rounds + 1):  # round 0 warms up
            for name, shape in keys[r % len(keys):] + keys[:r % len(keys)]:
                start = time.perf_counter()
                for _ in range(calls):
                    impls[name](inputs[shape])
                if r:
                    samples[(name, shape)].append((time.perf_counter() - start) / calls)
    rows = [{"impl": name, "T": shape[0], "B": shape[1], "median_ms": 1e3 * statistics.median(v),
             "min_ms": 1e3 * min(v)} for (name, shape), v in samples.items()]
    return {"machine": machine_info(torch.device("cpu")), "threads": threads, "rounds": rounds, "calls": calls,
            "model": {"input": INPUT, "hidden": HIDDEN, "layers": LAYERS}, "rows": rows,
            "max_abs_error_onnx_vs_eager": errors,
            "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__}}


def markdown(report: dict) -> str:
    m = report["model"]
    lines = [f"Encoder: {m['layers']}-layer recurrent stack, input {m['input']}, hidden {m['hidden']}, linear "
             f"read-out; {report['threads']} thread(s); median of {report['rounds']} samples, each the mean of "
             f"{report['calls']} calls ({report['machine']['cpu_model']}, load average "
             f"{report['machine']['load_average'][0]:.2f}).", "",
             "| T | B | lrn eager ms | lrn onnxruntime ms | gru eager ms | gru onnxruntime ms "
             "| lrn ort / gru ort |", "|---:|---:|---:|---:|---:|---:|---:|"]
    table = {(r["impl"], r["T"], r["B"]): r["median_ms"] for r in report["rows"]}
    for T, B in sorted({(r["T"], r["B"]) for r in report["rows"]}, key=lambda s: (s[1], s[0])):
        v = {impl: table[(impl, T, B)] for impl in ("lrn eager", "lrn onnxruntime", "gru eager", "gru onnxruntime")}
        lines.append(f"| {T} | {B} | {v['lrn eager']:.2f} | {v['lrn onnxruntime']:.2f} | {v['gru eager']:.2f} | "
                     f"{v['gru onnxruntime']:.2f} | {v['lrn onnxruntime'] / v['gru onnxruntime']:.2f} |")
    worst = max(report["max_abs_error_onnx_vs_eager"].values())
    lines += ["", f"Largest |ONNX Runtime - eager| over every cell and shape: {worst:.1e}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="1,1;50,1;50,32;200,32", help="'T,B;...' (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--out", help="JSON report")
    parser.add_argument("--markdown", help="the table as markdown")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in item.split(",")) for item in args.shapes.split(";") if item]
    report = run(shapes, args.rounds, args.calls, args.threads)
    text = markdown(report)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
