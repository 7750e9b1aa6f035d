"""Plain-PyTorch LRN recurrence: the executable specification.

Every fused kernel (numba on CPU, Triton on GPU) is tested against this file on
outputs, final states and every gradient.

Layout shared by all backends ("packed gates"):
    gates   (T, B, D*G*H)  the input projection x W^T + b, as one matmul produces it.
                           D = number of directions (1 or 2); G = 3 gate blocks
                           [q, k, v] per direction, or 4 [q, k, v, o] for oLRN.
    h0      (D, B, H)      initial state per direction, or None for zeros.
    lengths (B,) int64     valid steps per sequence, or None for all T.
    out     (T, B, D*H)    per-direction outputs side by side (nn.GRU layout);
                           0 at steps t >= lengths[b].
    h_last  (D, B, H)      state after each sequence's last processed step.
Direction 0 runs forward in time (backwards if ``reverse``); direction 1, when
present, runs backwards: from step lengths[b]-1 down to 0, as the reverse half
of a bidirectional nn.GRU does with packed input.

The step (sigma = sigmoid, g = tanh or identity):
    f = sigma(q - h);  i = sigma(k + h);  c = g(i*v + f*h)
    LRN:  h' = c
    oLRN: h' = sigma(o - c) * c
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ACTIVATIONS = ("tanh", "identity")


def is_exporting() -> bool:
    """True inside torch.export (and the ONNX exporter built on it), False under torch.compile.

    ``torch.compiler.is_exporting()`` cannot tell the two apart on every torch we support:
    before pytorch/pytorch#176499 (torch <= 2.11 at least), Dynamo folds it to True while
    torch.compile traces, which sent compiled LRNs down the export path, whose scan op then
    returned wrong gradients on that torch (pytorch/pytorch#184528).  The flag it reads is set by
    torch.export alone, and Dynamo folds a module global to its value."""
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return torch.compiler.is_exporting() if flag is None else bool(flag)


def check_length_range(lengths: torch.Tensor | None, T: int) -> None:
    """Every backend's one rule for lengths: each must lie in [0, T] (0: the sequence keeps
    its initial state and outputs zeros).  Skipped while tracing (compile, export, jit.trace),
    where it would be a data-dependent guard; eager calls always check."""
    if (lengths is None or lengths.numel() == 0 or torch.compiler.is_compiling()
            or is_exporting() or torch.jit.is_tracing()):
        return
    low, high = int(lengths.min()), int(lengths.max())
    if low < 0 or high > T:
        raise ValueError(f"lengths must lie in [0, T={T}], got min {low} and max {high}")


def _active(T: int, B: int, lengths: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """(T, B, 1) bool: True where step t of sequence b is valid (t < lengths[b])."""
    if lengths is None:
        return torch.ones(T, B, 1, dtype=torch.bool, device=device)
    steps = torch.arange(T, device=device)
    return (steps[:, None] < lengths.to(device)[None, :]).unsqueeze(-1)


def masked_time_loop(
    gates: torch.Tensor,
    h0: torch.Tensor | None,
    lengths: torch.Tensor | None,
    num_directions: int,
    reverse: bool,
    state_size: int,
    step: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Walk time for every direction with the packed-gates semantics (module docstring).

    ``step(direction, gates_t (B, G*H), state (B, H)) -> (output_t, new_state)`` is one
    cell step; this function owns direction order, lengths masking and output layout.
    Returns out (T, B, D*H_out) and the final states (D, B, state_size).
    """
    T, B, width = gates.shape
    active = _active(T, B, lengths, gates.device)  # (T, B, 1)
    active_steps = active.unbind(0)
    zero = gates.new_zeros(())
    per_direction = width // num_directions
    outputs, finals = [], []
    for d in range(num_directions):
        # unbind, never gates[t]: indexing inside autograd makes backward quadratic in T.
        gates_t = gates[..., d * per_direction:(d + 1) * per_direction].unbind(0)
        state = gates.new_zeros(B, state_size) if h0 is None else h0[d]
        backwards = (d == 1) or (num_directions == 1 and reverse)
        out_steps: list[torch.Tensor] = [zero] * T
        for t in (range(T - 1, -1, -1) if backwards else range(T)):
            out_t, new_state = step(d, gates_t[t], state)
            out_steps[t] = torch.where(active_steps[t], out_t, zero)
            state = torch.where(active_steps[t], new_state, state)
        outputs.append(torch.stack(out_steps, 0))
        finals.append(state)
    return torch.cat(outputs, -1), torch.stack(finals, 0)


