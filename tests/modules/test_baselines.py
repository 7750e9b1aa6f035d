"""Baseline cells behind make_rnn: one calling convention, shapes, parameter formulas, semantics."""

import pytest
import torch
from torch import nn

import lrn
from lrn.modules import detach_state, reorder_state


@pytest.mark.parametrize("cell", lrn.CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes_and_parameter_formula(cell, bidirectional):
    rnn = lrn.make_rnn(cell, 5, 6, num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(7, 3, 5)
    out, state = rnn(x)
    assert out.shape == (7, 3, D * 6) and rnn.output_size == D * 6
    h = state[0] if cell == "lstm" else state
    assert h.shape == (2 * D, 3, 6)
    assert lrn.count_parameters(rnn) == lrn.parameter_formula(cell, 5, 6, num_layers=2, bidirectional=bidirectional)


def test_lrn_parameter_formula_is_3H_in_plus_1():
    assert lrn.parameter_formula("lrn", 100, 200) == 3 * 200 * 101
    assert lrn.parameter_formula("lstm", 100, 200) == 4 * 200 * (100 + 200 + 2)


@pytest.mark.parametrize("cell", lrn.CELLS)
def test_lengths_mask_padding_for_every_cell(cell):
    rnn = lrn.make_rnn(cell, 3, 4, bidirectional=True)
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(5, 3, 3)
    out, state = rnn(x, lengths=lengths)
    noisy = x.clone()
    noisy[2:, 1] = 100.0  # garbage in the padding must not leak anywhere
    noisy[4:, 2] = -100.0
    out2, state2 = rnn(noisy, lengths=lengths)
    torch.testing.assert_close(out, out2)
    for s, s2 in zip(state if cell == "lstm" else [state], state2 if cell == "lstm" else [state2]):
        torch.testing.assert_close(s, s2)
    assert torch.all(out[2:, 1] == 0) and torch.all(out[4:, 2] == 0)
    # each sequence alone gives the same result
    for b, n in enumerate(lengths.tolist()):
        alone, _ = rnn(x[:n, b:b + 1])
        torch.testing.assert_close(out[:n, b:b + 1], alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "atr", "sru", "lrn", "olrn"])
def test_step_equals_full_sequence(cell):
    rnn = lrn.make_rnn(cell, 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    out, final = rnn(x)
    state = None
    for t in range(5):
        y, state = rnn.step(x[t], state)
        torch.testing.assert_close(y, out[t], atol=1e-6, rtol=1e-5)
    for a, b in zip(state if cell == "lstm" else [state], final if cell == "lstm" else [final]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_state_helpers():
    h, c = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 3, 4)
    picked = reorder_state((h, c), torch.tensor([2, 2, 0]))
    assert torch.equal(picked[0][:, 1], h[:, 2]) and torch.equal(picked[1][:, 2], c[:, 0])
    assert not detach_state(h * 2).requires_grad


def test_atr_matches_its_equations():
    atr = lrn.ATR(2, 3, dtype=torch.float64)
    for p in atr.parameters():
        nn.init.uniform_(p, -0.5, 0.5)
    x = torch.randn(4, 1, 2, dtype=torch.float64)
    out, h_n = atr(x)
    h = torch.zeros(3, dtype=torch.float64)
    for t in range(4):
        p = atr.weight_ih_l0 @ x[t, 0] + atr.bias_ih_l0
        q = atr.weight_hh_l0 @ h + atr.bias_hh_l0
        h = torch.tanh(torch.sigmoid(p + q) * p + torch.sigmoid(p - q) * h)
        torch.testing.assert_close(out[t, 0], h)
    torch.testing.assert_close(h_n[0, 0], h)


@pytest.mark.parametrize("input_size", [3, 2])  # highway on the raw input / through W_h
def test_sru_matches_its_equations(input_size):
    sru = lrn.SRU(input_size, 3, dtype=torch.float64)
    for p in sru.parameters():
        nn.init.uniform_(p, -0.5, 0.5)
    x = torch.randn(4, 1, input_size, dtype=torch.float64)
    out, c_n = sru(x)
    c = torch.zeros(3, dtype=torch.float64)
    v_f, v_r = sru.weight_c_l0.split(3)
    for t in range(4):
        proj = sru.weight_ih_l0 @ x[t, 0] + sru.bias_ih_l0
        x_tilde, f_pre, r_pre = proj[:3], proj[3:6], proj[6:9]
        highway = x[t, 0] if input_size == 3 else proj[9:]
        f = torch.sigmoid(f_pre + v_f * c)
        r = torch.sigmoid(r_pre + v_r * c)
        c = f * c + (1 - f) * x_tilde
        torch.testing.assert_close(out[t, 0], r * c + (1 - r) * highway)
    torch.testing.assert_close(c_n[0, 0], c)


def test_parse_cell_spec():
    assert lrn.parse_cell_spec("lrn") == ("lrn", {})
    assert lrn.parse_cell_spec("lrn:activation=identity,layer_norm=true,recurrent_gates=False") == (
        "lrn", {"activation": "identity", "layer_norm": True, "recurrent_gates": False})
    name, kw = lrn.parse_cell_spec("olrn:layer_norm=1")
    rnn = lrn.make_rnn(name, 3, 4, **kw)
    assert rnn.rnn.output_gate and rnn.rnn.layer_norm


def test_recurrent_gates_ablation_drops_state_from_gates():
    rnn = lrn.LRN(2, 3, recurrent_gates=False, activation="identity", dtype=torch.float64)
    x = torch.randn(5, 1, 2, dtype=torch.float64)
    out, _ = rnn(x)
    q, k, v = (x[:, 0] @ rnn.weight_ih_l0.T).split(3, -1)
    h = torch.zeros(3, dtype=torch.float64)
    for t in range(5):  # h_t = sigma(k) v + sigma(q) h: a linear recurrence
        h = torch.sigmoid(k[t]) * v[t] + torch.sigmoid(q[t]) * h
        torch.testing.assert_close(out[t, 0], h)
