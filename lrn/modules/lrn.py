"""``LRN`` and ``LRNCell``: the Lightweight Recurrent Network as nn.GRU / nn.GRUCell drop-ins."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lrn.functional import check_activation, check_backend, lrn_cell_step, lrn_scan
from lrn.modules.base import ElementwiseRNN, block_layer_norm, check_flags, xavier_gate_init_
from lrn.ops.linear import linear


class LRN(ElementwiseRNN):
    r"""Multi-layer Lightweight Recurrent Network (Zhang & Sennrich, ACL 2019).

    For each layer and step (sigma the sigmoid, g = tanh or identity)::

        q_t, k_t, v_t = x_t W_q + b_q, x_t W_k + b_k, x_t W_v + b_v   (one matmul, outside the loop)
        f_t = sigma(q_t - h_{t-1});  i_t = sigma(k_t + h_{t-1})
        h_t = g(i_t * v_t + f_t * h_{t-1})

    With ``output_gate=True`` (oLRN) c_t = g(i_t * v_t + f_t * h_{t-1}),
    o_t = sigma(x_t W_o - c_t) and h_t = o_t * c_t.

    Same arguments, parameters names and forward contract as :class:`torch.nn.GRU`;
    ``weight_ih_l{k}[_reverse]`` has shape (3H, in) (4H with the output gate) with row
    blocks [W_q; W_k; W_v(; W_o)]; there is no ``weight_hh``.

    Args (beyond nn.GRU's):
        activation: "tanh" (default) or "identity".
        layer_norm: layer-normalise each of q, k, v (outside the recurrence), as the
            paper's "+LN" rows.
        output_gate: the oLRN variant.
        recurrent_gates: ablation switch; False drops h_{t-1} from both gates.
        backend: "auto" | "reference" | "cpu" | "triton" (see lrn.functional).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 activation: str = "tanh", layer_norm: bool = False, output_gate: bool = False,
                 recurrent_gates: bool = True, backend: str = "auto", device=None, dtype=None) -> None:
        check_activation(activation)
        check_backend(backend)
        check_flags(type(self).__name__, output_gate=output_gate, recurrent_gates=recurrent_gates)
        self.num_gates = 4 if output_gate else 3
        self.activation = activation
        self.output_gate = output_gate
        self.recurrent_gates = recurrent_gates
        self.backend = backend
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, layer_norm=layer_norm, device=device, dtype=dtype)

    def _scan(self, gates, h0, lengths, layer, layer_input):
        return lrn_scan(gates, h0, lengths, num_directions=self.num_directions, activation=self.activation,
                        output_gate=self.output_gate, backend=self.backend, recurrent_gates=self.recurrent_gates)

    def __prepare_scriptable__(self):
        """torch.jit.script compiles a twin with the same parameters (lrn/modules/scripted.py)."""
        from lrn.modules.scripted import ScriptedLRN

        return ScriptedLRN(self)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.activation != "tanh":
            s += f", activation={self.activation!r}"
        if self.output_gate:
            s += ", output_gate=True"
        if not self.recurrent_gates:
            s += ", recurrent_gates=False"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s


class LRNCell(nn.Module):
    r"""One LRN step, with the :class:`torch.nn.GRUCell` contract (for step-wise decoding).

    ``weight_ih`` (3H, in) holds [W_q; W_k; W_v] (4H with W_o for ``output_gate``) and
    ``bias_ih`` (3H); with ``layer_norm``, ``ln_weight`` / ``ln_bias`` (3H).  Stepping a cell
    over a sequence equals :class:`LRN` with the same weights.

    forward(input, hx=None): input (B, in) or (in,), hx (B, H) or (H,) -> h' of hx's shape.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 activation: str = "tanh", layer_norm: bool = False, output_gate: bool = False,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LRNCell: {arg} must be a positive integer, got {value!r}")
        check_activation(activation)
        check_backend(backend)
        check_flags("LRNCell", bias=bias, layer_norm=layer_norm, output_gate=output_gate)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.activation, self.layer_norm = activation, layer_norm
        self.output_gate, self.backend = output_gate, backend
        width = (4 if output_gate else 3) * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(width, input_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(width, **factory)) if bias else None
        self.ln_weight = nn.Parameter(torch.empty(width, **factory)) if layer_norm else None
        self.ln_bias = nn.Parameter(torch.empty(width, **factory)) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        xavier_gate_init_(self.weight_ih, self.hidden_size)
        for param, value in ((self.bias_ih, 0.0), (self.ln_weight, 1.0), (self.ln_bias, 0.0)):
            if param is not None:
                nn.init.constant_(param, value)

    def projection(self, x: Tensor) -> Tensor:
        """x W^T + b, layer-normed per H-block with ``layer_norm``: (B, in) -> (B, G*H)."""
        return self.layer_norm_gates(linear(x, self.weight_ih, self.bias_ih))

    def layer_norm_gates(self, gates: Tensor) -> Tensor:
        if not self.layer_norm:
            return gates
        return block_layer_norm(gates, self.ln_weight, self.ln_bias, self.hidden_size)

    def _dtype_reference(self) -> Tensor:
        """A tensor with the dtype and device that inputs must have."""
        return self.weight_ih

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        # A decoder calls this once per step: the checks are nn.GRUCell's, written to cost little.
        weight = self._dtype_reference()
        dim = input.dim()
        if dim != 2 and dim != 1:
            raise ValueError(f"LRNCell: Expected input to be 1D or 2D, got {dim}D instead")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"LRNCell: input.size(-1) must be equal to input_size. "
                             f"Expected {self.input_size}, got {input.shape[-1]}")
        if input.dtype != weight.dtype or input.device != weight.device:
            raise ValueError(f"LRNCell: input must match the parameters' dtype and device "
                             f"({weight.dtype}, {weight.device}), got ({input.dtype}, {input.device})")
        batched = dim == 2
        x = input if batched else input.unsqueeze(0)  # (B, in)
        B, H = x.shape[0], self.hidden_size
        h = None
        if hx is not None:
            h = hx if batched else hx.unsqueeze(0)  # (B, H)
            if h.shape != (B, H):
                raise ValueError(f"LRNCell: Expected hidden size {(B, H)}, got {list(h.shape)}")
            if h.dtype != x.dtype or h.device != x.device:
                raise ValueError(f"LRNCell: hx must match the input's dtype and device "
                                 f"({x.dtype}, {x.device}), got ({h.dtype}, {h.device})")
        if B == 0:  # as nn.GRUCell: an empty batch gives an empty state
            return x.new_zeros(0, H)
        gates = self.projection(x)  # (B, G*H)
        h = lrn_cell_step(gates, h, activation=self.activation, output_gate=self.output_gate, backend=self.backend)
        return h if batched else h[0]

    def __prepare_scriptable__(self):
        """torch.jit.script compiles a twin with the same parameters (lrn/modules/scripted.py)."""
        from lrn.modules.scripted import ScriptedLRNCell

        return ScriptedLRNCell(self)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        for flag in ("layer_norm", "output_gate"):
            if getattr(self, flag):
                s += f", {flag}=True"
        if self.activation != "tanh":
            s += f", activation={self.activation!r}"
        return s
