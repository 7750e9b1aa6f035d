"""LRN read as attention over tokens.

With g = identity the LRN step h_t = i_t * v_t + f_t * h_{t-1} unfolds exactly into

    h_t = sum_{k<=t} w_{t,k} * v_k + (prod_{l=1..t} f_l) * h_0,   w_{t,k} = i_k * prod_{l=k+1..t} f_l

(element-wise per hidden unit): the input gate i_k acts as the "key" of token k and the
chain of forget gates as the "query" that decays it (Zhang & Sennrich 2019).
The gates are the ones of the actual run (they depend on h_{t-1}), so this is an exact
reading of that run, not a different model.

With g = tanh (and for oLRN) the step is h_t = s_t * (i_t * v_t + f_t * h_{t-1}) where
s_t = tanh(c_t)/c_t in (0, 1] is tanh's contraction of the pre-activation c_t (times the
output gate sigma(o_t - c_t) for oLRN).  ``fold_activation=True`` (the default) folds
s_t into both factors, w_{t,k} = s_k i_k prod_{l=k+1..t} s_l f_l, which keeps the
unfolding exact for every cell variant.  ``fold_activation=False`` gives the paper's
gate-only weights i_k prod f_l; for tanh cells they ignore the contraction, so
sum_k w v is only an approximation of h_t (``TokenWeights.reconstruct`` measures how far;
docs/report/analysis.md reports it: large in norm, while the ranking of tokens agrees).

Products of many gates underflow, so the weights are built from cumulative sums of
log-gates (logsigmoid, float64) and exponentiated once: a weight below the float64
range becomes exactly 0 instead of NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lrn.modules import LRN, Recurrent
from lrn.ops.reference import ACTIVATIONS, lrn_scan_reference


@dataclass
class TokenWeights:
    """The unfolded recurrence of one LRN layer, per direction d and sequence b.

    weights[d, b, t, k, :]  (D, B, T, T, H) factor on v_k in direction d's state after it
                            read step t; 0 where direction d has not read k by step t,
                            and at padded steps (t or k >= lengths[b]).
    initial[d, b, t, :]     (D, B, T, H) factor on the initial state h0 in that state.
    values[d, b, k, :]      (D, B, T, H) v_k, the value each token contributes.
    """

    weights: torch.Tensor
    initial: torch.Tensor
    values: torch.Tensor
    folded: bool

    @property
    def summary(self) -> torch.Tensor:
        """(D, B, T, T) one scalar per (state t, token k): the weight averaged over hidden units."""
        return self.weights.mean(-1)

    def reconstruct(self, h0: torch.Tensor | None = None) -> torch.Tensor:
        """(T, B, D*H) sum_k w_{t,k} v_k + initial_t h0, laid out like the layer's output
        (0 at padded steps).  Equals the output exactly when the weights are folded or the
        cell is an identity LRN."""
        mixed = torch.einsum("dbtkh,dbkh->dbth", self.weights, self.values)  # (D, B, T, H)
        if h0 is not None:
            mixed = mixed + self.initial * h0.to(mixed.dtype)[:, :, None, :]
        D, B, T, H = mixed.shape
        return mixed.permute(2, 1, 0, 3).reshape(T, B, D * H)


def _processing_order(T: int, lengths: torch.Tensor, backwards: bool) -> torch.Tensor:
    """(T, B) time index read at processing step s of each sequence.  Backwards: lengths-1-s
    inside the sequence; padded steps keep their index.  The map is its own inverse."""
    steps = torch.arange(T)[:, None].expand(T, lengths.numel())
    if not backwards:
        return steps.clone()
    flipped = lengths[None, :] - 1 - steps
    return torch.where(steps < lengths[None, :], flipped, steps)


def _log_contraction(c: torch.Tensor, activation: str) -> torch.Tensor:
    """log(g(c)/c): 0 for identity; for tanh log(tanh(c)/c), with its series near c = 0."""
    if activation == "identity":
        return torch.zeros_like(c)
    small = c.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(c), c)
    ratio = torch.where(small, 1 - c * c / 3, torch.tanh(safe) / safe)
    return torch.log(ratio)


@torch.no_grad()
def token_weights(
    gates: torch.Tensor,
    h0: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    *,
    num_directions: int = 1,
    reverse: bool = False,
    activation: str = "tanh",
    output_gate: bool = False,
    recurrent_gates: bool = True,
    fold_activation: bool = True,
) -> TokenWeights:
    """Per-token weights w_{t,k} of one LRN layer, for every state t and token k.

    Arguments are those of ``lrn_scan_reference`` (packed gates (T, B, D*G*H), h0 (D, B, H),
    lengths (B,)), plus ``fold_activation`` (see the module docstring).  The recurrence is
    run once with the reference to get the states the gates saw.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if gates.dim() != 3:
        raise ValueError(f"gates must be a 3-D (T, B, D*G*H) tensor, got {gates.dim()}-D")
    T, B, width = gates.shape
    num_gates = 4 if output_gate else 3
    if width % (num_directions * num_gates):
        raise ValueError(f"gates width {width} is not a multiple of "
                         f"num_directions*{num_gates} = {num_directions * num_gates}")
    H = width // (num_directions * num_gates)
    gates = gates.detach().double()
    h0 = gates.new_zeros(num_directions, B, H) if h0 is None else h0.detach().double()
    lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths.cpu().long()
    out, _ = lrn_scan_reference(gates, h0, lengths, num_directions=num_directions, reverse=reverse,
                                activation=activation, output_gate=output_gate,
                                recurrent_gates=recurrent_gates)

    steps = torch.arange(T)
    inside = steps[:, None] < lengths[None, :]  # (T, B), the same in processing order
    weights, initial, values = [], [], []
    for d in range(num_directions):
        backwards = d == 1 or (num_directions == 1 and reverse)
        order = _processing_order(T, lengths, backwards).to(gates.device)  # (T, B)

        def in_order(x: torch.Tensor) -> torch.Tensor:  # (T, B, *) between time and processing order
            return x.gather(0, order[..., None].expand_as(x))

        block = in_order(gates[..., d * num_gates * H:(d + 1) * num_gates * H])  # (T, B, G*H)
        q, k, v = block[..., :H], block[..., H:2 * H], block[..., 2 * H:3 * H]
        states = in_order(out[..., d * H:(d + 1) * H])  # (T, B, H) h_s in processing order
        h_prev = torch.cat([h0[d][None], states[:-1]], 0)  # (T, B, H) state each step read
        feedback = h_prev if recurrent_gates else torch.zeros_like(h_prev)
        log_f = F.logsigmoid(q - feedback)
        log_i = F.logsigmoid(k + feedback)
        pre = log_i.exp() * v + log_f.exp() * h_prev  # (T, B, H) c before g
        log_scale = _log_contraction(pre, activation)
        if output_gate:
            c = torch.tanh(pre) if activation == "tanh" else pre
            log_scale = log_scale + F.logsigmoid(block[..., 3 * H:] - c)
        if fold_activation:
            log_f, log_i = log_f + log_scale, log_i + log_scale
        # chain[s] = sum_{l<=s} log f_l, so log prod_{l=r+1..s} f_l = chain[s] - chain[r].
        chain = log_f.cumsum(0)  # (T, B, H)
        log_w = chain[:, None] - chain[None, :] + log_i[None, :]  # (S, R, B, H)
        causal = (steps[None, :] <= steps[:, None])[:, :, None] & inside[:, None, :] & inside[None, :, :]
        w = torch.where(causal[..., None].to(gates.device), log_w, float("-inf")).exp()
        init = torch.where(inside[..., None].to(gates.device), chain, float("-inf")).exp()
        # back to time order on both axes (the processing-order map is an involution)
        w = w.gather(0, order[:, None, :, None].expand_as(w))
        w = w.gather(1, order[None, :, :, None].expand_as(w))
        weights.append(w.permute(2, 0, 1, 3))  # (B, T, T, H)
        initial.append(in_order(init).permute(1, 0, 2))
        values.append(in_order(v).permute(1, 0, 2))
    return TokenWeights(torch.stack(weights), torch.stack(initial), torch.stack(values),
                        folded=fold_activation)


