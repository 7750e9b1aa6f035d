"""The attentional encoder-decoder for machine translation (after the LRN authors' deep NMT).

Encoder: embedding, a bidirectional first layer, then unidirectional layers.  Every
layer's output is projected back to the embedding width and added to its input
(residual), optionally followed by layer normalisation (then also inside the
cells), as in the authors' ``deepnmt``.

Decoder: the first recurrent layer reads the target embeddings; its output
queries the source (dot-product attention over projected encoder states); the
higher layers read ``[x; context]``.  A tanh readout of ``[x_top; context]``
feeds a softmax tied to the target embeddings, whose bias starts at the
target unigram log-frequencies.

One difference from the authors' model, deliberate: their first decoder layer
attends *inside* the recurrence (a conditional GRU), which forces a Python loop
over target steps in training.  Here attention sits between layers, so each
decoder layer runs over the whole target sequence in one call (the fused LRN
kernels apply) and, when decoding, one step at a time through ``rnn.step`` with
exactly the same result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrn.modules import make_rnn, reorder_state


@dataclass
class Memory:
    """The encoded source, as the decoder attends to it."""

    values: Tensor  # (S, B, E) encoder outputs
    keys: Tensor  # (S, B, E) values projected for attention
    pad: Tensor  # (S, B) bool, True at padding

    def reorder(self, index: Tensor) -> Memory:
        """Rows ``index`` of the batch (beam expansion, dropping finished sentences)."""
        return Memory(self.values.index_select(1, index), self.keys.index_select(1, index),
                      self.pad.index_select(1, index))


class ResidualStack(nn.Module):
    """Recurrent layers, each followed by a projection to ``width``, a residual
    connection and optional layer normalisation (``layer_norm`` also asks the cells
    for theirs, as the authors' model does; torch's gru and lstm refuse it)."""

    def __init__(self, cell: str, cell_kwargs: dict[str, Any], input_sizes: list[int], width: int,
                 hidden_size: int, dropout: float, layer_norm: bool, bidirectional_first: bool):
        super().__init__()
        self.rnns = nn.ModuleList(
            make_rnn(cell, size, hidden_size, bidirectional=bidirectional_first and i == 0,
                     layer_norm=layer_norm, **cell_kwargs)
            for i, size in enumerate(input_sizes))
        self.projs = nn.ModuleList(nn.Linear(rnn.output_size, width) for rnn in self.rnns)
        self.norms = nn.ModuleList(nn.LayerNorm(width) if layer_norm else nn.Identity()
                                   for _ in self.rnns)
        self.dropout = nn.Dropout(dropout)

    def layer(self, i: int, x: Tensor, rnn_input: Tensor, lengths: Tensor | None) -> Tensor:
        """Layer ``i`` over a whole sequence: (T, B, in) -> (T, B, width)."""
        out, _ = self.rnns[i](rnn_input, lengths=lengths)  # (T, B, D*H)
        return self.norms[i](x + self.dropout(self.projs[i](out)))

    def layer_step(self, i: int, x: Tensor, rnn_input: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Layer ``i`` for one step: (B, in) -> (B, width), carrying ``state``."""
        out, state = self.rnns[i].step(rnn_input, state)  # (B, H)
        return self.norms[i](x + self.dropout(self.projs[i](out))), state


