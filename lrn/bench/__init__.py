"""Speed and memory of one LRN layer against nn.LSTM, nn.GRU, ATR and SRU (``lrn bench``).

For every shape (B, T, H) of a grid (input size = H, one layer, time-major input):
  * each implementation's forward (under no_grad) and training step (forward, then
    backward of a fixed random output gradient into the parameters and the input);
  * for LRN also its parts: the input projection x W^T + b alone (the layer's matmul)
    and the recurrence alone (``lrn.functional.lrn_scan`` on precomputed gates), from
    which the matmul share and the recurrence's effective memory bandwidth follow;
  * the peak extra memory of each forward and training step.
All timed calls of a shape are interleaved (one call of each, in an order rotated every
round) after ``warmup`` untimed rounds, so load changes hit every implementation alike;
calls shorter than 10 ms are repeated back to back within one sample.  We report medians
(and minima), and ratios of medians to nn.LSTM / nn.GRU measured in the same rounds.
docs/performance.md describes the method and its caveats.

Modules: ``rows`` (what a run records, typed, and its JSON), ``machine`` (the machine
it ran on), ``measure`` (timing and memory), ``targets`` (the project's targets),
``report`` (markdown and PNG) and ``cli``.
"""
