"""Every backend of ``lrn_scan`` against the plain-PyTorch reference, computed in float64:
outputs, final state and every gradient, over one grid of variants; and one rule for
out-of-range lengths everywhere.  Backend-specific behaviour (thread slicing, Triton
blocks, half precision, ahead-of-time compilation) is tested beside each kernel."""

from __future__ import annotations

import pytest
import torch

from lrn.functional import available_backends, lrn_scan
from lrn.ops.reference import lrn_scan_reference

# The fused backends that run on this machine's tensors (triton on CPU through its
# interpreter, as conftest.py sets up), each with the dtypes it serves here.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED_DTYPES = {"cpu": (torch.float32, torch.float64), "triton": (torch.float32,)}
FUSED = [backend for backend in available_backends() if backend in FUSED_DTYPES]
CASES = [(backend, dtype) for backend in FUSED for dtype in FUSED_DTYPES[backend]]
# float32 kernels differ from the float64 reference by rounding (and the GPU's fast exp).
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-10}
# (num_directions, reverse); a bidirectional layer ignores reverse, as the reference does
DIRECTIONS = [(1, False), (1, True), (2, False)]
# T = 6: all steps, or unsorted lengths with an empty, a length-1 and a full sequence
LENGTHS = [None, [3, 6, 1, 0, 5]]


def _device_of(backend: str) -> str:
    return "cpu" if backend == "cpu" else DEVICE


@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "no_h0"])
@pytest.mark.parametrize("lengths", LENGTHS, ids=["full", "lengths"])
@pytest.mark.parametrize("directions", DIRECTIONS, ids=["fwd", "reverse", "bidir"])
@pytest.mark.parametrize("output_gate", [False, True], ids=["lrn", "olrn"])
@pytest.mark.parametrize("activation", ["tanh", "identity"])
@pytest.mark.parametrize("backend,dtype", CASES, ids=[f"{b}-{str(d)[6:]}" for b, d in CASES])
def test_backend_matches_the_reference(backend, dtype, activation, output_gate, directions, lengths, with_h0):
    T, B, H = 6, 5, 7
    D, reverse = directions
    gen = torch.Generator().manual_seed(0)
    gates = 1.5 * torch.randn(T, B, D * (4 if output_gate else 3) * H, generator=gen, dtype=torch.float64)
    h0 = torch.randn(D, B, H, generator=gen, dtype=torch.float64) if with_h0 else None
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    grad_out = torch.randn(T, B, D * H, generator=gen, dtype=torch.float64)
    grad_h_last = torch.randn(D, B, H, generator=gen, dtype=torch.float64)
    options = dict(num_directions=D, reverse=reverse, activation=activation, output_gate=output_gate)

    def run(fn, dtype, device, **kw):
        inputs = [gates.to(device, dtype).requires_grad_()] + ([] if h0 is None else
                                                                [h0.to(device, dtype).requires_grad_()])
        out, h_last = fn(inputs[0], inputs[1] if h0 is not None else None, lens, **options, **kw)
        grads = torch.autograd.grad((out, h_last), inputs, (grad_out.to(device, dtype), grad_h_last.to(device, dtype)))
        return [t.detach().cpu().double() for t in (out, h_last, *grads)]

    expected = run(lrn_scan_reference, torch.float64, "cpu")
    got = run(lrn_scan, dtype, _device_of(backend), backend=backend)
    for name, a, b in zip(("out", "h_last", "grad_gates", "grad_h0"), got, expected):
        torch.testing.assert_close(a, b, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype], msg=name)


@pytest.mark.parametrize("lengths", [[0, 7, 2], [-1, 3, 3]], ids=["above-T", "negative"])
@pytest.mark.parametrize("backend", ["reference", *FUSED])
def test_out_of_range_lengths_are_refused_by_every_backend(backend, lengths):
    gates = torch.randn(3, 3, 3 * 4, device=_device_of(backend))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=3\]"):
        lrn_scan(gates, lengths=torch.tensor(lengths), backend=backend)


@pytest.mark.skipif("cpu" not in FUSED, reason="the cpu backend needs numba")
@pytest.mark.parametrize("with_h", [True, False], ids=["h", "no_h"])
@pytest.mark.parametrize("output_gate", [False, True], ids=["lrn", "olrn"])
@pytest.mark.parametrize("activation", ["tanh", "identity"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_the_cpu_step_kernel_matches_the_reference_step(dtype, activation, output_gate, with_h):
    """The single-step kernel (a cell's inference path, no autograd) against the reference step."""
    from lrn.ops.cpu import step_forward
    from lrn.ops.reference import lrn_step

    B, H = 5, 7
    gates = torch.randn(B, (4 if output_gate else 3) * H, dtype=torch.float64) * 3
    h = torch.randn(B, H, dtype=torch.float64) if with_h else None
    expected = lrn_step(gates, torch.zeros(B, H, dtype=torch.float64) if h is None else h, activation, output_gate)
    got = step_forward(gates.to(dtype), None if h is None else h.to(dtype), activation == "tanh", output_gate)
    assert got.dtype == dtype and got.shape == (B, H)
    torch.testing.assert_close(got.double(), expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
