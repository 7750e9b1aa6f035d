"""lrn.analysis.gradients: exact Jacobian norms, checked against autograd's jacobian and closed forms."""

import pytest
import torch
from torch.autograd.functional import jacobian

from lrn.analysis.figures import plot_gradient_flow
from lrn.analysis.gradients import (
    decay_per_step,
    flow_at_init,
    input_jacobian_norms,
    log_spaced_distances,
    state_jacobian_norms,
)
from lrn.modules import CELLS, make_rnn


def _tiny(cell, **kw):
    torch.manual_seed(0)
    return make_rnn(cell, 3, 3, **kw).double()


@pytest.mark.parametrize("cell", ["lrn", "lstm", "sru"])
def test_input_jacobian_norms_match_autograd(cell):
    rnn = _tiny(cell)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    norms = input_jacobian_norms(rnn, x, 3)  # (N, T)
    for n in range(2):
        full = jacobian(lambda seq: rnn(seq[:, None])[0][-1, 0], x[:, n])  # (H, T, I)
        torch.testing.assert_close(norms[n], full.pow(2).sum(dim=(0, 2)).sqrt())


def test_state_jacobian_norms_match_autograd_for_a_tuple_state():
    rnn = _tiny("lstm")
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    norms = state_jacobian_norms(rnn, x, 3, [1, 4])
    for n in range(2):
        for j, d in enumerate([1, 4]):
            _, (h, c) = rnn(x[:6 - d, n:n + 1])
            jh, jc = jacobian(lambda h, c: rnn(x[6 - d:, n:n + 1], (h, c))[0][-1, 0], (h, c))
            torch.testing.assert_close(norms[n, j], (jh.pow(2).sum() + jc.pow(2).sum()).sqrt())


def test_state_jacobian_of_a_linear_recurrence_is_the_forget_chain():
    """Identity LRN without recurrent gates: dh_T/dh_t = diag(prod_{l>t} sigma(q_l))."""
    rnn = _tiny("lrn", activation="identity", recurrent_gates=False)
    x = torch.randn(8, 1, 3, dtype=torch.float64)
    q = rnn.rnn.layer_projection(x, 0)[..., :3]  # (T, 1, H)
    norms = state_jacobian_norms(rnn, x, 3, [1, 3, 7])
    for j, d in enumerate([1, 3, 7]):
        chain = torch.sigmoid(q[8 - d:]).prod(0)  # f over the last d steps
        torch.testing.assert_close(norms[0, j], chain.norm())


def test_distances_are_distinct_and_in_range():
    d = log_spaced_distances(200)
    assert d == sorted(set(d)) and d[0] == 1 and d[-1] == 199
    with pytest.raises(ValueError, match="distances must lie in"):
        state_jacobian_norms(_tiny("gru"), torch.randn(4, 1, 3, dtype=torch.float64), 3, [4])


def test_flow_at_init_covers_every_cell_and_plots(tmp_path):
    flows = flow_at_init(list(CELLS) + ["lrn:activation=identity"], hidden=4, length=12, sequences=2)
    for flow in flows:
        assert len(flow.input_norms) == len(flow.state_norms) == len(flow.distances)
        assert all(v >= 0 for v in flow.input_norms + flow.state_norms)
    png = plot_gradient_flow([("tiny", flows)], tmp_path / "flow.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bidirectional_layers_are_refused():
    rnn = make_rnn("lrn", 3, 3, bidirectional=True).double()
    with pytest.raises(ValueError, match="unidirectional layer"):
        input_jacobian_norms(rnn, torch.randn(4, 1, 3, dtype=torch.float64), 3)


def test_decay_per_step_is_the_geometric_rate():
    distances = [1, 5, 8, 20, 40]
    assert decay_per_step(distances, [3 * 0.7 ** d for d in distances]) == pytest.approx(0.7)
    assert decay_per_step(distances, [1.1 ** d for d in distances]) == pytest.approx(1.1)
    assert decay_per_step([1, 2, 5], [1.0, 0.5, 0.0]) is None  # one usable point
