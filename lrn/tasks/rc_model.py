"""R-Net (Wang et al., ACL 2017) for extractive reading comprehension, in the variant
the LRN authors used (HKUST-KnowComp/R-Net: scaled dot-product gated attention,
variational dropout, encoder layers concatenated), with every recurrent layer,
the pointer network's included, made by ``lrn.make_rnn(cell, ...)``.

Tensors are time-major: contexts (Tc, B, ...), questions (Tq, B, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

import lrn
from lrn.tasks.text import CharEncoder

NEG_INF = -1e30  # finite "minus infinity": masked logits stay NaN-free in softmax and sums


@dataclass
class RCBatch:
    """One padded batch.  ``index`` lists the examples' positions in their split."""
    c_words: torch.Tensor  # (Tc, B)
    c_chars: torch.Tensor  # (Tc, B, W)
    c_lengths: torch.Tensor  # (B,)
    q_words: torch.Tensor  # (Tq, B)
    q_chars: torch.Tensor  # (Tq, B, W)
    q_lengths: torch.Tensor  # (B,)
    starts: torch.Tensor  # (B,) answer start token, -1 when unknown
    ends: torch.Tensor  # (B,) answer end token (inclusive)
    index: list[int]

    def to(self, device: torch.device) -> RCBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        # lengths stay on the CPU: the recurrent layers read them there.
        moved["c_lengths"], moved["q_lengths"] = self.c_lengths, self.q_lengths
        return RCBatch(**moved)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout: one mask per sequence, shared by all time steps.  x (T, B, D)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def time_mask(lengths: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    """(B, T) bool, True inside each sequence."""
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


def initial_state(cell_name: str, h: torch.Tensor):
    """A recurrent state whose hidden vector is ``h`` (B, H), in make_rnn's state format."""
    h = h.unsqueeze(0)  # (1, B, H)
    if cell_name == "lstm":
        return h, torch.zeros_like(h)
    return h


class BiRNN(nn.Module):
    """Stacked single-layer bidirectional RNNs with variational input dropout; the
    output is every layer's output side by side (R-Net's encoder) or the last one."""

    def __init__(self, cell: str, cell_kwargs: dict, input_size: int, hidden_size: int,
                 num_layers: int, dropout: float, concat_layers: bool):
        super().__init__()
        self.dropout = dropout
        self.concat_layers = concat_layers
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            self.layers.append(lrn.make_rnn(
                cell, input_size if i == 0 else 2 * hidden_size, hidden_size,
                bidirectional=True, **cell_kwargs))
        self.output_size = 2 * hidden_size * (num_layers if concat_layers else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        outputs = []
        for layer in self.layers:
            x, _ = layer(locked_dropout(x, self.dropout, self.training), lengths=lengths)
            outputs.append(x)  # (T, B, 2H)
        return torch.cat(outputs, dim=-1) if self.concat_layers else outputs[-1]


class GatedDotAttention(nn.Module):
    """Attend from ``inputs`` over ``memory`` with scaled dot products of ReLU
    projections, concatenate, and gate the result with a sigmoid (R-Net's gated
    attention; with memory = inputs it is the self-matching layer)."""

    def __init__(self, input_size: int, memory_size: int, hidden_size: int, dropout: float):
        super().__init__()
        self.dropout = dropout
        self.proj_in = nn.Linear(input_size, hidden_size, bias=False)
        self.proj_mem = nn.Linear(memory_size, hidden_size, bias=False)
        self.gate = nn.Linear(input_size + memory_size, input_size + memory_size, bias=False)
        self.scale = 1.0 / math.sqrt(hidden_size)
        self.output_size = input_size + memory_size

    def forward(self, inputs: torch.Tensor, memory: torch.Tensor,
                memory_mask: torch.Tensor) -> torch.Tensor:
        """inputs (Ti, B, Di), memory (Tm, B, Dm), memory_mask (B, Tm) -> (Ti, B, Di+Dm)."""
        drop = lambda t: locked_dropout(t, self.dropout, self.training)  # noqa: E731
        q = F.relu(self.proj_in(drop(inputs))).transpose(0, 1)  # (B, Ti, h)
        k = F.relu(self.proj_mem(drop(memory))).transpose(0, 1)  # (B, Tm, h)
        scores = torch.bmm(q, k.transpose(1, 2)) * self.scale  # (B, Ti, Tm)
        scores = scores.masked_fill(~memory_mask[:, None, :], NEG_INF)
        attended = torch.bmm(scores.softmax(-1), memory.transpose(0, 1))  # (B, Ti, Dm)
        res = torch.cat([inputs, attended.transpose(0, 1)], dim=-1)  # (Ti, B, Di+Dm)
        return res * torch.sigmoid(self.gate(drop(res)))


class AttentionPointer(nn.Module):
    """Additive attention of a query vector over a sequence: the logits and the
    attention-weighted sum (the pointer network's step, and the question summary)."""

    def __init__(self, memory_size: int, query_size: int, hidden_size: int, bias: bool):
        super().__init__()
        self.proj = nn.Linear(memory_size + query_size, hidden_size, bias=bias)
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, memory: torch.Tensor, query: torch.Tensor | None,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (T, B, D), query (B, Dq) or None, mask (B, T) -> logits (B, T), summary (B, D)."""
        if query is not None:
            memory_in = torch.cat([memory, query.unsqueeze(0).expand(memory.shape[0], -1, -1)], -1)
        else:
            memory_in = memory
        logits = self.score(torch.tanh(self.proj(memory_in))).squeeze(-1).t()  # (B, T)
        logits = logits.masked_fill(~mask, NEG_INF)
        summary = torch.einsum("bt,tbd->bd", logits.softmax(-1), memory)
        return logits, summary


class RNet(nn.Module):
    def __init__(self, *, cell: str, cell_kwargs: dict, num_words: int, num_chars: int,
                 word_dim: int, char_dim: int, char_out: int, hidden_size: int,
                 encoder_layers: int, dropout: float, pointer_dropout: float,
                 word_pad_id: int, char_pad_id: int,
                 word_vectors: torch.Tensor | None = None):
        super().__init__()
        H = hidden_size
        self.cell_name = cell
        self.pointer_dropout = pointer_dropout
        self.word_embed = nn.Embedding(num_words, word_dim, padding_idx=word_pad_id)
        if word_vectors is not None:  # pretrained vectors stay fixed, as in R-Net
            self.word_embed.weight.data.copy_(word_vectors)
            self.word_embed.weight.requires_grad_(False)
        self.char_encoder = CharEncoder(num_chars, char_dim, char_out, pad_id=char_pad_id)
        self.encoder = BiRNN(cell, cell_kwargs, word_dim + char_out, H, encoder_layers,
                             dropout, concat_layers=True)
        enc = self.encoder.output_size  # 2H per encoder layer
        self.question_attention = GatedDotAttention(enc, enc, H, dropout)
        self.question_rnn = BiRNN(cell, cell_kwargs, self.question_attention.output_size, H, 1,
                                  dropout, concat_layers=False)
        self.self_attention = GatedDotAttention(2 * H, 2 * H, H, dropout)
        self.self_rnn = BiRNN(cell, cell_kwargs, self.self_attention.output_size, H, 1,
                              dropout, concat_layers=False)
        self.question_summary = AttentionPointer(2 * H, 0, H, bias=True)
        self.pointer = AttentionPointer(2 * H, 2 * H, H, bias=False)
        self.pointer_rnn = lrn.make_rnn(cell, 2 * H, 2 * H, **cell_kwargs)

    def embed(self, words: torch.Tensor, chars: torch.Tensor) -> torch.Tensor:
        """words (T, B), chars (T, B, W) -> (T, B, word_dim + char_out)."""
        return torch.cat([self.word_embed(words), self.char_encoder(chars)], dim=-1)

    def forward(self, batch: RCBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits (B, Tc), NEG_INF outside each context."""
        device = batch.c_words.device
        c_mask = time_mask(batch.c_lengths, batch.c_words.shape[0], device)  # (B, Tc)
        q_mask = time_mask(batch.q_lengths, batch.q_words.shape[0], device)  # (B, Tq)
        c = self.encoder(self.embed(batch.c_words, batch.c_chars), batch.c_lengths)  # (Tc, B, 2LH)
        q = self.encoder(self.embed(batch.q_words, batch.q_chars), batch.q_lengths)  # (Tq, B, 2LH)

        matched = self.question_rnn(self.question_attention(c, q, q_mask), batch.c_lengths)
        matched = self.self_rnn(self.self_attention(matched, matched, c_mask), batch.c_lengths)

        pdrop = lambda t: F.dropout(t, self.pointer_dropout, self.training)  # noqa: E731
        H2 = matched.shape[-1]
        # The pointer starts from an attention summary of the question's last encoder layer.
        _, init = self.question_summary(locked_dropout(q[..., -H2:], self.pointer_dropout,
                                                       self.training), None, q_mask)  # (B, 2H)
        matched = locked_dropout(matched, self.pointer_dropout, self.training)
        start_logits, glimpse = self.pointer(matched, pdrop(init), c_mask)
        state = initial_state(self.cell_name, init)
        query, _ = self.pointer_rnn.step(pdrop(glimpse), state)  # (B, 2H)
        end_logits, _ = self.pointer(matched, pdrop(query), c_mask)
        return start_logits, end_logits


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor,
               max_answer_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The most probable spans with start <= end < start + max_answer_len, under
    p(start) * p(end) (independent softmaxes, as R-Net decodes).

    logits (B, T) with NEG_INF outside the context.  Returns starts, ends (B,)
    and the spans' log-probabilities (B,).  On ties the shorter span wins.
    Cost O(B * T * max_answer_len): never the (T, T) table.
    """
    if max_answer_len < 1:
        raise ValueError(f"max_answer_len must be >= 1, got {max_answer_len}")
    log_start = start_logits.float().log_softmax(-1)
    log_end = end_logits.float().log_softmax(-1)
    B, T = log_start.shape
    best = log_start.new_full((B,), -math.inf)
    starts = torch.zeros(B, dtype=torch.long, device=log_start.device)
    ends = torch.zeros_like(starts)
    for width in range(min(max_answer_len, T)):
        score = log_start[:, : T - width] + log_end[:, width:]  # (B, T-width): end = start+width
        value, start = score.max(dim=1)
        better = value > best
        best = torch.where(better, value, best)
        starts = torch.where(better, start, starts)
        ends = torch.where(better, start + width, ends)
    return starts, ends, best
