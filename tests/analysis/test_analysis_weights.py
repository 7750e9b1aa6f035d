"""lrn.analysis.weights (token_weights): the unfolded LRN recurrence against the reference and the layers."""

import pytest
import torch

from lrn.analysis.weights import layer_token_weights, token_weights
from lrn.modules import LRN, make_rnn
from lrn.ops.reference import lrn_scan_reference


def _random_case(T=7, B=3, H=4, D=1, output_gate=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = 4 if output_gate else 3
    gates = torch.randn(T, B, D * G * H, generator=g, dtype=torch.float64)
    h0 = torch.randn(D, B, H, generator=g, dtype=torch.float64)
    lengths = torch.tensor([T, 3, 5][:B])
    return gates, h0, lengths


@pytest.mark.parametrize("num_directions,reverse", [(1, False), (1, True), (2, False)])
@pytest.mark.parametrize("with_h0", [True, False])
def test_identity_unfolding_reproduces_the_layer(num_directions, reverse, with_h0):
    gates, h0, lengths = _random_case(D=num_directions)
    h0 = h0 if with_h0 else None
    out, _ = lrn_scan_reference(gates, h0, lengths, num_directions=num_directions, reverse=reverse,
                                activation="identity")
    for fold in (True, False):  # identity LRN: the paper's gate-only weights are already exact
        tw = token_weights(gates, h0, lengths, num_directions=num_directions, reverse=reverse,
                           activation="identity", fold_activation=fold)
        torch.testing.assert_close(tw.reconstruct(h0), out, rtol=0, atol=1e-12)


def test_weights_are_input_gate_times_forget_chain():
    """w_{t,k} = i_k * prod_{l=k+1..t} f_l with the gates of the actual run, by direct products."""
    gates, h0, _ = _random_case(T=5, B=2, H=3)
    T, H = 5, 3
    tw = token_weights(gates, h0, activation="identity")
    h, f, i = h0[0], [], []
    for t in range(T):
        q, k, v = gates[t].split(H, -1)
        f.append(torch.sigmoid(q - h))
        i.append(torch.sigmoid(k + h))
        h = i[t] * v + f[t] * h
    for t in range(T):
        for k in range(T):
            expected = torch.zeros_like(h)
            if k <= t:
                expected = i[k] * torch.stack(f[k + 1:t + 1] + [torch.ones_like(h)]).prod(0)
            torch.testing.assert_close(tw.weights[0, :, t, k], expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(tw.initial[0, :, t], torch.stack(f[:t + 1]).prod(0))


@pytest.mark.parametrize("activation,output_gate", [("tanh", False), ("tanh", True), ("identity", True)])
def test_folded_weights_are_exact_for_every_variant(activation, output_gate):
    gates, h0, lengths = _random_case(D=2, output_gate=output_gate)
    out, _ = lrn_scan_reference(gates, h0, lengths, num_directions=2, activation=activation,
                                output_gate=output_gate)
    tw = token_weights(gates, h0, lengths, num_directions=2, activation=activation,
                       output_gate=output_gate)
    torch.testing.assert_close(tw.reconstruct(h0), out, rtol=0, atol=1e-12)
    # The gate-only reading ignores the contraction: an approximation that is measurably off.
    loose = token_weights(gates, h0, lengths, num_directions=2, activation=activation,
                          output_gate=output_gate, fold_activation=False)
    assert (loose.reconstruct(h0) - out).abs().max() > 1e-3


def test_recurrent_gates_false_is_a_fixed_decay():
    gates, _, _ = _random_case(T=6, B=1, H=2)
    tw = token_weights(gates, activation="identity", recurrent_gates=False)
    q, k, _ = gates[:, 0].split(2, -1)
    decay = torch.sigmoid(q)[1:4].prod(0)  # f_2 f_3 f_4
    torch.testing.assert_close(tw.weights[0, 0, 3, 0], torch.sigmoid(k[0]) * decay)


def test_long_sequences_underflow_to_zero_not_nan():
    T, H = 200, 2
    gates = torch.zeros(T, 1, 3 * H, dtype=torch.float64)
    gates[..., :H] = -30.0  # forget gates ~1e-13: the product over 200 steps is far below 1e-308
    gates[..., 2 * H:] = torch.randn(T, 1, H, dtype=torch.float64)
    tw = token_weights(gates, activation="identity")
    assert torch.isfinite(tw.weights).all()
    assert tw.weights[0, 0, -1, 0].abs().max() == 0
    out, _ = lrn_scan_reference(gates, activation="identity")
    torch.testing.assert_close(tw.reconstruct(), out, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell,activation", [("lrn", "tanh"), ("olrn", "identity")])
def test_layer_weights_reproduce_a_bidirectional_stack(cell, activation):
    torch.manual_seed(0)
    rnn = make_rnn(cell, 5, 4, num_layers=2, bidirectional=True, activation=activation,
                   backend="reference").double().eval()
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    hx = torch.randn(4, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    out, _ = rnn(x, hx, lengths)
    tw = layer_token_weights(rnn, x, hx, lengths, layer=1)  # the top layer gives the output
    torch.testing.assert_close(tw.reconstruct(hx[2:]), out, rtol=0, atol=1e-12)


def test_layer_weights_refuse_other_cells():
    with pytest.raises(ValueError, match="LRN and oLRN layers only"):
        layer_token_weights(make_rnn("gru", 3, 2), torch.randn(4, 1, 3))
    with pytest.raises(ValueError, match="layer must lie in"):
        layer_token_weights(LRN(3, 2), torch.randn(4, 1, 3), layer=1)


def test_bad_gate_width_is_named():
    with pytest.raises(ValueError, match="not a multiple of num_directions"):
        token_weights(torch.randn(3, 1, 7))
