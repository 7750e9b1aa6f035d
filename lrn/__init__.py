"""lrn-torch: the Lightweight Recurrent Network (Zhang & Sennrich, ACL 2019) for PyTorch."""

from lrn.allocator import keep_freed_memory
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
           "keep_freed_memory", "lrn_recurrence", "make_rnn", "parameter_formula", "parse_cell_spec", "__version__"]