class Seq2Seq(nn.Module):
    def __init__(self, cell: str, cell_kwargs: dict[str, Any], vocab_size: int, *,
                 embed_size: int, hidden_size: int, encoder_layers: int, decoder_layers: int,
                 dropout: float, layer_norm: bool, pad_id: int, out_bias: Tensor | None = None):
        super().__init__()
        if encoder_layers < 1 or decoder_layers < 1:
            raise ValueError(f"encoder_layers and decoder_layers must be >= 1, "
                             f"got {encoder_layers} and {decoder_layers}")
        E = embed_size
        self.pad_id = pad_id
        self.src_embed = nn.Embedding(vocab_size, E, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(vocab_size, E, padding_idx=pad_id)
        self.encoder = ResidualStack(cell, cell_kwargs, [E] * encoder_layers, E, hidden_size,
                                     dropout, layer_norm, bidirectional_first=True)
        # Layer 0 reads the target embedding; the others also read the attention context.
        self.decoder = ResidualStack(cell, cell_kwargs, [E] + [2 * E] * (decoder_layers - 1), E,
                                     hidden_size, dropout, layer_norm, bidirectional_first=False)
        self.key_proj = nn.Linear(E, E, bias=False)
        self.readout = nn.Linear(2 * E, E)
        # The softmax starts at the target unigram (``out_bias``: the training split's log
        # frequencies, see lrn.tasks.text.log_unigram).  From zero, Adam's first steps pull
        # every context toward the unigram through the recurrent weights and the tanh
        # readout, which saturates nn.GRU/nn.LSTM (lrn.tasks.lm.RNNLM has the measurements).
        self.out_bias = nn.Parameter(torch.zeros(vocab_size) if out_bias is None else out_bias.clone())
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.src_embed.weight, std=E ** -0.5)
        nn.init.normal_(self.tgt_embed.weight, std=E ** -0.5)
        with torch.no_grad():
            self.src_embed.weight[pad_id].zero_()
            self.tgt_embed.weight[pad_id].zero_()

    # ---------------------------------------------------------------- encoder
    def encode(self, src: Tensor, src_lengths: Tensor) -> Memory:
        """src (S, B) ids, src_lengths (B,) -> Memory."""
        x = self.dropout(self.src_embed(src))  # (S, B, E)
        for i in range(len(self.encoder.rnns)):
            x = self.encoder.layer(i, x, x, src_lengths)
        steps = torch.arange(src.shape[0], device=src.device)
        pad = steps[:, None] >= src_lengths.to(src.device)[None, :]  # (S, B)
        return Memory(x, self.key_proj(x), pad)

    # ---------------------------------------------------------------- decoder
    def attend(self, query: Tensor, memory: Memory) -> Tensor:
        """Scaled dot-product attention: query (T, B, E) -> context (T, B, E)."""
        scores = torch.einsum("tbe,sbe->tbs", query, memory.keys) / math.sqrt(query.shape[-1])
        scores = scores.masked_fill(memory.pad.t().unsqueeze(0), float("-inf"))  # (T, B, S)
        return torch.einsum("tbs,sbe->tbe", scores.softmax(-1), memory.values)

    def logits(self, x: Tensor, context: Tensor) -> Tensor:
        """(..., E), (..., E) -> (..., V), the softmax weights tied to the target embeddings."""
        feature = self.dropout(torch.tanh(self.readout(torch.cat([x, context], -1))))
        return F.linear(feature, self.tgt_embed.weight, self.out_bias)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits: src (S, B), src_lengths (B,), tgt_in (T, B) -> (T, B, V).

        The decoder is causal, so outputs at target padding never affect real steps."""
        memory = self.encode(src, src_lengths)
        x = self.dropout(self.tgt_embed(tgt_in))  # (T, B, E)
        x = self.decoder.layer(0, x, x, None)
        context = self.attend(x, memory)  # (T, B, E)
        for i in range(1, len(self.decoder.rnns)):
            x = self.decoder.layer(i, x, torch.cat([x, context], -1), None)
        return self.logits(x, context)

    def initial_state(self) -> list[Any]:
        """Decoder state before the first step: zeros for every layer (None = zeros)."""
        return [None] * len(self.decoder.rnns)

    def step(self, prev: Tensor, state: list[Any], memory: Memory) -> tuple[Tensor, list[Any]]:
        """One decoding step: prev (B,) previous token ids -> logits (B, V), new state.
        Equal to one time step of ``forward`` (in eval mode)."""
        x = self.dropout(self.tgt_embed(prev))  # (B, E)
        new_state = []
        x, s = self.decoder.layer_step(0, x, x, state[0])
        new_state.append(s)
        context = self.attend(x.unsqueeze(0), memory).squeeze(0)  # (B, E)
        for i in range(1, len(self.decoder.rnns)):
            x, s = self.decoder.layer_step(i, x, torch.cat([x, context], -1), state[i])
            new_state.append(s)
        return self.logits(x, context), new_state


def reorder_decoder_state(state: list[Any], index: Tensor) -> list[Any]:
    """Rows ``index`` of every layer's state (None, the initial zeros, stays None)."""
    return [None if s is None else reorder_state(s, index) for s in state]
