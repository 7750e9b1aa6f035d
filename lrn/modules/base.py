"""What every recurrent layer of ours shares: the nn.GRU contract.

A subclass describes one cell by ``num_gates`` (width of its input projection in
units of H, per direction) and ``_scan`` (the recurrence over one layer's
projected input, both directions at once).  This class does the rest exactly as
nn.GRU does: parameter naming, multi-layer stacking, bidirectionality, dropout
between layers, batch_first, unbatched and PackedSequence input, h_0 / h_n
shapes and argument validation.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lrn.functional import check_lengths
from lrn.ops.linear import linear


def check_flags(owner: str, **flags) -> None:
    """Every flag must be a real bool: a string such as 'false' is truthy and would switch
    the feature on without a word."""
    for arg, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{owner}: {arg} must be True or False, got {value!r}")


def refuse_script(name: str) -> None:
    """torch.jit.script calls ``__prepare_scriptable__`` on every submodule first: one clear
    line instead of TorchScript's compiler error deep inside the layer."""
    raise NotImplementedError(
        f"{name} cannot be compiled by torch.jit.script (TorchScript is in maintenance mode); use torch.export "
        "or torch.onnx.export(dynamo=True), which keep the sequence length dynamic, or torch.jit.trace "
        "(docs/deploy.md)")


