"""Triton LRN kernels (lrn/ops/triton.py) against lrn_scan_reference: outputs, h_last,
grad_gates and grad_h0. Without CUDA they run under the Triton interpreter on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# The interpreter must be chosen before triton is imported (tests/conftest.py may
# already have done this; setdefault keeps its choice).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed: Triton kernel tests skipped")

from lrn.ops import triton as triton_ops  # noqa: E402
from lrn.ops.reference import lrn_scan_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# The kernel keeps its state in fp32 but reads and writes the dtype (and recomputes
# from the rounded outputs in backward): about two units of the dtype's rounding
# (fp16 eps ~1e-3, bf16 ~8e-3); fp32 leaves room for the GPU's approximate exp.
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
LRN_TANH = (1, False, True, False)  # num_directions, reverse, tanh, output_gate


def run_case(T, B, H, *, D=1, reverse=False, tanh=True, og=False, lengths=None, h0=False,
             dtype=torch.float32, seed=0):
    """Run kernel and reference on the same random inputs and compare everything."""
    gen = torch.Generator().manual_seed(seed)
    G = 4 if og else 3
    gates = (1.5 * torch.randn(T, B, D * G * H, generator=gen)).to(dtype)
    state0 = torch.randn(D, B, H, generator=gen).to(dtype) if h0 else None
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    grad_out = torch.randn(T, B, D * H, generator=gen).to(dtype)
    grad_h_last = torch.randn(D, B, H, generator=gen).to(dtype)

    # Reference in float64 from the same (rounded) inputs.
    ref_gates = gates.double().requires_grad_()
    ref_h0 = None if state0 is None else state0.double().requires_grad_()
    ref_out, ref_h_last = lrn_scan_reference(
        ref_gates, ref_h0, lens, num_directions=D, reverse=reverse,
        activation="tanh" if tanh else "identity", output_gate=og)
    wrt = [ref_gates] + ([ref_h0] if h0 else [])
    ref_grads = torch.autograd.grad((ref_out, ref_h_last), wrt,
                                    (grad_out.double(), grad_h_last.double()))

    dev = lambda x: None if x is None else x.to(DEVICE)  # noqa: E731
    args = (dev(lens), D, reverse, tanh, og)
    out, h_last = triton_ops.scan_forward(dev(gates), dev(state0), *args)
    grad_gates, grad_h0 = triton_ops.scan_backward(
        dev(grad_out), dev(grad_h_last), dev(gates), out, dev(state0), *args)

    tol = TOLERANCE[dtype]
    assert out.dtype == dtype and h_last.dtype == dtype and grad_gates.dtype == dtype
    torch.testing.assert_close(out.cpu().double(), ref_out.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(h_last.cpu().double(), ref_h_last.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(grad_gates.cpu().double(), ref_grads[0], atol=tol, rtol=tol)
    if h0:
        torch.testing.assert_close(grad_h0.cpu().double(), ref_grads[1], atol=tol, rtol=tol)
    else:
        assert grad_h0 is None


# Half precision on the variants that exercise every index: lengths, h0, both directions, oLRN.
# (The fp32 grid, shared with every backend, is tests/ops/test_scan_parity.py.)
HALF_CASES = {
    "reverse-lengths-h0": dict(T=5, B=3, H=8, reverse=True, lengths=[5, 1, 3], h0=True),
    "bidir-lengths-h0": dict(T=5, B=3, H=8, D=2, lengths=[4, 5, 1], h0=True),
    "olrn-lengths-h0": dict(T=5, B=3, H=8, og=True, lengths=[3, 5, 1], h0=True),
}


def test_several_h_blocks(monkeypatch):
    # H=20 with 16-unit blocks: two programs per row, the second one 4/16 masked.
    monkeypatch.setattr(triton_ops, "_launch_config", lambda H, rows, device: (16, 1))
    run_case(T=4, B=2, H=20, D=2, og=True, lengths=[4, 2], h0=True)
    run_case(T=3, B=1, H=20, reverse=True, tanh=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", HALF_CASES)
def test_matches_reference_half(name, dtype):
    run_case(**HALF_CASES[name], dtype=dtype)


def test_mixed_precision_h0_keeps_its_dtype():
    gates = torch.randn(3, 2, 3 * 4, device=DEVICE).to(torch.bfloat16)
    h0 = torch.randn(1, 2, 4, device=DEVICE)  # fp32 state with bf16 gates
    out, h_last = triton_ops.scan_forward(gates, h0, None, *LRN_TANH)
    _, grad_h0 = triton_ops.scan_backward(torch.ones_like(out), torch.ones_like(h_last),
                                          gates, out, h0, None, *LRN_TANH)
    assert h_last.dtype == torch.bfloat16 and grad_h0.dtype == torch.float32
    ref_out, _ = lrn_scan_reference(gates.float(), h0)
    torch.testing.assert_close(out.float().cpu(), ref_out.cpu(), atol=3e-2, rtol=3e-2)


def test_bad_inputs_raise_clear_errors():
    gates = torch.randn(3, 2, 12, device=DEVICE)
    with pytest.raises(ValueError, match="h0 must have shape"):
        triton_ops.scan_forward(gates, torch.zeros(1, 2, 5, device=DEVICE), None, *LRN_TANH)
    with pytest.raises(ValueError, match="lengths must have shape"):
        triton_ops.scan_forward(gates, None, torch.ones(3, dtype=torch.int64), *LRN_TANH)
    with pytest.raises(ValueError, match="not a multiple of D\\*G"):
        triton_ops.scan_forward(gates, None, None, 2, False, True, True)  # width 12, D*G = 8
    with pytest.raises(ValueError, match="gates dtype"):
        triton_ops.scan_forward(gates.double(), None, None, *LRN_TANH)


def test_no_recompilation_per_sequence_length():
    if INTERPRETED or DEVICE != "cuda":
        pytest.skip("compile cache exists only for compiled kernels on CUDA")
    kernel = triton_ops._lrn_fwd_kernel

    def compiled_variants():
        return sum(len(cache[0]) for cache in kernel.device_caches.values())

    def run(T):
        gates = torch.randn(T, 5, 3 * 64, device=DEVICE)
        triton_ops.scan_forward(gates, None, torch.full((5,), T, dtype=torch.int64), *LRN_TANH)

    run(7)
    before = compiled_variants()
    run(16)  # would be specialised as divisible by 16 if T were
    run(33)
    assert compiled_variants() == before


# Compiles both kernels for an H100 (sm_90) without a GPU: triton.compile runs the
# whole compiled path (code generation, pipelining, ptxas) that the interpreter skips.
# In a fresh process, since the kernels here were created for the interpreter.
AOT_COMPILE = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from lrn.ops import triton as ops

dtype, on = sys.argv[1], sys.argv[2] == "on"
flags = dict(NUM_DIRECTIONS=2 if on else 1, NUM_GATES=4 if on else 3, REVERSE=not on,
             HAS_H0=on, HAS_LENGTHS=on, TANH=on, OUTPUT_GATE=on, BLOCK_H=64,
             STAGES=ops.PIPELINE_STAGES)
optional = {"h0": on, "grad_h0": on, "lengths": on}
for kernel in (ops._lrn_fwd_kernel, ops._lrn_bwd_kernel):
    signature, constants = {}, dict(flags)
    for name in kernel.arg_names:
        if name in flags or not optional.get(name, True):
            signature[name] = "constexpr"
            constants.setdefault(name, None)
        elif name in ("T", "B", "H"):
            signature[name] = "i32"
        else:
            special = {"lengths": "*i64", "h0": "*fp32", "grad_h0": "*fp32"}
            signature[name] = special.get(name, "*" + dtype)
    # What a launch with 16-byte aligned tensors and H % 16 == 0 gets.
    attrs = {(kernel.arg_names.index(n),): [["tt.divisibility", 16]]
             for n, s in signature.items() if s[0] == "*" or n == "H"}
    triton.compile(ASTSource(kernel, signature, constants, attrs),
                   target=GPUTarget("cuda", 90, 32), options={"num_warps": 1})
"""


@pytest.mark.parametrize("dtype,flags", [("bf16", "on"), ("fp32", "off")])
def test_kernels_compile_for_h100(dtype, flags):
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        pytest.skip("triton has no NVIDIA backend: cannot compile for sm_90")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", AOT_COMPILE, dtype, flags], env=env,
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
