"""Linear-chain conditional random field (Lafferty et al. 2001) for sequence tagging,
as used on top of a bidirectional RNN by Lample et al. (2016).

Everything is time-major and vectorised over the batch: the only Python loop is
over time steps.  Sequences shorter than the batch's longest are handled with
``lengths``: steps past a sequence's end leave its forward variables unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

# Score of a forbidden transition: finite so that logsumexp / max stay NaN-free.
FORBIDDEN = -1e4


class CRF(nn.Module):
    """Scores  s(y) = start[y_0] + sum_t emit[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_{L-1}].

    ``allowed`` (K, K) bool, ``allowed_start`` / ``allowed_end`` (K,) bool
    optionally forbid transitions (e.g. O -> I-PER in IOB2); forbidden ones get
    the fixed score FORBIDDEN, so decoding never produces them.
    """

    def __init__(self, num_tags: int, allowed: torch.Tensor | None = None,
                 allowed_start: torch.Tensor | None = None,
                 allowed_end: torch.Tensor | None = None):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))  # [from, to]
        self.start = nn.Parameter(torch.empty(num_tags))
        self.end = nn.Parameter(torch.empty(num_tags))
        ones = torch.ones
        self.register_buffer("allowed", ones(num_tags, num_tags, dtype=torch.bool)
                             if allowed is None else allowed.bool().clone())
        self.register_buffer("allowed_start", ones(num_tags, dtype=torch.bool)
                             if allowed_start is None else allowed_start.bool().clone())
        self.register_buffer("allowed_end", ones(num_tags, dtype=torch.bool)
                             if allowed_end is None else allowed_end.bool().clone())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.transitions, -0.1, 0.1)
        nn.init.zeros_(self.start)
        nn.init.zeros_(self.end)

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.transitions.masked_fill(~self.allowed, FORBIDDEN),
                self.start.masked_fill(~self.allowed_start, FORBIDDEN),
                self.end.masked_fill(~self.allowed_end, FORBIDDEN))

    @staticmethod
    def _mask(emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(emissions.shape[0], device=emissions.device)
        return steps[:, None] < lengths.to(emissions.device)[None, :]  # (T, B)

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unnormalised score s(tags) of each sequence: (B,)."""
        trans, start, end = self._scores()
        emissions = emissions.float()  # sums over many steps: no bf16 under autocast
        mask = self._mask(emissions, lengths).to(emissions.dtype)  # (T, B)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (T, B)
        pair = trans[tags[:-1], tags[1:]]  # (T-1, B)
        last = tags.gather(0, (lengths.to(tags.device) - 1).unsqueeze(0)).squeeze(0)  # (B,)
        return (start[tags[0]] + (emit * mask).sum(0) + (pair * mask[1:]).sum(0) + end[last])

    def log_partition(self, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log Z: log-sum-exp of s(y) over every tag sequence y (forward algorithm): (B,)."""
        trans, start, end = self._scores()
        emissions = emissions.float()
        mask = self._mask(emissions, lengths)  # (T, B)
        alpha = start + emissions[0]  # (B, K)
        for t in range(1, emissions.shape[0]):
            # (B, K_from, 1) + (K_from, K_to) -> logsumexp over K_from
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[t]  # (B, K)
            alpha = torch.where(mask[t].unsqueeze(1), nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood -log p(tags | emissions) of each sequence: (B,).

        emissions (T, B, K), tags (T, B) (any value at padded steps, within [0, K)),
        lengths (B,) >= 1.
        """
        return self.log_partition(emissions, lengths) - self.score(emissions, tags, lengths)

    def decode(self, emissions: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Viterbi: the best tag sequence (T, B) (0 at padded steps) and its score (B,);
        vectorised over the batch, the only loop is over time."""
        trans, start, end = self._scores()
        emissions = emissions.float()
        num_steps, batch = emissions.shape[:2]
        mask = self._mask(emissions, lengths)  # (T, B)
        keep = torch.arange(self.num_tags, device=emissions.device).expand(batch, -1)  # (B, K)
        delta = start + emissions[0]  # (B, K)
        backpointers = []
        for t in range(1, num_steps):
            best, arg = (delta.unsqueeze(2) + trans).max(dim=1)  # (B, K_to)
            step = mask[t].unsqueeze(1)
            delta = torch.where(step, best + emissions[t], delta)
            # Past a sequence's end the path stays on its tag, so backtracking
            # from the last step passes through the padding unchanged.
            backpointers.append(torch.where(step, arg, keep))
        best_score, last = (delta + end).max(dim=1)  # (B,)
        path = [last]
        for arg in reversed(backpointers):
            path.append(arg.gather(1, path[-1].unsqueeze(1)).squeeze(1))
        tags = torch.stack(path[::-1])  # (T, B)
        return tags.masked_fill(~mask, 0), best_score
