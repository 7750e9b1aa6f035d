"""The input projection x W^T + b, through oneDNN for float32 CPU tensors.

``F.linear`` on CPU float32 goes to MKL's sgemm, which on the AMD machines we measured
reaches less than half of what oneDNN (the library behind nn.LSTM / nn.GRU on CPU) gets
on the same products.  LRN spends nearly all of its time in this one projection, so a
fair comparison with torch's LSTM needs the same matmul library: forward, grad_input and
grad_weight all run through oneDNN here.  grad_weight and grad_bias come from oneDNN's
inner-product backward, which reads grad and x in their (N, out) / (N, in) layout: forming
grad^T for a plain matmul costs a strided copy that took as long as the product itself.
Everything else (other dtypes and devices, torch.compile, export) uses F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_mm_t(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """a @ b^T (+ bias) with oneDNN; a (N, K), b (M, K) contiguous."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # x (N, in)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_mm_t(x, weight, bias)  # (N, out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_mm_t(grad, weight.t().contiguous())  # (N, in)
        want_b = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1]:
            # (out, in) and (out,); the op takes oneDNN-layout tensors (to_mkldnn: a plain copy).
            grad_w, grad_b = torch.ops.aten.mkldnn_linear_backward_weights(
                grad.to_mkldnn(), x.to_mkldnn(), weight.to_mkldnn(), want_b)
        if want_b and grad_b is None:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b if want_b else None


# Below this many rows oneDNN's per-call set-up costs more than MKL's whole product
# (measured for a (1, 256) x (256, 768) product: 23.8 us against 10.6 us; level at 4 rows).
_ONEDNN_MIN_ROWS = 4


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear, through oneDNN for float32 CPU tensors of at least 4 rows in eager mode."""
    if (not _ONEDNN or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.dim() < 2 or x.numel() == 0 or x.numel() < _ONEDNN_MIN_ROWS * x.shape[-1]
            or torch.compiler.is_compiling()):
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    return _OneDNNLinear.apply(flat, weight.contiguous(), bias).view(*x.shape[:-1], weight.shape[0])
