"""``python -m lrn.ops.triton_aot``: compile every Triton kernel for real GPUs on a machine
that has none, and report what each compiled kernel uses.

Triton compiles for a named target (``GPUTarget("cuda", 90, 32)``) without a device, down
to PTX and a cubin; ``cuobjdump`` (bundled with Triton) reads each cubin's registers,
shared memory and local memory per thread.  Local memory is where register spills go
(these kernels have no local arrays), so ``spills`` > 0 means the kernel spills.

Every kernel (forward, backward), dtype (fp32, bf16, fp16), output-gate variant and
launch configuration the launcher can pick (BLOCK_H 16..256 with its warps) is compiled
for each architecture.  The rows the launcher picks for the target shape (B=64, T=512,
H=1024, one direction) are marked; the command exits 1 if any of them spills.

    python -m lrn.ops.triton_aot --arch 80 90 --json triton_aot.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from lrn.ops import triton as kernels

#: SMs of the reference GPU of each architecture (A100, H100), for the launcher's block choice
SM_COUNT = {80: 108, 90: 132}
POINTER = {"fp32": "*fp32", "bf16": "*bf16", "fp16": "*fp16"}
KERNELS = {"forward": kernels._lrn_fwd_kernel, "backward": kernels._lrn_bwd_kernel}
BLOCKS = (16, 32, 64, 128, 256)
#: the shape the launcher's choice is checked at: (B, T, H), bf16, one direction
TARGET_SHAPE = (64, 512, 1024)


@dataclass
class Compiled:
    kernel: str
    arch: int
    dtype: str
    config: dict
    registers: int
    spills: int
    shared_bytes: int
    picked: bool  # the launcher's choice at TARGET_SHAPE in bf16


def _signature(fn, dtype: str, constexprs: dict) -> dict[str, str]:
    sig = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ("T", "B", "H"):
            sig[name] = "i32"
        elif name == "lengths":
            sig[name] = "*i64"
        else:
            sig[name] = POINTER[dtype]
    return sig


def _cuobjdump() -> str:
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.isfile(path):
        raise RuntimeError(f"cuobjdump not found at {path} (it ships with Triton's NVIDIA backend)")
    return path


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, SHARED, LOCAL and STACK of the one function in ``cubin``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run([_cuobjdump(), "--dump-resource-usage", f.name], capture_output=True, text=True,
                              check=True)
    fields = dict(re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", done.stdout))
    if "REG" not in fields:
        raise RuntimeError(f"cuobjdump gave no resource usage: {done.stdout[-300:]}")
    return {k: int(v) for k, v in fields.items()}


def compile_kernel(kernel: str, arch: int, dtype: str, block_h: int, output_gate: bool) -> Compiled:
    """One kernel at one configuration, compiled for sm_<arch> (bidirectional, with h0,
    lengths and tanh: the variant with the most live values)."""
    fn = KERNELS[kernel]
    constexprs = dict(NUM_DIRECTIONS=2, NUM_GATES=4 if output_gate else 3, REVERSE=False, HAS_H0=True,
                      HAS_LENGTHS=True, TANH=True, OUTPUT_GATE=output_gate, BLOCK_H=block_h,
                      STAGES=kernels.PIPELINE_STAGES)
    warps = kernels.num_warps_for(block_h)
    source = ASTSource(fn=fn, signature=_signature(fn, dtype, constexprs), constexprs=constexprs)
    binary = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
    usage = resource_usage(binary.asm["cubin"])
    B, _, H = TARGET_SHAPE
    picked = dtype == "bf16" and (block_h, warps) == kernels.launch_config(H, B, SM_COUNT[arch])
    config = dict(BLOCK_H=block_h, num_warps=warps, STAGES=kernels.PIPELINE_STAGES, output_gate=output_gate)
    return Compiled(kernel, arch, dtype, config, usage["REG"], usage.get("LOCAL", 0) + usage.get("STACK", 0),
                    usage.get("SHARED", 0), picked)


def compile_all(archs: list[int], dtypes: list[str], progress: bool = True) -> list[Compiled]:
    jobs = [(k, a, d, b, og) for a in archs for k in KERNELS for d in dtypes for b in BLOCKS for og in (False, True)]
    results = []
    for i, job in enumerate(jobs, 1):
        if progress:
            print(f"\r[{i}/{len(jobs)}] {job[0]} sm_{job[1]} {job[2]} BLOCK_H={job[3]} output_gate={job[4]}",
                  end="", file=sys.stderr, flush=True)
        results.append(compile_kernel(*job))
    if progress:
        print(file=sys.stderr)
    return results


def table(results: list[Compiled]) -> str:
    lines = ["| kernel | arch | dtype | BLOCK_H | warps | output gate | registers | spill bytes | shared bytes | "
             "picked |", "|---|---:|---|---:|---:|---|---:|---:|---:|---|"]
    for r in results:
        c = r.config
        lines.append(f"| {r.kernel} | sm_{r.arch} | {r.dtype} | {c['BLOCK_H']} | {c['num_warps']} | "
                     f"{'yes' if c['output_gate'] else 'no'} | {r.registers} | {r.spills} | {r.shared_bytes} | "
                     f"{'target' if r.picked else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrn.ops.triton_aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=sorted(SM_COUNT),
                        help="compute capabilities to compile for (default: 80 90)")
    parser.add_argument("--dtype", nargs="+", default=list(POINTER), choices=list(POINTER))
    parser.add_argument("--json", metavar="FILE", help="also write the results as a JSON list")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    results = compile_all(args.arch, args.dtype, progress=not args.no_progress)
    print(table(results), end="")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    spilled = [r for r in results if r.picked and r.spills]
    if spilled:
        print(f"{len(spilled)} configuration(s) the launcher picks at {TARGET_SHAPE} spill", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
