"""Gradient flow through a recurrent layer: how ||dh_T/dx_t|| and ||dh_T/ds_t|| change with T - t.

h_T is the layer's output at the last step (what the next layer or a classifier reads),
x_t the input at step t and s_t the full recurrent state after step t (h for LRN/GRU/ATR,
c for SRU, (h, c) for LSTM).  Norms are Frobenius norms of the full Jacobians, computed
exactly (no random projections): the batch holds H copies of every sequence and copy j
back-propagates h_T[j] only, so one backward pass yields every row of the Jacobian.

Only the ``out, state = rnn(x, hx)`` contract is used, so every cell made by
``lrn.make_rnn`` (and nn.GRU/nn.LSTM) can be measured.  For the state Jacobian the
sequence is cut at step t: the prefix gives s_t, which is fed back as ``hx`` for the
suffix (the truncated-BPTT use of the contract).  Unidirectional layers only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from lrn.modules import make_rnn, parse_cell_spec


def _state_sq_norms(grads: tuple[Tensor, ...], copies: int, hidden: int) -> Tensor:
    """Sum of squared gradients over every state tensor, per sequence: (N,)."""
    total = 0
    for g in grads:  # (L, N*H, H) each
        total = total + g.pow(2).sum(dim=(0, 2)).view(copies, hidden).sum(1)
    return total


def _replicate(x: Tensor, hidden: int) -> Tensor:
    """(T, N, I) -> (T, N*H, I): H consecutive copies of every sequence."""
    return x.repeat_interleave(hidden, dim=1)


def _last_output_objective(out: Tensor, hidden: int) -> Tensor:
    """sum over copies j of h_T[j] for copy j: its gradient rows are the Jacobian's rows."""
    if out.shape[-1] != hidden:
        raise ValueError(f"gradient flow needs a unidirectional layer with hidden size {hidden}, "
                         f"got outputs of width {out.shape[-1]}")
    last = out[-1]  # (N*H, H)
    picks = torch.arange(last.shape[0], device=out.device) % hidden
    return last.gather(1, picks[:, None]).sum()


@torch.enable_grad()
def input_jacobian_norms(rnn: nn.Module, x: Tensor, hidden: int) -> Tensor:
    """||dh_T/dx_t||_F for every t: (N, T) for x (T, N, I)."""
    T, N, _ = x.shape
    xr = _replicate(x.detach(), hidden).requires_grad_(True)
    out, _ = rnn(xr)
    (grad,) = torch.autograd.grad(_last_output_objective(out, hidden), xr)
    return grad.pow(2).sum(-1).view(T, N, hidden).sum(-1).sqrt().T  # (N, T)


@torch.enable_grad()
def state_jacobian_norms(rnn: nn.Module, x: Tensor, hidden: int, distances: list[int]) -> Tensor:
    """||dh_T/ds_t||_F for the state s_t d steps before the last step, for every d in
    ``distances`` (1 <= d < T): (N, len(distances))."""
    T, N, _ = x.shape
    norms = []
    for d in distances:
        if not 1 <= d < T:
            raise ValueError(f"distances must lie in [1, {T - 1}], got {d}")
        with torch.no_grad():
            _, state = rnn(x[:T - d])
        leaves = tuple(s.repeat_interleave(hidden, dim=1).requires_grad_(True)
                       for s in (state if isinstance(state, tuple) else (state,)))
        out, _ = rnn(_replicate(x[T - d:], hidden), leaves if isinstance(state, tuple) else leaves[0])
        grads = torch.autograd.grad(_last_output_objective(out, hidden), leaves)
        norms.append(_state_sq_norms(grads, N, hidden).sqrt())
    return torch.stack(norms, 1)


def log_spaced_distances(T: int, per_octave: int = 3) -> list[int]:
    """Distinct integers in [1, T-1], spaced evenly on a log scale."""
    count = max(2, int(per_octave * torch.log2(torch.tensor(float(T))).item()))
    grid = torch.logspace(0, torch.log10(torch.tensor(float(T - 1))).item(), count)
    return sorted({int(round(v)) for v in grid.tolist()})


@dataclass
class GradientFlow:
    """Geometric means over sequences (the norms span many decades) of the Jacobian norms."""

    label: str
    distances: list[int]  # T - t
    input_norms: list[float]  # ||dh_T/dx_t|| at each distance
    state_norms: list[float]  # ||dh_T/ds_t|| at each distance

    def to_dict(self) -> dict:
        return asdict(self)


def _geomean(norms: Tensor) -> list[float]:
    """Geometric mean over dim 0; an exact 0 (a vanished gradient) stays 0."""
    tiny = torch.finfo(norms.dtype).tiny
    logs = norms.clamp_min(tiny).log().mean(0).exp()
    return torch.where((norms == 0).any(0), torch.zeros_like(logs), logs).tolist()


def measure_gradient_flow(rnn: nn.Module, x: Tensor, hidden: int, label: str) -> GradientFlow:
    """Both Jacobian norms of unidirectional ``rnn`` on inputs x (T, N, I), at log-spaced
    distances, h_T being the output at the last step."""
    T = x.shape[0]
    distances = log_spaced_distances(T)
    inputs = input_jacobian_norms(rnn, x, hidden)  # (N, T)
    by_distance = inputs[:, [T - 1 - d for d in distances]]  # x_{T-1-d}: d steps before the last
    states = state_jacobian_norms(rnn, x, hidden, distances)
    return GradientFlow(label, distances, _geomean(by_distance), _geomean(states))


def flow_at_init(specs: list[str], *, hidden: int, length: int, sequences: int,
                 seed: int = 0) -> list[GradientFlow]:
    """Gradient flow of freshly initialised one-layer cells (``lrn.make_rnn`` specs such as
    "lrn" or "lrn:activation=identity") on standard-normal inputs x (length, sequences, hidden)."""
    torch.manual_seed(seed)
    x = torch.randn(length, sequences, hidden, dtype=torch.float64)
    flows = []
    for spec in tqdm(specs, desc="gradient flow at init", unit="cell"):
        name, kwargs = parse_cell_spec(spec)
        torch.manual_seed(seed)
        # float64: float32 gradients underflow to 0 after ~40 steps of decay
        rnn = make_rnn(name, hidden, hidden, **kwargs).double().eval()
        flows.append(measure_gradient_flow(rnn, x, hidden, spec))
    return flows


def decay_per_step(distances: list[int], norms: list[float], *, from_distance: int = 5) -> float | None:
    """The geometric factor by which a norm shrinks (< 1) or grows (> 1) per step of distance:
    exp of the least-squares slope of log(norm) against distance, over distances >= from_distance
    with a nonzero norm; None with fewer than two such points."""
    points = [(d, math.log(v)) for d, v in zip(distances, norms) if d >= from_distance and v > 0]
    if len(points) < 2:
        return None
    mean_d = sum(d for d, _ in points) / len(points)
    mean_l = sum(l for _, l in points) / len(points)
    slope = (sum((d - mean_d) * (l - mean_l) for d, l in points)
             / sum((d - mean_d) ** 2 for d, _ in points))
    return math.exp(slope)