class ElementwiseRNN(nn.Module):
    """Base of the layers whose recurrence is elementwise, every matmul in one input projection
    per layer: LRN, ATR and SRU (see module docstring)."""

    num_gates: int  # blocks of H in one direction's input projection

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_flags(name, bias=bias, batch_first=batch_first, bidirectional=bidirectional, layer_norm=layer_norm)
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size),
                           ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: {arg} must be a positive integer, got {value!r}")
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.layer_norm = layer_norm
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            width = self._gate_count(layer_input) * hidden_size
            for suffix in self._suffixes:
                setattr(self, f"weight_ih_l{layer}{suffix}",
                        nn.Parameter(torch.empty(width, layer_input, **factory)))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", nn.Parameter(torch.empty(width, **factory)))
                if layer_norm:
                    setattr(self, f"ln_weight_l{layer}{suffix}", nn.Parameter(torch.empty(width, **factory)))
                    setattr(self, f"ln_bias_l{layer}{suffix}", nn.Parameter(torch.empty(width, **factory)))
                self._init_layer_extra(layer, suffix, factory)
        self.reset_parameters()

    # ----------------------------------------------------------- cell hooks
    def _gate_count(self, layer_input: int) -> int:
        """Blocks of H in one direction's input projection for a layer with this input size."""
        return self.num_gates

    def _init_layer_extra(self, layer: int, suffix: str, factory: dict) -> None:
        """Register parameters beyond the input projection (recurrent weights, ...)."""

    def _scan(self, gates: Tensor, h0: Tensor | None, lengths: Tensor | None, layer: int,
              layer_input: Tensor) -> tuple[Tensor, Tensor]:
        """gates (T, B, D*G*H), h0 (D, B, H) -> out (T, B, D*H), h_last (D, B, H)."""
        raise NotImplementedError

    # ------------------------------------------------------------ contract
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.num_directions * self.hidden_size

    @property
    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases (the LRN authors' initialisation); layer
        norm starts as the identity."""
        for name, param in self.named_parameters():
            if name.startswith("weight_ih"):
                xavier_gate_init_(param, self.hidden_size)
            elif name.startswith("ln_weight"):
                nn.init.ones_(param)
            elif "bias" in name:
                nn.init.zeros_(param)
            else:
                self._reset_extra(name, param)

    def _reset_extra(self, name: str, param: nn.Parameter) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no initialisation for {name}")

    def flatten_parameters(self) -> None:
        """No-op, for code written for cuDNN's nn.GRU: our weights need no flattening."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.layer_norm:
            s += ", layer_norm=True"
        return s

    def joined(self, prefix: str, layer: int) -> Tensor:
        """One layer's parameter ``prefix`` of every direction, stacked: (D*G*H, ...)."""
        parts = [getattr(self, f"{prefix}_l{layer}{s}") for s in self._suffixes]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 0)

    def layer_projection(self, x: Tensor, layer: int) -> Tensor:
        """Input projection of one layer, all directions in one matmul: (T, B, in) -> (T, B, D*G*H)."""
        gates = linear(x, self.joined("weight_ih", layer), self.joined("bias_ih", layer) if self.bias else None)
        return self.layer_norm_gates(gates, layer)

    def layer_norm_gates(self, gates: Tensor, layer: int) -> Tensor:
        """The layer norm of each H-block of a layer's projection, when the layer has one."""
        if not self.layer_norm:
            return gates
        return block_layer_norm(gates, self.joined("ln_weight", layer), self.joined("ln_bias", layer),
                                self.hidden_size)

    def _dtype_reference(self) -> Tensor:
        """A tensor with the dtype and device that inputs must have."""
        return self.weight_ih_l0

    def _check_input(self, input: Tensor, hx: Tensor | None) -> None:
        name = type(self).__name__
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        if input.size(-1) != self.input_size:
            raise ValueError(f"{name}: input.size(-1) must be equal to input_size. "
                             f"Expected {self.input_size}, got {input.size(-1)}")
        weight = self._dtype_reference()
        if input.dtype != weight.dtype:
            raise ValueError(f"{name}: input must have the type {weight.dtype} of the parameters, "
                             f"got type {input.dtype}")
        if input.device != weight.device:
            raise ValueError(f"{name}: input is on {input.device} but the parameters are on {weight.device}")
        if hx is not None:
            if not isinstance(hx, Tensor):
                raise ValueError(f"{name}: hx must be a Tensor, got {type(hx).__name__}")
            if hx.dtype != input.dtype or hx.device != input.device:
                raise ValueError(f"{name}: hx must match the input's dtype and device ({input.dtype}, "
                                 f"{input.device}), got ({hx.dtype}, {hx.device})")

    def __prepare_scriptable__(self):
        refuse_script(type(self).__name__)

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None,
                lengths: Tensor | None = None):
        """nn.GRU's forward, plus ``lengths``: an optional (B,) tensor of valid steps for padded
        input (the fast alternative to a PackedSequence).

        Args:
            input: (T, B, in) ((B, T, in) if batch_first), (T, in) unbatched, or a PackedSequence.
            hx: (num_layers * num_directions, B, H), or (num_layers * num_directions, H) unbatched.
        Returns:
            output: (T, B, D*H) (batch_first applies), or a PackedSequence like the input; 0 at
                padded steps.  h_n: (num_layers * num_directions, B, H).
        """
        name = type(self).__name__
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError(f"{name}: pass lengths or a PackedSequence, not both")
            sorted_indices, batch_sizes = input.sorted_indices, input.batch_sizes
            x, lengths = pad_packed_sequence(input)  # (T, B, in), original batch order
            self._check_input(x, hx)
            batched = True
        else:
            if not isinstance(input, Tensor):
                raise ValueError(f"{name}: input must be a Tensor or PackedSequence, got {type(input).__name__}")
            self._check_input(input, hx)
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            raise ValueError(f"{name}: sequence length must be at least 1, got 0")
        expected = (self.num_layers * self.num_directions, B, self.hidden_size)
        if hx is not None:
            if not batched:
                if hx.dim() != 2:
                    raise ValueError(f"{name}: For unbatched 2-D input, hx should also be 2-D "
                                     f"but got {hx.dim()}-D tensor")
                hx = hx.unsqueeze(1)
            if tuple(hx.shape) != expected:
                raise ValueError(f"{name}: Expected hidden size {expected}, got {list(hx.shape)}")
        if lengths is not None:
            lengths = check_lengths(lengths, B, T)
            if not torch.compiler.is_compiling() and int(lengths.min()) == T:
                lengths = None  # all full: the cheaper path
            else:
                lengths = lengths.to(x.device)

        layer_input, finals = x, []
        D = self.num_directions
        if B == 0:  # as nn.GRU: empty outputs (an empty batch can come from a filter or a split)
            output = x.new_zeros(T, 0, D * self.hidden_size)
            h_n = x.new_zeros(self.num_layers * D, 0, self.hidden_size)
            return (output.transpose(0, 1) if self.batch_first else output), h_n
        for layer in range(self.num_layers):
            gates = self.layer_projection(layer_input, layer)  # (T, B, D*G*H)
            h0 = None if hx is None else hx[layer * D:(layer + 1) * D]
            out, h_last = self._scan(gates, h0, lengths, layer, layer_input)
            finals.append(h_last)
            if self.dropout and self.training and layer < self.num_layers - 1:
                out = F.dropout(out, self.dropout, training=True)
            layer_input = out
        h_n = torch.cat(finals, 0)  # (L*D, B, H)

        if packed:
            # Re-pack in the input's own order, so batch_sizes and sorted_indices match.
            order = sorted_indices if sorted_indices is not None else torch.arange(B)
            data = pack_padded_sequence(layer_input.index_select(1, order.to(x.device)),
                                        lengths_of(batch_sizes), enforce_sorted=True).data
            return PackedSequence(data, batch_sizes, sorted_indices, input.unsorted_indices), h_n
        output = layer_input
        if not batched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n


def block_layer_norm(gates: Tensor, ln_weight: Tensor, ln_bias: Tensor, hidden_size: int) -> Tensor:
    """Layer norm over each H-block of a projection separately: (..., G*H) -> (..., G*H)."""
    blocks = gates.unflatten(-1, (-1, hidden_size))  # (..., G, H)
    return F.layer_norm(blocks, (hidden_size,)).flatten(-2) * ln_weight + ln_bias


def xavier_gate_init_(weight: Tensor, hidden_size: int) -> None:
    """Xavier-uniform for a (G*H, in) stack of G gate projections: each block is its own
    (H, in) matrix, so the fan-out is H, not G*H."""
    bound = math.sqrt(6.0 / (weight.shape[1] + hidden_size))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def lengths_of(batch_sizes: Tensor) -> Tensor:
    """Sorted sequence lengths from a PackedSequence's batch_sizes."""
    B = int(batch_sizes[0])
    return (batch_sizes.unsqueeze(1) > torch.arange(B).unsqueeze(0)).sum(0)