@torch.no_grad()
def layer_token_weights(rnn: nn.Module, x: torch.Tensor, hx: torch.Tensor | None = None,
                        lengths: torch.Tensor | None = None, *, layer: int = 0,
                        fold_activation: bool = True) -> TokenWeights:
    """``token_weights`` of layer ``layer`` of an LRN stack (``lrn.LRN`` or ``make_rnn("lrn" |
    "olrn", ...)``) on its input x (T, B, in) (or (B, T, in) if batch_first), with the
    stack's hx (L*D, B, H) and lengths (B,).  Layer 0 weighs the input tokens themselves;
    a deeper layer weighs the previous layer's outputs at each position."""
    stack = rnn.rnn if isinstance(rnn, Recurrent) else rnn
    if not isinstance(stack, LRN):
        raise ValueError(f"token weights exist for LRN and oLRN layers only, got {type(stack).__name__}")
    if not 0 <= layer < stack.num_layers:
        raise ValueError(f"layer must lie in [0, {stack.num_layers - 1}], got {layer}")
    if stack.batch_first:
        x = x.transpose(0, 1)
    D = stack.num_directions
    layer_input = x
    for below in range(layer):  # the layers under ``layer``, as LRN.forward runs them in eval mode
        h0 = None if hx is None else hx[below * D:(below + 1) * D]
        layer_input, _ = stack._scan(stack.layer_projection(layer_input, below), h0, lengths, below,
                                     layer_input)
    gates = stack.layer_projection(layer_input, layer)  # (T, B, D*G*H)
    return token_weights(gates, None if hx is None else hx[layer * D:(layer + 1) * D], lengths,
                         num_directions=D, activation=stack.activation,
                         output_gate=stack.output_gate, recurrent_gates=stack.recurrent_gates,
                         fold_activation=fold_activation)
