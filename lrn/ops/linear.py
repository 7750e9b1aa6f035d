"""The input projection x W^T + b, through oneDNN for float32 CPU tensors.

``F.linear`` on CPU float32 goes to MKL's sgemm, which on the AMD machines we measured
reaches less than half of what oneDNN (the library behind nn.LSTM / nn.GRU on CPU) gets
on the same products.  LRN spends nearly all of its time in this one projection, so a
fair comparison with torch's LSTM needs the same matmul library: forward, grad_input and
grad_weight all run through oneDNN here.  grad_weight and grad_bias come from oneDNN's
inner-product backward, which reads grad and x in their (N, out) / (N, in) layout: forming
grad^T for a plain matmul costs a strided copy that took as long as the product itself.
Everything else (other dtypes and devices, torch.compile, export) uses F.linear.

That backward reads oneDNN tensors only, so the (N, out) gradient is copied into one first
(2.2 ms of a 52 ms LRN training step at B=16, T=1024, H=256).  A producer of that gradient
can avoid the copy by writing it into a oneDNN tensor's memory: ``onednn_backed_empty``
returns a plain tensor over such memory (the LRN kernels' backward allocates its gate
gradient with it), and the backward here uses the oneDNN tensor behind it directly.
"""

from __future__ import annotations

import ctypes
import math
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


# mkldnn::data_ptr exposes a oneDNN tensor's memory (plain row-major for a 2-D float32 one).
_BACKED_BUFFERS = _ONEDNN and hasattr(torch.ops.mkldnn, "data_ptr")
_OWNERS: dict[int, weakref.ref] = {}  # data pointer -> the oneDNN tensor that owns the memory


def onednn_backed_empty(*shape: int) -> Tensor:
    """An uninitialised float32 CPU tensor whose memory belongs to a 2-D oneDNN tensor,
    which ``_as_onednn`` then returns without a copy; a plain ``torch.empty`` where this
    torch build cannot do it.  The returned tensor keeps its oneDNN owner alive."""
    if not _BACKED_BUFFERS or math.prod(shape) == 0:
        return torch.empty(*shape, dtype=torch.float32)
    cols = shape[-1]
    owner = torch.empty((math.prod(shape) // cols, cols), layout=torch._mkldnn)
    address = torch.ops.mkldnn.data_ptr(owner)
    memory = (ctypes.c_float * owner.numel()).from_address(address)
    memory.owner = owner  # tensor -> memory -> owner: the owner lives as long as the tensor

    def forget(ref, address=address):
        if _OWNERS.get(address) is ref:
            del _OWNERS[address]

    _OWNERS[address] = weakref.ref(owner, forget)
    return torch.frombuffer(memory, dtype=torch.float32).view(*shape)


def _as_onednn(t: Tensor) -> Tensor:
    """A contiguous 2-D float32 tensor as a oneDNN tensor: the owner of its memory when t is
    exactly an ``onednn_backed_empty`` buffer (no copy), else a copy."""
    ref = _OWNERS.get(t.data_ptr())
    owner = ref() if ref is not None else None
    if owner is not None and owner.shape == t.shape and t.is_contiguous():
        return owner
    return t.to_mkldnn()


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
        if torch.is_grad_enabled():  # create_graph=True: plain products autograd can differentiate
            want_b = ctx.has_bias and ctx.needs_input_grad[2]
            return grad @ weight, grad.t() @ x, grad.sum(0) if want_b else None
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_mm_t(grad, weight.t().contiguous())  # (N, in)
        want_b = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1]:
            # (out, in) and (out,); the op takes oneDNN tensors only.
            grad_w, grad_b = torch.ops.aten.mkldnn_linear_backward_weights(
                _as_onednn(grad), _as_onednn(x), weight.to_mkldnn(), want_b)
        if want_b and grad_b is None:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b if want_b else None


# Below this many rows torch's own F.linear is as fast or faster in a whole training step: 2x
# for a cell step (LRNCell(256, 256) at B=64: 0.64 ms against 1.31 ms), 4-22% for layers under
# 4096 rows; from 8192 rows oneDNN gains 1-5% (`python benchmarks/linear_paths.py --threads 2
# --keep-freed-memory`, idle 2-core machine; without keep_freed_memory the two are within
# ~10% either way from run to run).
_ONEDNN_MIN_ROWS = 8192


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear, through oneDNN for float32 CPU tensors of at least _ONEDNN_MIN_ROWS rows in eager mode."""
    # Tracers first: the size test below would otherwise put a guard on the batch size.
    if (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active() or torch.jit.is_tracing()
            or not _ONEDNN or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.dim() < 2 or x.numel() == 0 or x.numel() < _ONEDNN_MIN_ROWS * x.shape[-1]):
        # torch.func (grad, vmap, jacrev...) needs ops it can transform, and torch.jit.trace
        # ops TorchScript knows: the plain F.linear
        return F.linear(x, weight, bias)
    return onednn_linear(x, weight, bias)


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The oneDNN product behind ``linear`` (float32 CPU tensors, eager mode), at any size."""
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    return _OneDNNLinear.apply(flat, weight.contiguous(), bias).view(*x.shape[:-1], weight.shape[0])
