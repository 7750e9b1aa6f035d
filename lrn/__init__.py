"""lrn-torch: the Lightweight Recurrent Network (Zhang & Sennrich, ACL 2019) for PyTorch."""

from lrn.functional import available_backends, lrn_recurrence
from lrn.modules import (
    ATR,
    CELLS,
    LRN,
    SRU,
    LRNCell,
    count_parameters,
    make_rnn,
    parameter_formula,
    parse_cell_spec,
)

__version__ = "0.1.0"

__all__ = ["ATR", "CELLS", "LRN", "LRNCell", "SRU", "available_backends", "count_parameters",
           "lrn_recurrence", "make_rnn", "parameter_formula", "parse_cell_spec", "__version__"]
