"""Triton kernels for the LRN recurrence (forward and backward), GPU backend.

Semantics are exactly ``lrn.ops.reference.lrn_scan_reference``; read its docstring
for the packed-gates layout (gates (T, B, D*G*H), out (T, B, D*H), h0/h_last (D, B, H)).

Launch grid: ``(B, cdiv(H, BLOCK_H), D)``: one program per (sequence, block of
hidden units, direction), so both directions of a bidirectional layer run in one launch.
Hidden units never interact in the LRN step (every operation is elementwise in H),
so a program owns its H-block for the whole sequence: the state stays in fp32
registers and the time loop runs inside the kernel. Each program reads its
sequence length once, walks only the valid steps in its direction (direction 1,
or ``reverse``, from lengths[b]-1 down to 0) and then writes zeros to the padded
steps, so the kernel never branches per step on padding. The time loop bound is
a runtime value and ``T`` is not specialised: one compiled kernel per
configuration (dtype, G, H, flags), whatever the sequence length.

Memory traffic per step and program (E = bytes per element of the gates' dtype):
    forward:  read G*BLOCK_H*E (q, k, v[, o]: G contiguous H-blocks of one row),
              write BLOCK_H*E (out).
    backward: read G*BLOCK_H*E (gates) + BLOCK_H*E (grad_out) + BLOCK_H*E (out of
              the previous processed step, i.e. h_{t-1}), write G*BLOCK_H*E (grad_gates).
Per layer that is (G+1)*T*B*D*H*E bytes forward and (2G+2)*T*B*D*H*E backward, the
same as one read of the inputs plus one write of the outputs: the minimum for an
elementwise recurrence. The backward pass saves nothing per step besides the
forward's own inputs and outputs; it recomputes f, i, c (and the output gate)
from the gates and h_{t-1} = out[t-1] (or h0) while walking time backwards.
h0 / h_last / grad_h0 cost one (D, B, H) read or write each. The loads of a step
do not depend on the state, so the time loop is software-pipelined (``tl.range``
num_stages = PIPELINE_STAGES): the loads of the next steps are in flight while the
current step computes. The kernel is then bound by memory bandwidth once B*D*H is
large enough to fill the GPU, and by the per-step dependency chain (the compute of
one step, or memory latency / (stages - 1)) below that.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from lrn.ops.reference import check_length_range

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_BLOCK_H = 256
MIN_BLOCK_H = 16
# Steps whose loads are in flight at once (tl.range software pipelining). At
# moderate B*H a step is bound by memory latency (~0.7 us), not bandwidth: with
# S stages the loads of step n+S-1 are issued during step n, so a step needs only
# latency/(S-1). Costs (S-1) * loads * BLOCK_H * E bytes of shared memory per
# program (18 KiB at most: fp32 backward, BLOCK_H 256). Not yet tuned on a GPU.
PIPELINE_STAGES = 4


@triton.jit
def _tanh(x):
    # tanh(x) = 2*sigmoid(2x) - 1: saturates cleanly at +-1 and runs under the
    # interpreter, where libdevice is unavailable.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _program_setup(lengths, T, B, H,
                   NUM_DIRECTIONS: tl.constexpr, NUM_GATES: tl.constexpr, REVERSE: tl.constexpr,
                   HAS_LENGTHS: tl.constexpr, BLOCK_H: tl.constexpr):
    # Offsets and loop bounds shared by the forward and backward kernels.
    b = tl.program_id(0)  # on axis 0, whose size limit (2**31-1) B could exceed
    block = tl.program_id(1)
    d = tl.program_id(2)
    cols = block * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = cols < H
    gate_row = NUM_DIRECTIONS * NUM_GATES * H  # elements of one (t, b) row of gates
    out_row = NUM_DIRECTIONS * H
    gate_offs = b * gate_row + d * NUM_GATES * H + cols  # q-block of (t=0, b, d)
    out_offs = b * out_row + d * H + cols
    gate_step = B.to(tl.int64) * gate_row  # elements between consecutive time steps
    out_step = B.to(tl.int64) * out_row
    state_offs = (d * B + b) * H + cols  # into (D, B, H)
    backwards = d == 1
    if REVERSE:  # only set for single-direction layers, where d == 0
        backwards = d == 0
    seq_len = T
    if HAS_LENGTHS:
        # The host checked 0 <= lengths <= T (check_length_range); the clamp keeps every
        # load in bounds even so.
        seq_len = tl.minimum(tl.maximum(tl.load(lengths + b), 0), T).to(tl.int32)
    return cols, mask, gate_offs, out_offs, gate_step, out_step, state_offs, backwards, seq_len


@triton.jit(do_not_specialize=["T", "B"])
def _lrn_fwd_kernel(
    gates, h0, lengths, out, h_last,  # (T, B, D*G*H), (D, B, H), (B,), (T, B, D*H), (D, B, H)
    T, B, H,
    NUM_DIRECTIONS: tl.constexpr, NUM_GATES: tl.constexpr, REVERSE: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_LENGTHS: tl.constexpr, TANH: tl.constexpr,
    OUTPUT_GATE: tl.constexpr, BLOCK_H: tl.constexpr, STAGES: tl.constexpr,
):
    cols, mask, gate_offs, out_offs, gate_step, out_step, state_offs, backwards, seq_len = \
        _program_setup(lengths, T, B, H, NUM_DIRECTIONS, NUM_GATES, REVERSE, HAS_LENGTHS, BLOCK_H)
    h = tl.zeros([BLOCK_H], dtype=tl.float32)
    if HAS_H0:
        h = tl.load(h0 + state_offs, mask=mask, other=0.0).to(tl.float32)
    for p in tl.range(0, seq_len, num_stages=STAGES):
        t = tl.where(backwards, seq_len - 1 - p, p).to(tl.int64)
        g = gates + t * gate_step + gate_offs
        q = tl.load(g, mask=mask, other=0.0).to(tl.float32)
        k = tl.load(g + H, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(g + 2 * H, mask=mask, other=0.0).to(tl.float32)
        f = tl.sigmoid(q - h)
        i = tl.sigmoid(k + h)
        c = i * v + f * h
        if TANH:
            c = _tanh(c)
        if OUTPUT_GATE:
            o = tl.load(g + 3 * H, mask=mask, other=0.0).to(tl.float32)
            h = tl.sigmoid(o - c) * c
        else:
            h = c
        tl.store(out + t * out_step + out_offs, h.to(out.dtype.element_ty), mask=mask)
    if HAS_LENGTHS:  # padded steps give output 0
        zero = tl.zeros([BLOCK_H], dtype=out.dtype.element_ty)
        for t in range(seq_len, T):
            tl.store(out + t * out_step + out_offs, zero, mask=mask)
    tl.store(h_last + state_offs, h.to(h_last.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "B"])
def _lrn_bwd_kernel(
    grad_out, grad_h_last, gates, out, h0, lengths, grad_gates, grad_h0,
    T, B, H,
    NUM_DIRECTIONS: tl.constexpr, NUM_GATES: tl.constexpr, REVERSE: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_LENGTHS: tl.constexpr, TANH: tl.constexpr,
    OUTPUT_GATE: tl.constexpr, BLOCK_H: tl.constexpr, STAGES: tl.constexpr,
):
    cols, mask, gate_offs, out_offs, gate_step, out_step, state_offs, backwards, seq_len = \
        _program_setup(lengths, T, B, H, NUM_DIRECTIONS, NUM_GATES, REVERSE, HAS_LENGTHS, BLOCK_H)
    h_init = tl.zeros([BLOCK_H], dtype=tl.float32)
    if HAS_H0:
        h_init = tl.load(h0 + state_offs, mask=mask, other=0.0).to(tl.float32)
    # dh: gradient w.r.t. the state after the step being processed.
    dh = tl.load(grad_h_last + state_offs, mask=mask, other=0.0).to(tl.float32)
    # n-th step from the end of this direction's processing order.
    for n in tl.range(0, seq_len, num_stages=STAGES):
        t = tl.where(backwards, n, seq_len - 1 - n).to(tl.int64)
        # h_{t-1}: the output of the previously processed step, or h0 for the first.
        has_prev = n < seq_len - 1
        t_prev = tl.where(has_prev, tl.where(backwards, t + 1, t - 1), t)  # in bounds
        hp = tl.load(out + t_prev * out_step + out_offs, mask=mask, other=0.0).to(tl.float32)
        hp = tl.where(has_prev, hp, h_init)
        g = gates + t * gate_step + gate_offs
        q = tl.load(g, mask=mask, other=0.0).to(tl.float32)
        k = tl.load(g + H, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(g + 2 * H, mask=mask, other=0.0).to(tl.float32)
        dh += tl.load(grad_out + t * out_step + out_offs, mask=mask, other=0.0).to(tl.float32)
        # Recompute the step.
        f = tl.sigmoid(q - hp)
        i = tl.sigmoid(k + hp)
        c = i * v + f * hp
        if TANH:
            c = _tanh(c)
        gg = grad_gates + t * gate_step + gate_offs
        if OUTPUT_GATE:  # h = og * c, og = sigma(o - c)
            o = tl.load(g + 3 * H, mask=mask, other=0.0).to(tl.float32)
            og = tl.sigmoid(o - c)
            do = dh * c * og * (1.0 - og)
            dc = dh * og - do
            tl.store(gg + 3 * H, do.to(grad_gates.dtype.element_ty), mask=mask)
        else:
            dc = dh
        ds = dc
        if TANH:  # through g
            ds = dc * (1.0 - c * c)
        dv = ds * i
        dk = ds * v * i * (1.0 - i)
        dq = ds * hp * f * (1.0 - f)
        dh = ds * f + dk - dq  # f depends on -h, i on +h
        tl.store(gg, dq.to(grad_gates.dtype.element_ty), mask=mask)
        tl.store(gg + H, dk.to(grad_gates.dtype.element_ty), mask=mask)
        tl.store(gg + 2 * H, dv.to(grad_gates.dtype.element_ty), mask=mask)
    if HAS_LENGTHS:  # padded steps never reach the state: zero gradient
        zero = tl.zeros([BLOCK_H], dtype=grad_gates.dtype.element_ty)
        for t in range(seq_len, T):
            gg = grad_gates + t * gate_step + gate_offs
            for gate in tl.static_range(NUM_GATES):
                tl.store(gg + gate * H, zero, mask=mask)
    if HAS_H0:
        tl.store(grad_h0 + state_offs, dh.to(grad_h0.dtype.element_ty), mask=mask)


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # interpreter: any block size works
    return torch.cuda.get_device_properties(device).multi_processor_count


def _launch_config(H: int, rows: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK_H, num_warps) for ``rows`` = B*D independent recurrences of width H on ``device``."""
    return launch_config(H, rows, _sm_count(device))


