"""lrn-torch: the Lightweight Recurrent Network (Zhang & Sennrich, ACL 2019) for PyTorch.

The names below are imported on first use, so that ``import lrn.cli`` (the ``lrn``
command's --help) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "keep_freed_memory": "lrn.allocator",
    "available_backends": "lrn.functional",
    "lrn_recurrence": "lrn.functional",
    "quantize_dynamic": "lrn.modules.quantized",
    **dict.fromkeys(("ATR", "CELLS", "LRN", "SRU", "LRNCell", "count_parameters", "make_rnn",
                     "parameter_formula", "parse_cell_spec"), "lrn.modules"),
}

__all__ = ["ATR", "CELLS", "LRN", "LRNCell", "SRU", "available_backends", "count_parameters",
           "keep_freed_memory", "lrn_recurrence", "make_rnn", "parameter_formula", "parse_cell_spec", "quantize_dynamic", "__version__"]

if TYPE_CHECKING:
    from lrn.allocator import keep_freed_memory
    from lrn.functional import available_backends, lrn_recurrence
    from lrn.modules import (ATR, CELLS, LRN, SRU, LRNCell, count_parameters, make_rnn, parameter_formula,
                             parse_cell_spec)
    from lrn.modules.quantized import quantize_dynamic


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lrn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
