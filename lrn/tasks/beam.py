"""Greedy and batched beam search over a step-wise decoder.

The model only needs ``step(prev, state, memory) -> (logits, state)``,
``initial_state()`` and ``Memory.reorder``; decoder states are reordered with
``lrn.modules.reorder_state``, so a prefix is never run twice.

Scores are sums of log-probabilities (log-softmax over the whole vocabulary);
a finished hypothesis of ``n`` tokens (its end-of-sentence token included) is
ranked by ``score / n ** length_penalty`` (0: raw log-probability, 1: mean per token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lrn.tasks.mt_model import Memory, reorder_decoder_state

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    tokens: list[int]  # without the end-of-sentence token
    score: float  # sum of log-probabilities, end-of-sentence included


def normalized_score(hyp: Hypothesis, length_penalty: float) -> float:
    """The ranking score: log-probability / (tokens + end-of-sentence) ** length_penalty."""
    return hyp.score / (len(hyp.tokens) + 1) ** length_penalty


def _step_log_probs(model, prev: Tensor, state, memory: Memory, banned: Sequence[int],
                    force_eos: Tensor, eos: int) -> tuple[Tensor, list]:
    """Log-probabilities of the next token (N, V): banned tokens get -inf, and rows with
    ``force_eos`` (they reached their length limit) may only end."""
    logits, state = model.step(prev, state, memory)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    if banned:
        logp[:, list(banned)] = NEG_INF
    if bool(force_eos.any()):
        eos_logp = logp[:, eos].clone()
        logp[force_eos] = NEG_INF
        logp[:, eos] = eos_logp
    return logp, state


@torch.no_grad()
def greedy_search(model, memory: Memory, max_len: Tensor, *, bos: int, eos: int,
                  banned: Sequence[int] = ()) -> list[Hypothesis]:
    """The most probable next token at every step.  max_len (B,): most tokens per output,
    end-of-sentence included (at least 1)."""
    B = memory.values.shape[1]
    device = memory.values.device
    max_len = max_len.to(device)
    prev = torch.full((B,), bos, dtype=torch.long, device=device)
    state = model.initial_state()
    done = torch.zeros(B, dtype=torch.bool, device=device)
    score = torch.zeros(B, dtype=torch.float64, device=device)
    length = torch.zeros(B, dtype=torch.long, device=device)
    tokens: list[Tensor] = []
    for t in range(int(max_len.max())):
        logp, state = _step_log_probs(model, prev, state, memory, banned, t + 1 >= max_len, eos)
        best, prev = logp.max(-1)  # (B,)
        score = torch.where(done, score, score + best.double())
        length = torch.where(done, length, length + 1)
        tokens.append(prev)
        done = done | (prev == eos)
        if bool(done.all()):
            break
    out = torch.stack(tokens, 1).tolist()  # (B, steps)
    hyps = []
    for b in range(B):
        hyps.append(Hypothesis(out[b][: int(length[b]) - 1], float(score[b])))
    return hyps


@torch.no_grad()
def beam_search(model, memory: Memory, max_len: Tensor, *, beam_size: int, bos: int, eos: int,
                length_penalty: float = 1.0, banned: Sequence[int] = ()) -> list[Hypothesis]:
    """The best finished hypothesis per sentence under length-normalised scores.

    Each step keeps the ``beam_size`` best unfinished continuations per sentence
    (out of the best 2*beam_size candidates, so ending some never starves the beam);
    end-of-sentence candidates ranked within the best ``beam_size`` are finished.
    A sentence stops once it has ``beam_size`` finished hypotheses or reaches
    ``max_len`` (B,) tokens; finished sentences leave the batch.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    K = beam_size
    B = memory.values.shape[1]
    device = memory.values.device
    max_len = max_len.to(device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    alive = torch.arange(B, device=device)  # original index of each sentence still searching
    memory = memory.reorder(alive.repeat_interleave(K))  # (S, B*K, E)
    state = model.initial_state()
    scores = torch.full((B, K), NEG_INF, dtype=torch.float64, device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one so candidates are distinct
    prefix = torch.full((B, K, 0), bos, dtype=torch.long, device=device)
    prev = torch.full((B * K,), bos, dtype=torch.long, device=device)

    for t in range(int(max_len.max())):
        n = alive.numel()
        force = (t + 1 >= max_len[alive]).repeat_interleave(K)
        logp, state = _step_log_probs(model, prev, state, memory, banned, force, eos)
        V = logp.shape[-1]
        cand = (scores.unsqueeze(-1) + logp.view(n, K, V).double()).view(n, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (n, 2K), best first
        origin, token = top_idx // V, top_idx % V
        is_eos = (token == eos) & torch.isfinite(top_scores)

        rows_end, ranks_end = is_eos[:, :K].nonzero(as_tuple=True)
        if rows_end.numel():
            ended = prefix[rows_end, origin[rows_end, ranks_end]].tolist()  # (E, t)
            for b, tokens, score in zip(alive[rows_end].tolist(), ended,
                                        top_scores[rows_end, ranks_end].tolist()):
                finished[b].append(Hypothesis(tokens, score))

        # The best K candidates that do not end (a stable sort keeps their ranking).
        keep = torch.sort(is_eos.int(), dim=1, stable=True).indices[:, :K]  # (n, K)
        scores = top_scores.gather(1, keep)
        origin, token = origin.gather(1, keep), token.gather(1, keep)

        counts = torch.tensor([len(finished[b]) for b in alive.tolist()], device=device)
        searching = (counts < K) & (t + 1 < max_len[alive]) & torch.isfinite(scores[:, 0])
        rows = searching.nonzero().squeeze(1)  # (n',)
        if rows.numel() == 0:
            break
        flat = (rows.unsqueeze(1) * K + origin[rows]).view(-1)  # (n'*K,) beams to continue
        state = reorder_decoder_state(state, flat)
        if rows.numel() != n:
            memory = memory.reorder(rows.repeat_interleave(K) * K)  # rows of a sentence are equal
        prefix = torch.cat([prefix.reshape(n * K, t)[flat].view(rows.numel(), K, t),
                            token[rows].unsqueeze(-1)], dim=2)
        scores, alive, prev = scores[rows], alive[rows], token[rows].view(-1)

    return [max(hyps, key=lambda h: normalized_score(h, length_penalty)) for hyps in finished]
