"""The LRN recurrence as a function, and the dispatch to its backends.

Backends:
    "reference"  plain PyTorch loop (lrn/ops/reference.py): any device and dtype, autograd.
    "cpu"        fused numba kernels (lrn/ops/cpu.py): CPU float32/float64.
    "triton"     fused Triton kernels (lrn/ops/triton.py): CUDA fp16/bf16/fp32.
    "auto"       "cpu" for CPU tensors, "triton" for CUDA tensors, when the kernel
                 exists for that dtype and its package is installed; else "reference".
The fused backends run through the ``torch.ops.lrn.scan`` custom op, so they work
under autograd, torch.compile(fullgraph=True) and torch.library.opcheck.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from lrn.ops.reference import ACTIVATIONS, is_exporting, lrn_scan_reference, lrn_step

BACKENDS = ("auto", "reference", "cpu", "triton")
_CPU_DTYPES = (torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# Looked up once: resolve_backend runs on every call, also inside torch.compile traces.
_INSTALLED = {name: importlib.util.find_spec(name) is not None for name in ("numba", "triton")}


def _installed(package: str) -> bool:
    return _INSTALLED[package]


def available_backends() -> list[str]:
    """The backends usable in this environment (fused ones need their package, and triton a GPU
    or ``TRITON_INTERPRET=1``)."""
    found = ["reference"]
    if _installed("numba"):
        found.append("cpu")
    if _installed("triton"):
        if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
            found.append("triton")
    return found


def check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


_HALF_DTYPES = (torch.bfloat16, torch.float16)


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend that ``backend`` means for tensors of this device and dtype."""
    check_backend(backend)
    if backend == "auto":
        if device.type == "cpu" and dtype in _CPU_DTYPES and _installed("numba"):
            return "cpu"
        if device.type == "cuda" and dtype in _TRITON_DTYPES and _installed("triton"):
            return "triton"
        return "reference"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"backend 'cpu' runs on CPU tensors, got a tensor on {device}")
        if dtype not in _CPU_DTYPES:
            raise ValueError(f"backend 'cpu' supports float32 and float64, got {dtype}")
        if not _installed("numba"):
            raise ValueError("backend 'cpu' needs the numba package (pip install numba)")
    if backend == "triton":
        if dtype not in _TRITON_DTYPES:
            raise ValueError(f"backend 'triton' supports float16, bfloat16 and float32, got {dtype}")
        if not _installed("triton"):
            raise ValueError("backend 'triton' needs the triton package (pip install 'lrn-torch[gpu]')")
    return backend


