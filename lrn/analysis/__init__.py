"""The paper's analyses: LRN as attention over tokens, gradient flow, and the report.

    from lrn.analysis import token_weights, layer_token_weights, measure_gradient_flow
"""

from lrn.analysis.gradients import GradientFlow, flow_at_init, measure_gradient_flow
from lrn.analysis.weights import TokenWeights, layer_token_weights, token_weights

__all__ = ["GradientFlow", "TokenWeights", "flow_at_init", "layer_token_weights",
           "measure_gradient_flow", "token_weights"]
