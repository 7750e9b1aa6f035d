"""The paper's other recurrent units in our nn.GRU contract (LSTM and GRU are torch's own).

ATR (Zhang, Xiong & Su 2018, "Simplifying NMT with an addition-subtraction twin-gated
recurrent network"), with one recurrent matmul per step::

    p_t = x_t W + b;  q_t = h_{t-1} U + b';  i_t = sigma(p_t + q_t);  f_t = sigma(p_t - q_t)
    h_t = tanh(i_t * p_t + f_t * h_{t-1})

SRU (Lei et al. 2018, "Simple Recurrent Units for Highly Parallelizable Recurrence"),
elementwise like LRN, with a highway connection::

    x~_t, f'_t, r'_t (, x^_t) = x_t [W; W_f; W_r (; W_h)] + b
    f_t = sigma(f'_t + v_f * c_{t-1});  r_t = sigma(r'_t + v_r * c_{t-1})
    c_t = f_t * c_{t-1} + (1 - f_t) * x~_t
    h_t = r_t * c_t + (1 - r_t) * x^_t      (x^_t = x_t when input size = H, else the W_h block)

The state carried between steps (h_n) is h for ATR and c for SRU.  Both run their
recurrence as a PyTorch loop (lrn.ops.reference.masked_time_loop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrn.modules.base import ElementwiseRNN
from lrn.ops.reference import masked_time_loop


class ATR(ElementwiseRNN):
    """Addition-subtraction twin-gated recurrent network; nn.GRU arguments and contract.

    Parameters per layer and direction: ``weight_ih`` (H, in), ``bias_ih`` (H),
    ``weight_hh`` (H, H), ``bias_hh`` (H).
    """

    num_gates = 1

    def _init_layer_extra(self, layer, suffix, factory):
        H = self.hidden_size
        setattr(self, f"weight_hh_l{layer}{suffix}", nn.Parameter(torch.empty(H, H, **factory)))
        if self.bias:
            setattr(self, f"bias_hh_l{layer}{suffix}", nn.Parameter(torch.empty(H, **factory)))

    def _reset_extra(self, name, param):
        nn.init.xavier_uniform_(param)  # weight_hh

    def _scan(self, gates, h0, lengths, layer, layer_input):
        weights = [getattr(self, f"weight_hh_l{layer}{s}") for s in self._suffixes]
        biases = [getattr(self, f"bias_hh_l{layer}{s}") if self.bias else None for s in self._suffixes]

        def step(direction: int, p: Tensor, h: Tensor):
            q = F.linear(h, weights[direction], biases[direction])
            h_new = torch.tanh(torch.sigmoid(p + q) * p + torch.sigmoid(p - q) * h)
            return h_new, h_new

        return masked_time_loop(gates, h0, lengths, self.num_directions, False, self.hidden_size, step)


class SRU(ElementwiseRNN):
    """Simple Recurrent Unit (Lei et al. 2018); nn.GRU arguments and contract.

    Parameters per layer and direction: ``weight_ih`` (3H, in) = [W; W_f; W_r], or (4H, in)
    with the highway projection W_h when the layer's input size differs from H;
    ``bias_ih``; ``weight_c`` (2H) = [v_f; v_r].  h_n holds the cell states c.
    """

    num_gates = 3

    def _gate_count(self, layer_input: int) -> int:
        return 3 if layer_input == self.hidden_size else 4

    def _init_layer_extra(self, layer, suffix, factory):
        setattr(self, f"weight_c_l{layer}{suffix}", nn.Parameter(torch.empty(2 * self.hidden_size, **factory)))

    def _reset_extra(self, name, param):
        bound = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(param, -bound, bound)  # weight_c

    def _scan(self, gates, h0, lengths, layer, layer_input):
        H = self.hidden_size
        peepholes = [getattr(self, f"weight_c_l{layer}{s}").split(H) for s in self._suffixes]
        projected_highway = gates.shape[-1] // self.num_directions == 4 * H
        if projected_highway:
            step_inputs = gates
        else:
            # Append the raw input as the highway block of each direction.
            blocks = gates.split(3 * H, dim=-1)
            step_inputs = torch.cat([t for b in blocks for t in (b, layer_input)], -1)

        def step(direction: int, g: Tensor, c: Tensor):
            x_tilde, f_pre, r_pre, highway = g.split(H, dim=-1)
            v_f, v_r = peepholes[direction]
            f = torch.sigmoid(f_pre + v_f * c)
            r = torch.sigmoid(r_pre + v_r * c)
            c_new = f * c + (1 - f) * x_tilde
            return r * c_new + (1 - r) * highway, c_new

        return masked_time_loop(step_inputs, h0, lengths, self.num_directions, False, H, step)