def launch_config(H: int, rows: int, sm_count: int) -> tuple[int, int]:
    """(BLOCK_H, num_warps) for ``rows`` = B*D independent recurrences of width H on a GPU
    with ``sm_count`` SMs (lrn.ops.triton_aot asks it for GPUs that are not here).

    Wide blocks give long contiguous loads; but each program is a serial chain of
    T dependent steps, so the grid must also hold enough programs to fill every SM
    (each keeps only a step or two of loads in flight). Halve the block until there
    are about 4 programs per SM, never below 64 units: with 2 elements per thread
    (4 bytes in fp16/bf16) Triton can software-pipeline the loads; 1 element of 2 bytes
    it does not.
    """
    block = min(MAX_BLOCK_H, max(MIN_BLOCK_H, triton.next_power_of_2(H)))
    target = 4 * sm_count
    while block > 64 and rows * triton.cdiv(H, block) < target:
        block //= 2
    return block, num_warps_for(block)


def num_warps_for(block_h: int) -> int:
    """Warps of a program with BLOCK_H units: 2 elements per thread (1 if BLOCK_H <= 32)."""
    return max(1, min(4, block_h // 64))


def _check_inputs(gates, h0, lengths, num_directions, output_gate) -> tuple[int, int, int, int]:
    if num_directions not in (1, 2):
        raise ValueError(f"num_directions must be 1 or 2, got {num_directions}")
    if gates.dim() != 3:
        raise ValueError(f"gates must be (T, B, D*G*H), got shape {tuple(gates.shape)}")
    if gates.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"gates dtype must be float16, bfloat16 or float32, got {gates.dtype}")
    T, B, width = gates.shape
    num_gates = 4 if output_gate else 3
    if width % (num_directions * num_gates):
        raise ValueError(
            f"gates width {width} is not a multiple of D*G = {num_directions}*{num_gates}")
    H = width // (num_directions * num_gates)
    if h0 is not None and tuple(h0.shape) != (num_directions, B, H):
        raise ValueError(f"h0 must have shape {(num_directions, B, H)}, got {tuple(h0.shape)}")
    if lengths is not None and tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
    return T, B, H, num_gates


def _flags(h0, lengths, num_directions, num_gates, reverse, tanh, output_gate, H, B, device):
    block_h, num_warps = _launch_config(H, B * num_directions, device)
    grid = (B, triton.cdiv(H, block_h), num_directions)
    meta = dict(
        NUM_DIRECTIONS=num_directions, NUM_GATES=num_gates,
        REVERSE=bool(reverse) and num_directions == 1,  # as the reference: ignored when D == 2
        HAS_H0=h0 is not None, HAS_LENGTHS=lengths is not None, TANH=bool(tanh),
        OUTPUT_GATE=bool(output_gate), BLOCK_H=block_h, STAGES=PIPELINE_STAGES,
        num_warps=num_warps,
    )
    return grid, meta


def _lengths_on(lengths, T, device):
    check_length_range(lengths, T)
    return None if lengths is None else lengths.to(device=device, dtype=torch.int64).contiguous()


def scan_forward(gates, h0, lengths, num_directions: int, reverse: bool, tanh: bool,
                 output_gate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """LRN scan over packed gates. Returns out (T, B, D*H) and h_last (D, B, H), both
    in the gates' dtype."""
    T, B, H, num_gates = _check_inputs(gates, h0, lengths, num_directions, output_gate)
    gates = gates.contiguous()
    out = torch.empty(T, B, num_directions * H, dtype=gates.dtype, device=gates.device)
    h_last = torch.empty(num_directions, B, H, dtype=gates.dtype, device=gates.device)
    if B == 0 or H == 0:
        return out, h_last
    h0 = None if h0 is None else h0.contiguous()
    lengths = _lengths_on(lengths, T, gates.device)
    grid, meta = _flags(h0, lengths, num_directions, num_gates, reverse, tanh, output_gate,
                        H, B, gates.device)
    _lrn_fwd_kernel[grid](gates, h0, lengths, out, h_last, T, B, H, **meta)
    return out, h_last


def scan_backward(grad_out, grad_h_last, gates, out, h0, lengths, num_directions: int,
                  reverse: bool, tanh: bool, output_gate: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of scan_forward. Returns grad_gates (T, B, D*G*H) in the gates' dtype and
    grad_h0 (D, B, H) in h0's dtype, or None when h0 is None."""
    T, B, H, num_gates = _check_inputs(gates, h0, lengths, num_directions, output_gate)
    gates = gates.contiguous()
    grad_gates = torch.empty_like(gates)
    grad_h0 = None if h0 is None else torch.empty_like(h0, memory_format=torch.contiguous_format)
    if B == 0 or H == 0:
        return grad_gates, grad_h0
    h0 = None if h0 is None else h0.contiguous()
    lengths = _lengths_on(lengths, T, gates.device)
    grid, meta = _flags(h0, lengths, num_directions, num_gates, reverse, tanh, output_gate,
                        H, B, gates.device)
    _lrn_bwd_kernel[grid](grad_out.contiguous(), grad_h_last.contiguous(), gates,
                          out.contiguous(), h0, lengths, grad_gates, grad_h0,
                          T, B, H, **meta)
    return grad_gates, grad_h0