def masked_time_scan(
    gates: torch.Tensor,
    h0: torch.Tensor | None,
    lengths: torch.Tensor | None,
    num_directions: int,
    reverse: bool,
    state_size: int,
    step: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``masked_time_loop`` as one ``scan`` per direction (torch's scan higher-order op)
    instead of a Python loop: torch.export keeps it as a loop over a symbolic T, and the
    ONNX exporter writes an ONNX Scan, so an exported model runs at any sequence length."""
    from torch._higher_order_ops.scan import scan

    T, B, width = gates.shape
    active = _active(T, B, lengths, gates.device)  # (T, B, 1)
    per_direction = width // num_directions
    outputs, finals = [], []
    for d in range(num_directions):
        gates_d = gates[..., d * per_direction:(d + 1) * per_direction]
        state = gates.new_zeros(B, state_size) if h0 is None else h0[d]
        backwards = (d == 1) or (num_directions == 1 and reverse)
        xs = (gates_d.flip(0), active.flip(0)) if backwards else (gates_d, active)

        def combine(h, x, d=d):
            g, a = x
            out_t, new_state = step(d, g, h)
            return torch.where(a, new_state, h), torch.where(a, out_t, torch.zeros_like(out_t))

        final, out = scan(combine, state, xs)
        outputs.append(out.flip(0) if backwards else out)
        finals.append(final)
    return torch.cat(outputs, -1), torch.stack(finals, 0)


def lrn_step(g: torch.Tensor, h: torch.Tensor, activation: str = "tanh", output_gate: bool = False,
             recurrent_gates: bool = True) -> torch.Tensor:
    """One step: packed gates g (B, G*H) and state h (B, H) -> the new state (B, H), which is
    also the step's output.  TorchScript compiles it too (lrn/modules/scripted.py), hence no
    unpacking of the blocks and no keyword-only arguments; chunk and addcmul keep the count
    of ops low, which is what a small step costs."""
    blocks = g.chunk(4 if output_gate else 3, dim=-1)  # q, k, v(, o): (B, H) each
    feedback = h if recurrent_gates else torch.zeros_like(h)
    f = torch.sigmoid(blocks[0] - feedback)
    i = torch.sigmoid(blocks[1] + feedback)
    c = torch.addcmul(f * h, i, blocks[2])  # i * v + f * h
    if activation == "tanh":
        c = torch.tanh(c)
    if output_gate:
        return torch.sigmoid(blocks[3] - c) * c
    return c


def lrn_scan_reference(
    gates: torch.Tensor,
    h0: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    *,
    num_directions: int = 1,
    reverse: bool = False,
    activation: str = "tanh",
    output_gate: bool = False,
    recurrent_gates: bool = True,
    exportable: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LRN recurrence on packed gates.  ``recurrent_gates=False`` is an ablation (not a
    kernel feature): the gates ignore h_{t-1}, f = sigma(q), i = sigma(k).  ``exportable``
    walks time with ``masked_time_scan`` (a scan op exporters keep) instead of a Python loop."""
    check_length_range(lengths, gates.shape[0])
    num_gates = 4 if output_gate else 3
    H = gates.shape[-1] // (num_directions * num_gates)

    def step(direction: int, g: torch.Tensor, h: torch.Tensor):
        h_new = lrn_step(g, h, activation=activation, output_gate=output_gate, recurrent_gates=recurrent_gates)
        return h_new, h_new

    walk = masked_time_scan if exportable else masked_time_loop
    return walk(gates, h0, lengths, num_directions, reverse, H, step)
