"""Recurrent layers: LRN / LRNCell, the ATR and SRU baselines, and the cell factory."""

from lrn.modules.baselines import ATR, SRU
from lrn.modules.factory import (
    CELLS,
    Recurrent,
    count_parameters,
    detach_state,
    make_rnn,
    parameter_formula,
    parse_cell_spec,
    reorder_state,
)
from lrn.modules.lrn import LRN, LRNCell

__all__ = ["ATR", "CELLS", "LRN", "LRNCell", "Recurrent", "SRU", "count_parameters", "detach_state",
           "make_rnn", "parameter_formula", "parse_cell_spec", "reorder_state"]
