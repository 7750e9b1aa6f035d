"""The paper's analyses: LRN as attention over tokens, gradient flow, and the report.

    from lrn.analysis import token_weights, layer_token_weights, measure_gradient_flow

The names are imported on first use, so that the ``lrn`` command's parser stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    **dict.fromkeys(("GradientFlow", "flow_at_init", "measure_gradient_flow"), "lrn.analysis.gradients"),
    **dict.fromkeys(("TokenWeights", "layer_token_weights", "token_weights"), "lrn.analysis.weights"),
}

__all__ = ["GradientFlow", "TokenWeights", "flow_at_init", "layer_token_weights",
           "measure_gradient_flow", "token_weights"]

if TYPE_CHECKING:
    from lrn.analysis.gradients import GradientFlow, flow_at_init, measure_gradient_flow
    from lrn.analysis.weights import TokenWeights, layer_token_weights, token_weights


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lrn.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
