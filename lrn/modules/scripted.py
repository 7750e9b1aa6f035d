"""TorchScript forms of ``LRN`` and ``LRNCell``, which ``torch.jit.script`` compiles in their place.

``torch.jit.script(model)`` calls ``__prepare_scriptable__`` on every submodule and puts
the result in the submodule's place.  Ours returns one of these twins: the same Parameter
objects under the same names (so ``state_dict`` keys and training updates are shared), a
forward that TorchScript compiles (the recurrence as plain torch ops, a loop over time that
stays a loop, so the scripted model runs at any sequence length, saves with
``torch.jit.save`` and loads without this package), and, called eagerly, the original
layer's forward (fused kernels, PackedSequence), so the user's eager model keeps its speed
after being scripted.

Under TorchScript, padded input takes ``lengths``; PackedSequence input is eager-only.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrn.modules.base import block_layer_norm
from lrn.ops.reference import lrn_step


def _direction(gates: Tensor, h: Tensor, lengths: Optional[Tensor], backwards: bool, activation: str,
               output_gate: bool, recurrent_gates: bool) -> Tuple[Tensor, Tensor]:
    """One direction over time: gates (T, B, G*H), h (B, H) -> out (T, B, H), h_last (B, H).
    Steps t >= lengths[b] keep the state and output 0, as every backend does."""
    steps = gates.unbind(0)  # never gates[t]: indexing inside autograd makes backward quadratic in T
    T = len(steps)
    outs: List[Tensor] = []
    zero = torch.zeros_like(h)
    for i in range(T):
        t = T - 1 - i if backwards else i
        new = lrn_step(steps[t], h, activation, output_gate, recurrent_gates)
        if lengths is None:
            h = new
            outs.append(new)
        else:
            valid = (lengths > t).unsqueeze(1)  # (B, 1)
            h = torch.where(valid, new, h)
            outs.append(torch.where(valid, new, zero))
    if backwards:
        outs.reverse()
    return torch.stack(outs, 0), h


class ScriptedLRN(nn.Module):
    """The TorchScript form of an :class:`lrn.LRN` (module docstring); built by
    ``LRN.__prepare_scriptable__``."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        for name in ("input_size", "hidden_size", "num_layers", "batch_first", "bias", "layer_norm",
                     "num_directions", "activation", "output_gate", "recurrent_gates"):
            setattr(self, name, getattr(layer, name))
        self.dropout = float(layer.dropout)
        # Per layer and direction: weight, then bias and the layer norm's pair where present.
        self.per_direction = 1 + int(layer.bias) + 2 * int(layer.layer_norm)
        flat: List[Tensor] = []
        for index in range(layer.num_layers):
            for suffix in layer._suffixes:
                for prefix in ("weight_ih", "bias_ih", "ln_weight", "ln_bias"):
                    name = f"{prefix}_l{index}{suffix}"
                    if hasattr(layer, name):
                        self.register_parameter(name, getattr(layer, name))
                        flat.append(getattr(layer, name))
        self._flat_weights = flat  # the registered Parameters themselves, as nn.GRU keeps them
        # In a tuple: not a submodule (no second set of state_dict keys), and out of reach of
        # torch.jit.script's walk over attributes, which would put this twin in its place.
        object.__setattr__(self, "_eager", (layer,))

    @torch.jit.unused
    def _eager_forward(self, input: Tensor, hx: Optional[Tensor], lengths: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        return self._eager[0](input, hx, lengths)

    def _layer(self, x: Tensor, hx: Optional[Tensor], lengths: Optional[Tensor], layer: int) -> Tuple[Tensor, Tensor]:
        """One layer, every direction: x (T, B, in) -> out (T, B, D*H), h_last (D, B, H)."""
        outs: List[Tensor] = []
        finals: List[Tensor] = []
        for d in range(self.num_directions):
            first = (layer * self.num_directions + d) * self.per_direction
            weight = self._flat_weights[first]
            bias: Optional[Tensor] = self._flat_weights[first + 1] if self.bias else None
            gates = F.linear(x, weight, bias)  # (T, B, G*H)
            if self.layer_norm:
                ln = first + 1 + int(self.bias)
                gates = block_layer_norm(gates, self._flat_weights[ln], self._flat_weights[ln + 1], self.hidden_size)
            h0 = x.new_zeros(x.size(1), self.hidden_size) if hx is None else hx[layer * self.num_directions + d]
            out, h_last = _direction(gates, h0, lengths, d == 1, self.activation, self.output_gate,
                                     self.recurrent_gates)
            outs.append(out)
            finals.append(h_last)
        return torch.cat(outs, -1), torch.stack(finals, 0)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """LRN's forward on a Tensor (see :meth:`lrn.LRN.forward`)."""
        if not torch.jit.is_scripting():
            return self._eager_forward(input, hx, lengths)
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError("LRN: Expected input to be 2D or 3D, got " + str(input.dim()) + "D tensor instead")
        if input.size(-1) != self.input_size:
            raise ValueError("LRN: input.size(-1) must be equal to input_size. Expected "
                             + str(self.input_size) + ", got " + str(input.size(-1)))
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)  # (T, B, in)
        T, B = x.size(0), x.size(1)
        if T == 0:
            raise ValueError("LRN: sequence length must be at least 1, got 0")
        if hx is not None:
            if not batched:
                hx = hx.unsqueeze(1)
            if hx.size() != [self.num_layers * self.num_directions, B, self.hidden_size]:
                raise ValueError("LRN: Expected hidden size " + str([self.num_layers * self.num_directions, B,
                                                                    self.hidden_size]) + ", got " + str(hx.size()))
        if lengths is not None:
            if lengths.dim() != 1 or lengths.numel() != B:
                raise ValueError("LRN: lengths must have shape (" + str(B) + ",), got " + str(lengths.size()))
            if B > 0 and (int(lengths.min()) < 1 or int(lengths.max()) > T):
                raise ValueError("LRN: lengths must lie in [1, " + str(T) + "] (the sequence length)")
            lengths = lengths.to(device=x.device, dtype=torch.int64)
        finals: List[Tensor] = []
        for layer in range(self.num_layers):
            x, h_last = self._layer(x, hx, lengths, layer)
            finals.append(h_last)
            if self.dropout > 0.0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        h_n = torch.cat(finals, 0)  # (L*D, B, H)
        if not batched:
            return x.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, h_n


