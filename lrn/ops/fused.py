"""The fused kernels as torch custom ops: ``torch.ops.lrn.scan`` and ``torch.ops.lrn.scan_backward``.

One op serves both fused backends; its ``backend`` argument picks the kernel module
("cpu": numba, lrn/ops/cpu.py; "triton": lrn/ops/triton.py, also on CPU tensors under
``TRITON_INTERPRET=1``, which is how CI tests it).  Autograd is registered on the op:
the backward saves only the gates and the outputs and recomputes the gate values
walking time backwards (see the kernels), so torch.compile(fullgraph=True) traces
both passes without a graph break.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor


def _kernels(backend: str) -> ModuleType:
    if backend not in ("cpu", "triton"):
        raise ValueError(f"fused backend must be 'cpu' or 'triton', got {backend!r}")
    return importlib.import_module(f"lrn.ops.{backend}")


def _hidden_size(gates: Tensor, num_directions: int, output_gate: bool) -> int:
    return gates.shape[-1] // (num_directions * (4 if output_gate else 3))


def scan_forward(
    gates: Tensor, h0: Tensor | None, lengths: Tensor | None, num_directions: int,
    reverse: bool, tanh: bool, output_gate: bool, backend: str,
) -> tuple[Tensor, Tensor]:
    """The kernel behind ``torch.ops.lrn.scan``, also called directly for eager inference
    (see lrn.functional.lrn_scan): gates (T, B, D*G*H) -> out (T, B, D*H), h_last (D, B, H)."""
    return _kernels(backend).scan_forward(
        gates.contiguous(), None if h0 is None else h0.contiguous(), lengths,
        num_directions, reverse, tanh, output_gate)


@torch.library.custom_op("lrn::scan", mutates_args=())
def scan(
    gates: Tensor, h0: Tensor | None, lengths: Tensor | None, num_directions: int,
    reverse: bool, tanh: bool, output_gate: bool, backend: str,
) -> tuple[Tensor, Tensor]:
    """Forward recurrence: gates (T, B, D*G*H) -> out (T, B, D*H), h_last (D, B, H)."""
    return scan_forward(gates, h0, lengths, num_directions, reverse, tanh, output_gate, backend)


@scan.register_fake
def _scan_fake(gates, h0, lengths, num_directions, reverse, tanh, output_gate, backend):
    T, B, _ = gates.shape
    H = _hidden_size(gates, num_directions, output_gate)
    return gates.new_empty(T, B, num_directions * H), gates.new_empty(num_directions, B, H)


@torch.library.custom_op("lrn::scan_backward", mutates_args=())
def scan_backward(
    grad_out: Tensor, grad_h_last: Tensor, gates: Tensor, out: Tensor, h0: Tensor | None,
    lengths: Tensor | None, num_directions: int, reverse: bool, tanh: bool,
    output_gate: bool, backend: str,
) -> tuple[Tensor, Tensor]:
    """Gradients of ``scan``: (grad_gates (T, B, D*G*H), grad_h0 (D, B, H)); grad_h0 is
    zeros when there was no h0 (custom ops cannot return None)."""
    grad_gates, grad_h0 = _kernels(backend).scan_backward(
        grad_out.contiguous(), grad_h_last.contiguous(), gates.contiguous(), out.contiguous(),
        None if h0 is None else h0.contiguous(), lengths, num_directions, reverse, tanh,
        output_gate)
    if grad_h0 is None:
        grad_h0 = grad_h_last.new_zeros(grad_h_last.shape)
    return grad_gates, grad_h0


@scan_backward.register_fake
def _scan_backward_fake(grad_out, grad_h_last, gates, out, h0, lengths, num_directions,
                        reverse, tanh, output_gate, backend):
    return torch.empty_like(gates), torch.empty_like(grad_h_last)


def _setup_context(ctx, inputs, output):
    gates, h0, lengths, num_directions, reverse, tanh, output_gate, backend = inputs
    ctx.save_for_backward(gates, output[0], h0, lengths)
    ctx.h0_given = h0 is not None
    ctx.flags = (num_directions, reverse, tanh, output_gate, backend)


def _backward(ctx, grad_out, grad_h_last):
    gates, out, h0, lengths = ctx.saved_tensors
    num_directions = ctx.flags[0]
    if torch.is_grad_enabled():
        return _differentiable_backward(ctx, gates, h0, lengths, grad_out, grad_h_last)
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    if grad_h_last is None:
        B, H = gates.shape[1], out.shape[-1] // num_directions
        grad_h_last = out.new_zeros(num_directions, B, H)
    grad_gates, grad_h0 = scan_backward(grad_out, grad_h_last, gates, out, h0 if ctx.h0_given else None,
                                        lengths, *ctx.flags)
    return grad_gates, (grad_h0 if ctx.h0_given else None), None, None, None, None, None, None


def _differentiable_backward(ctx, gates, h0, lengths, grad_out, grad_h_last):
    """The backward of ``backward(create_graph=True)`` (double backward, Hessian-vector
    products): the same gradients through the reference recurrence, whose graph autograd
    can differentiate again.  The fused kernels' backward has no derivative of its own."""
    from lrn.ops.reference import lrn_scan_reference

    num_directions, reverse, tanh, output_gate, _ = ctx.flags
    h0 = h0 if ctx.h0_given else None
    with torch.enable_grad():
        inputs = [gates] + ([h0] if h0 is not None else [])
        if not all(t.requires_grad for t in inputs):  # a saved input outside any graph
            inputs = [t.detach().requires_grad_(True) for t in inputs]
        out, h_last = lrn_scan_reference(inputs[0], inputs[1] if h0 is not None else None, lengths,
                                         num_directions=num_directions, reverse=reverse,
                                         activation="tanh" if tanh else "identity", output_gate=output_gate)
        outputs, grads = zip(*[(o, g) for o, g in ((out, grad_out), (h_last, grad_h_last)) if g is not None])
        found = torch.autograd.grad(outputs, inputs, grads, create_graph=True, allow_unused=True)
    grad_gates = found[0] if found[0] is not None else torch.zeros_like(gates)
    grad_h0 = (found[1] if found[1] is not None else torch.zeros_like(h0)) if h0 is not None else None
    return grad_gates, grad_h0, None, None, None, None, None, None


scan.register_autograd(_backward, setup_context=_setup_context)
