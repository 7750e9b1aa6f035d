"""The numba CPU kernels (lrn.ops.cpu) against the plain-PyTorch reference.

Every case compares out, h_last, grad_gates and grad_h0 (random upstream gradients on
both outputs) with lrn_scan_reference + autograd.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch

from lrn.ops import cpu, fused  # noqa: F401  (fused registers torch.ops.lrn.scan)
from lrn.ops.reference import lrn_scan_reference

TOLERANCES = {torch.float32: dict(rtol=1e-5, atol=1e-5),
              torch.float64: dict(rtol=1e-10, atol=1e-12)}


def check_against_reference(T, B, H, *, num_directions=1, reverse=False, tanh=True,
                            output_gate=False, lengths=None, with_h0=True, dtype=torch.float32,
                            seed=0, scale=1.5, gates=None):
    gen = torch.Generator().manual_seed(seed)
    width = num_directions * (4 if output_gate else 3) * H
    if gates is None:
        gates = torch.randn(T, B, width, generator=gen, dtype=dtype) * scale
    h0 = torch.randn(num_directions, B, H, generator=gen, dtype=dtype) if with_h0 else None
    lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)

    ref_gates = gates.detach().clone().requires_grad_(True)
    ref_h0 = None if h0 is None else h0.clone().requires_grad_(True)
    ref_out, ref_h_last = lrn_scan_reference(
        ref_gates, ref_h0, lengths, num_directions=num_directions, reverse=reverse,
        activation="tanh" if tanh else "identity", output_gate=output_gate)
    grad_out = torch.randn(ref_out.shape, generator=gen, dtype=dtype)
    grad_h_last = torch.randn(ref_h_last.shape, generator=gen, dtype=dtype)
    inputs = [ref_gates] + ([] if ref_h0 is None else [ref_h0])
    ref_grads = torch.autograd.grad(
        (ref_out * grad_out).sum() + (ref_h_last * grad_h_last).sum(), inputs)

    h0_before = None if h0 is None else h0.clone()
    grad_h_last_before = grad_h_last.clone()
    out, h_last = cpu.scan_forward(gates, h0, lengths, num_directions, reverse, tanh, output_gate)
    grad_gates, grad_h0 = cpu.scan_backward(grad_out, grad_h_last, gates, out, h0, lengths,
                                            num_directions, reverse, tanh, output_gate)

    tol = TOLERANCES[dtype]
    assert out.dtype == dtype and h_last.dtype == dtype and grad_gates.dtype == dtype
    torch.testing.assert_close(out, ref_out.detach(), **tol)
    torch.testing.assert_close(h_last, ref_h_last.detach(), **tol)
    torch.testing.assert_close(grad_gates, ref_grads[0], **tol)
    if h0 is None:
        assert grad_h0 is None
    else:
        torch.testing.assert_close(grad_h0, ref_grads[1], **tol)
        torch.testing.assert_close(h0, h0_before, rtol=0, atol=0)  # inputs are not written
    torch.testing.assert_close(grad_h_last, grad_h_last_before, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("num_directions", [1, 2])
@pytest.mark.parametrize("H", [37, 50])
def test_batch_one_parallel(monkeypatch, dtype, num_directions, H):
    # Tiny shapes normally run on one thread; force the thread pool so that, with B*D below
    # the thread count, H is cut into chunks (the last one partial).
    monkeypatch.setattr(cpu, "_PARALLEL_MIN_ELEMENTS", 0)
    check_against_reference(5, 1, H, num_directions=num_directions, output_gate=True,
                            dtype=dtype, lengths=[4])
    check_against_reference(5, 5, H, num_directions=num_directions, dtype=dtype,
                            lengths=[5, 2, 4, 1, 5])


@pytest.mark.parametrize("pairs,hidden,threads", [
    (1, 1, 2), (1, 37, 2), (1, 256, 2), (1, 256, 16), (2, 50, 8), (64, 512, 2), (3, 40, 1)])
def test_chunking_covers_hidden(pairs, hidden, threads):
    n_chunks, chunk = cpu._chunking(pairs, hidden, threads)
    assert chunk % 16 == 0 and 1 <= n_chunks <= max(1, math.ceil(hidden / 16))
    assert (n_chunks - 1) * chunk < hidden <= n_chunks * chunk
    if pairs >= threads:
        assert n_chunks == 1
    elif hidden >= 16 * threads:
        assert pairs * n_chunks >= threads  # every thread gets work


@pytest.mark.parametrize("lengths", [np.arange(12, 0, -1), np.full(7, 5), np.array([0, 0, 3]),
                                     np.zeros(4, dtype=np.int64)],
                         ids=["sorted", "equal", "zeros-first", "all-zero"])
@pytest.mark.parametrize("slices", [1, 2, 3])
def test_batch_slices_balance_work(lengths, slices):
    bounds = cpu._batch_slices(lengths, slices)
    assert bounds.dtype == np.int64 and len(bounds) == slices + 1
    assert bounds[0] == 0 and bounds[-1] == len(lengths) and np.all(np.diff(bounds) >= 0)
    work = [lengths[lo:hi].sum() for lo, hi in zip(bounds[:-1], bounds[1:])]
    # each slice is within one sequence of its fair share
    assert max(work) - lengths.sum() / slices <= lengths.max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_zero_length_sequence_keeps_state(dtype):
    check_against_reference(4, 3, 6, num_directions=2, lengths=[0, 4, 2], dtype=dtype)


@pytest.mark.parametrize("output_gate", [False, True], ids=["lrn", "olrn"])
def test_saturated_gates_float32(output_gate):
    # |gates| up to ~40: sigmoid/tanh saturate, exercising the clamp of the rational tanh.
    check_against_reference(8, 3, 20, output_gate=output_gate, scale=12.0, seed=3)


def test_longer_sequence_float32():
    check_against_reference(40, 3, 33, num_directions=2, lengths=[40, 17, 1], seed=5)


def test_non_contiguous_gates():
    gates = torch.randn(4, 6, 9, dtype=torch.float64).transpose(0, 1)  # (T=6, B=4, 9)
    assert not gates.is_contiguous()
    check_against_reference(6, 4, 3, gates=gates, dtype=torch.float64)


def test_nan_propagates():
    gates = torch.randn(3, 2, 12)
    gates[1, 0, 3] = float("nan")  # k gate (H=3) of t=1, b=0, h=0
    out, h_last = cpu.scan_forward(gates, None, None, 1, False, True, True)
    ref_out, _ = lrn_scan_reference(gates, output_gate=True)
    assert torch.equal(out.isnan(), ref_out.isnan())
    assert out[1, 0, 0].isnan() and not out[0].isnan().any()


def _vectorised(fn):
    @numba.njit
    def apply(x):
        y = np.empty_like(x)
        for j in range(x.size):
            y[j] = fn(x[j])
        return y
    return apply


def test_float32_activations_accuracy():
    x = np.concatenate([np.linspace(-20, 20, 400001), np.geomspace(1e-30, 1.0, 2001),
                        -np.geomspace(1e-30, 1.0, 2001), [0.0]]).astype(np.float32)
    exact = x.astype(np.float64)
    tanh = _vectorised(cpu._tanh)(x)
    sigmoid = _vectorised(cpu._sigmoid)(x)
    assert tanh.dtype == np.float32 and sigmoid.dtype == np.float32
    tanh_rel = np.abs(tanh - np.tanh(exact)) / np.maximum(np.abs(np.tanh(exact)), 1e-38)
    assert tanh_rel.max() < 4e-7
    assert np.abs(sigmoid - 1 / (1 + np.exp(-exact))).max() < 2e-7
    assert np.isnan(_vectorised(cpu._tanh)(np.array([np.nan], np.float32))).all()


def test_float32_activations_saturate_exactly_over_the_whole_range():
    big = np.array([9.0, 18.0, 1e4, 1e8, 3e38, np.inf], np.float32)
    x = np.concatenate([big, -big])
    np.testing.assert_array_equal(_vectorised(cpu._tanh)(x), np.sign(x))
    # sigmoid(x) = (1 + tanh(x/2)) / 2: exactly 0 and 1 once tanh is exactly -1 and 1
    np.testing.assert_array_equal(_vectorised(cpu._sigmoid)(x[1:6]), np.ones(5, np.float32))
    np.testing.assert_array_equal(_vectorised(cpu._sigmoid)(x[7:]), np.zeros(5, np.float32))


def _kernel_and_reference(gates, reference_dtype):
    """(out, grad_gates) of the fused cpu op and of the reference in ``reference_dtype``,
    for the loss out.sum()."""
    exact = gates.detach().to(reference_dtype, copy=True).requires_grad_(True)
    ref_out, _ = lrn_scan_reference(exact)
    ref_out.sum().backward()
    ours = gates.detach().clone().requires_grad_(True)
    out, _ = torch.ops.lrn.scan(ours, None, None, 1, False, True, False, "cpu")
    out.sum().backward()
    return (out, ours.grad), (ref_out, exact.grad)


@pytest.mark.parametrize("scale", [1e3, 1e8, 1e30])
def test_huge_gates_match_float64(scale):
    # A sigmoid of -1e8 that is 1e-7 instead of 0, times a v of 1e8, was an error of 10.
    gen = torch.Generator().manual_seed(7)
    gates = torch.randn(6, 3, 3 * 8, generator=gen) * scale
    (out, grad), (ref_out, ref_grad) = _kernel_and_reference(gates, torch.float64)
    assert (out.double() - ref_out).abs().max() < 1e-3
    assert torch.isfinite(grad).all()
    assert (grad.double() - ref_grad).abs().max() < 1e-3


@pytest.mark.parametrize("special", [float("inf"), float("-inf"), float("nan")])
def test_infinities_propagate_as_in_the_reference(special):
    gates = torch.randn(5, 3, 3 * 8, generator=torch.Generator().manual_seed(1))
    gates[2, 1, [3, 11, 19]] = special  # q, k and v of one unit: sigmoid(-inf) * -inf is NaN
    (out, grad), (ref_out, ref_grad) = _kernel_and_reference(gates, torch.float32)
    assert torch.equal(out.isnan(), ref_out.isnan()) and torch.equal(out.isinf(), ref_out.isinf())
    assert torch.equal(grad.isnan(), ref_grad.isnan())
    finite = ref_out.isfinite()
    torch.testing.assert_close(out[finite], ref_out[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gates,h0,lengths,message", [
    (torch.zeros(2, 1, 6, dtype=torch.float16), None, None, "float32 or float64"),
    (torch.zeros(2, 1, 7), None, None, "multiple of 3"),
    (torch.zeros(2, 6), None, None, r"\(T, B, D\*G\*H\)"),
    (torch.zeros(2, 1, 6), torch.zeros(1, 2, 2), None, "h0 must have shape"),
    (torch.zeros(2, 1, 6), None, torch.tensor([1, 2]), "lengths must have shape"),
    (torch.zeros(2, 1, 6), None, torch.tensor([3]), r"lengths must lie in \[0, T=2\]"),
    (torch.zeros(2, 1, 6), None, torch.tensor([-1]), "lengths must lie in"),
])
def test_bad_input_raises(gates, h0, lengths, message):
    with pytest.raises(ValueError, match=message):
        cpu.scan_forward(gates, h0, lengths, 1, False, True, False)


def test_bad_gradient_shape_raises():
    gates = torch.zeros(2, 1, 6)
    out, h_last = cpu.scan_forward(gates, None, None, 1, False, True, False)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        cpu.scan_backward(out[:1], h_last, gates, out, None, None, 1, False, True, False)