def lrn_scan(
    gates: torch.Tensor,
    h0: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    *,
    num_directions: int = 1,
    reverse: bool = False,
    activation: str = "tanh",
    output_gate: bool = False,
    backend: str = "auto",
    recurrent_gates: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence on packed gates (layout in lrn/ops/reference.py), without argument checks:
    the modules and ``lrn_recurrence`` check before calling.  ``recurrent_gates=False`` is the
    ablation whose gates ignore h_{t-1}; only the reference backend implements it."""
    if (backend == "auto" and gates.device.type == "cpu" and gates.dtype in _HALF_DTYPES
            and recurrent_gates and _installed("numba") and not is_exporting()):
        # bfloat16 / float16 on the CPU: the float32 kernel, with the casts in the graph (the
        # reference loop in half precision is several times slower, and less accurate)
        out, h_last = lrn_scan(gates.float(), None if h0 is None else h0.float(), lengths,
                               num_directions=num_directions, reverse=reverse, activation=activation,
                               output_gate=output_gate, backend="cpu")
        return out.to(gates.dtype), h_last.to(gates.dtype)
    if torch.jit.is_tracing() and torch.onnx.is_in_onnx_export():
        # The TorchScript-based exporter would record the fused op, which ONNX lacks, or unroll
        # the reference loop into a graph fixed to this sequence length: refuse instead.
        raise RuntimeError("LRN cannot be exported by the TorchScript-based ONNX exporter (dynamo=False): use "
                           "torch.onnx.export(..., dynamo=True), whose graph keeps the sequence length dynamic "
                           "(docs/deploy.md)")
    concrete = resolve_backend(backend, gates.device, gates.dtype)
    if not recurrent_gates and backend in ("cpu", "triton"):
        raise ValueError(f"backend {backend!r} has no recurrent_gates=False variant (the ablation runs on "
                         "backend 'reference' or 'auto')")
    # torch.export / ONNX see the reference decomposition as a scan over time (exporters know
    # no custom op, and a scan keeps T symbolic); torch.func's transforms (vmap, grad,
    # jacrev...) need plain torch ops they can transform.
    exporting = is_exporting()
    if (concrete == "reference" or not recurrent_gates or exporting
            or torch._C._are_functorch_transforms_active()):
        return lrn_scan_reference(
            gates, h0, lengths, num_directions=num_directions, reverse=reverse,
            activation=activation, output_gate=output_gate, recurrent_gates=recurrent_gates,
            exportable=exporting,
        )
    from lrn.ops import fused  # registers torch.ops.lrn.*

    args = (gates, h0, lengths, num_directions, reverse, activation == "tanh", output_gate, concrete)
    if _eager_inference(gates, h0):
        # The op's dispatch and autograd wrapper cost ~10 us a call, as much as a decoding
        # step's whole recurrence; nothing needs the op here, so run its kernel directly.
        return fused.scan_forward(*args)
    return fused.scan(*args)


_CPU_OPS = []


def _cpu_ops():
    """lrn.ops.cpu, imported on first use (numba loads then, not with the package); kept
    here because a per-step import statement costs about a microsecond."""
    if not _CPU_OPS:
        from lrn.ops import cpu

        _CPU_OPS.append(cpu)
    return _CPU_OPS[0]


def lrn_cell_step(gates: torch.Tensor, h: torch.Tensor | None, *, activation: str = "tanh",
                  output_gate: bool = False, backend: str = "auto") -> torch.Tensor:
    """One step on packed gates (B, G*H) and state (B, H) (None: zeros) -> the new state (B, H),
    without argument checks (LRNCell checks).  A cell stepped by a decoder pays per call:
    under autograd with backend "auto", a few plain torch ops (the fused op's dispatch costs
    more than a step's work); in eager CPU inference, the numba step kernel (one call instead
    of those ops); otherwise a one-step ``lrn_scan``."""
    if backend == "auto" and torch.is_grad_enabled() and (gates.requires_grad or h is not None and h.requires_grad):
        return lrn_step(gates, gates.new_zeros(gates.shape[0], gates.shape[1] // (4 if output_gate else 3))
                        if h is None else h, activation, output_gate)
    if (backend in ("auto", "cpu") and gates.device.type == "cpu" and gates.dtype in _CPU_DTYPES
            and _installed("numba") and _eager_inference(gates, h)):
        return _cpu_ops().step_forward(gates, h, activation == "tanh", output_gate)
    _, h_last = lrn_scan(gates.unsqueeze(0), None if h is None else h.unsqueeze(0), activation=activation,
                         output_gate=output_gate, backend=backend)
    return h_last[0]


def _eager_inference(gates: torch.Tensor, h0: torch.Tensor | None) -> bool:
    """True when no autograd graph, tracer (torch.compile, torch.jit.trace), torch.func
    transform or tensor subclass needs the custom op or plain torch ops."""
    if torch.is_grad_enabled() and (gates.requires_grad or (h0 is not None and h0.requires_grad)):
        return False
    return (type(gates) is torch.Tensor and (h0 is None or type(h0) is torch.Tensor)
            and not torch._C._are_functorch_transforms_active()
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing())


def check_lengths(lengths: torch.Tensor, batch: int, steps: int) -> torch.Tensor:
    """Validate a (B,) lengths tensor; returns it as int64 on the CPU."""
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"lengths must have shape ({batch},) to match the batch, got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
    lengths = lengths.to("cpu", torch.int64)
    if torch.compiler.is_compiling():
        return lengths  # value checks would be data-dependent guards; eager mode runs them
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(
            f"lengths must lie in [1, {steps}] (the sequence length), got min {int(lengths.min())} "
            f"and max {int(lengths.max())}")
    return lengths


def lrn_recurrence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    o: torch.Tensor | None = None,
    activation: str = "tanh",
    lengths: torch.Tensor | None = None,
    reverse: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the LRN recurrence over pre-computed projections.

    For every step t (sigma = sigmoid, g = tanh or identity)::

        f_t = sigma(q_t - h_{t-1});  i_t = sigma(k_t + h_{t-1});  h_t = g(i_t * v_t + f_t * h_{t-1})

    and with ``o`` (oLRN) c_t = g(...) as above and h_t = sigma(o_t - c_t) * c_t.

    Args:
        q, k, v: (T, B, H) forget-gate, input-gate and value projections, time-major.
        h0: (B, H) initial state; zeros when None.
        o: (T, B, H) output-gate projection for oLRN, or None.
        activation: "tanh" or "identity".
        lengths: (B,) integer valid steps per sequence; steps t >= lengths[b] keep the
            state and give output 0.
        reverse: run each sequence from its last valid step down to step 0.
        backend: "auto" | "reference" | "cpu" | "triton" (see module docstring).

    Returns:
        output (T, B, H) and h_last (B, H), the state after each sequence's last step.
    """
    check_activation(activation)
    check_backend(backend)
    named = {"q": q, "k": k, "v": v} | ({"o": o} if o is not None else {})
    for name, t in named.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            got = f"{t.dim()}-D tensor" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 3-D (T, B, H) tensor, got {got}")
        if t.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q {tuple(q.shape)}, got {tuple(t.shape)}")
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"{name} must match q's dtype and device ({q.dtype}, {q.device}), "
                             f"got ({t.dtype}, {t.device})")
    T, B, H = q.shape
    if T == 0 or B == 0 or H == 0:
        raise ValueError(f"q, k, v need T, B and H of at least 1, got shape {tuple(q.shape)}")
    if h0 is not None:
        if h0.shape != (B, H):
            raise ValueError(f"h0 must have shape {(B, H)}, got {tuple(h0.shape)}")
        if h0.dtype != q.dtype or h0.device != q.device:
            raise ValueError(f"h0 must match q's dtype and device ({q.dtype}, {q.device}), "
                             f"got ({h0.dtype}, {h0.device})")
        h0 = h0.unsqueeze(0)
    if lengths is not None:
        lengths = check_lengths(lengths, B, T).to(q.device)
    gates = torch.cat(list(named.values()), dim=-1)  # (T, B, G*H)
    out, h_last = lrn_scan(gates, h0, lengths, reverse=reverse, activation=activation, output_gate=o is not None,
                           backend=backend)
    return out, h_last[0]
