"""One factory for every recurrent unit of the paper, with one calling convention.

    rnn = make_rnn("lrn", 128, 256, num_layers=2, bidirectional=True)
    out, state = rnn(x, hx=None, lengths=None)     # out (T, B, D*H); state opaque
    y_t, state = rnn.step(x_t, state)              # unidirectional, x_t (B, in)

so that a task swaps cells with one flag and treats them all alike.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lrn.functional import check_lengths
from lrn.modules.baselines import ATR, SRU
from lrn.modules.lrn import LRN

CELLS = ("lstm", "gru", "atr", "sru", "lrn", "olrn")

State = Tensor | tuple[Tensor, Tensor]


class Recurrent(nn.Module):
    """What ``make_rnn`` returns: a recurrent layer stack with one calling convention.

    forward(x, hx=None, lengths=None) -> (out, state)
        x: (T, B, in), or (B, T, in) with batch_first.
        lengths: optional (B,) integer tensor; padded steps give output 0 and never reach
            the state, and a backward direction starts at each sequence's true end.
        out: (T, B, D*H) (batch_first applies); state: (L*D, B, H), or (h, c) for lstm.
    """

    def __init__(self, cell: str, rnn: nn.Module) -> None:
        super().__init__()
        self.cell = cell
        self.rnn = rnn

    @property
    def output_size(self) -> int:
        return self.rnn.hidden_size * (2 if self.rnn.bidirectional else 1)

    @property
    def batch_first(self) -> bool:
        return self.rnn.batch_first

    def forward(self, x: Tensor, hx: State | None = None, lengths: Tensor | None = None):
        if not isinstance(self.rnn, (nn.LSTM, nn.GRU)):
            return self.rnn(x, hx, lengths)
        if lengths is None:
            return self.rnn(x, hx)
        steps = x.shape[1] if self.batch_first else x.shape[0]
        lengths = check_lengths(lengths, x.shape[0] if self.batch_first else x.shape[1], steps)
        packed = pack_padded_sequence(x, lengths, batch_first=self.batch_first, enforce_sorted=False)
        out, state = self.rnn(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=steps)
        return out, state

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One step of a unidirectional stack: x_t (B, in) -> (y_t (B, H), state)."""
        if self.rnn.bidirectional:
            raise ValueError("step() needs a unidirectional rnn: a bidirectional one reads the future")
        out, state = self(x_t.unsqueeze(1 if self.batch_first else 0), state)
        return out.squeeze(1 if self.batch_first else 0), state

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}"


def make_rnn(name: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
             bidirectional: bool = False, dropout: float = 0.0, batch_first: bool = False,
             layer_norm: bool = False, **kwargs: Any) -> Recurrent:
    """A recurrent stack of cell ``name`` in {lstm, gru, atr, sru, lrn, olrn}.

    lstm and gru are torch's nn.LSTM / nn.GRU (the oneDNN / cuDNN fast paths); ``kwargs``
    go to the layer (e.g. activation, recurrent_gates or backend for lrn).
    """
    common = dict(num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
                  batch_first=batch_first, **kwargs)
    if name in ("lstm", "gru"):
        if kwargs:
            raise ValueError(f"torch's {name} takes no option(s) {', '.join(sorted(kwargs))}")
        if layer_norm:
            raise ValueError(f"layer_norm is not available for torch's {name} (cuDNN/oneDNN kernels); "
                             "use atr, sru, lrn or olrn")
        layer = (nn.LSTM if name == "lstm" else nn.GRU)(input_size, hidden_size, **common)
    elif name in ("atr", "sru"):
        layer = (ATR if name == "atr" else SRU)(input_size, hidden_size, layer_norm=layer_norm, **common)
    elif name in ("lrn", "olrn"):
        if name == "olrn":
            common["output_gate"] = True
        layer = LRN(input_size, hidden_size, layer_norm=layer_norm, **common)
    else:
        raise ValueError(f"unknown cell {name!r}: choose one of {', '.join(CELLS)}")
    return Recurrent(name, layer)


#: options that are switches: their values must read as one of these words
BOOLEAN_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
BOOLEAN_OPTIONS = ("layer_norm", "bidirectional", "output_gate", "recurrent_gates", "bias", "batch_first")


def parse_cell_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"lrn:activation=identity,layer_norm=true"`` -> ("lrn", {"activation": "identity",
    "layer_norm": True}).  Switches (BOOLEAN_OPTIONS) take true/false/yes/no/1/0 and
    nothing else; other values are integers, floats, else strings."""
    name, _, options = spec.strip().partition(":")
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r} in cell spec {spec!r}: choose one of {', '.join(CELLS)}")
    kwargs: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"cell spec {spec!r}: expected key=value, got {item!r}")
        key, raw = key.strip(), raw.strip()
        if key not in cell_options(name):
            known = ", ".join(cell_options(name)) or "none"
            raise ValueError(f"cell spec {spec!r}: {name} has no option {key!r} (options: {known})")
        if key in BOOLEAN_OPTIONS:
            if raw.lower() not in BOOLEAN_WORDS:
                raise ValueError(f"cell spec {spec!r}: {key} must be true or false (yes/no, 1/0), got {raw!r}")
            kwargs[key] = BOOLEAN_WORDS[raw.lower()]
        else:
            kwargs[key] = _parse_value(raw)
    return name, kwargs


def cell_options(name: str) -> tuple[str, ...]:
    """The options a cell spec may set for cell ``name`` (the layer's keyword arguments; torch's
    lstm and gru take only the stack's own)."""
    stack = ("num_layers", "bidirectional", "dropout", "batch_first")
    if name in ("lstm", "gru"):
        return stack
    layer = {"atr": ATR, "sru": SRU, "lrn": LRN, "olrn": LRN}[name]
    skip = {"self", "input_size", "hidden_size", "device", "dtype"} | ({"output_gate"} if name == "olrn" else set())
    return tuple(p for p in inspect.signature(layer.__init__).parameters if p not in skip)


def _parse_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_formula(name: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
                      bidirectional: bool = False) -> int:
    """Parameter count of ``make_rnn(name, ...)`` (with biases, no layer norm) from the cells'
    formulas, e.g. LRN: 3H(in + 1) per layer and direction."""
    H, D = hidden_size, 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        n = input_size if layer == 0 else D * H
        per_direction = {
            "lstm": 4 * H * (n + H + 2),
            "gru": 3 * H * (n + H + 2),
            "atr": H * (n + 1) + H * (H + 1),
            "sru": (3 if n == H else 4) * H * (n + 1) + 2 * H,
            "lrn": 3 * H * (n + 1),
            "olrn": 4 * H * (n + 1),
        }[name]
        total += D * per_direction
    return total


def detach_state(state: State | None) -> State | None:
    """Cut the graph behind a carried state (truncated BPTT)."""
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def reorder_state(state: State, index: Tensor) -> State:
    """Select batch entries of a state (beam search): index (B',) into the batch dim."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)