class ScriptedLRNCell(nn.Module):
    """The TorchScript form of an :class:`lrn.LRNCell` (module docstring); built by
    ``LRNCell.__prepare_scriptable__``."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        for name in ("input_size", "hidden_size", "activation", "output_gate"):
            setattr(self, name, getattr(cell, name))
        self.weight_ih = cell.weight_ih
        self.bias_ih = cell.bias_ih
        self.ln_weight = cell.ln_weight
        self.ln_bias = cell.ln_bias
        object.__setattr__(self, "_eager", (cell,))  # as in ScriptedLRN

    @torch.jit.unused
    def _eager_forward(self, input: Tensor, hx: Optional[Tensor]) -> Tensor:
        return self._eager[0](input, hx)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        """LRNCell's forward (see :class:`lrn.LRNCell`)."""
        if not torch.jit.is_scripting():
            return self._eager_forward(input, hx)
        if input.dim() != 1 and input.dim() != 2:
            raise ValueError("LRNCell: Expected input to be 1D or 2D, got " + str(input.dim()) + "D instead")
        if input.size(-1) != self.input_size:
            raise ValueError("LRNCell: input.size(-1) must be equal to input_size. Expected "
                             + str(self.input_size) + ", got " + str(input.size(-1)))
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)  # (B, in)
        if hx is None:
            h = x.new_zeros(x.size(0), self.hidden_size)
        else:
            h = hx if batched else hx.unsqueeze(0)
            if h.size() != [x.size(0), self.hidden_size]:
                raise ValueError("LRNCell: Expected hidden size " + str([x.size(0), self.hidden_size])
                                 + ", got " + str(h.size()))
        gates = F.linear(x, self.weight_ih, self.bias_ih)  # (B, G*H)
        ln_weight, ln_bias = self.ln_weight, self.ln_bias
        if ln_weight is not None and ln_bias is not None:
            gates = block_layer_norm(gates, ln_weight, ln_bias, self.hidden_size)
        h = lrn_step(gates, h, self.activation, self.output_gate, True)
        return h if batched else h.squeeze(0)
