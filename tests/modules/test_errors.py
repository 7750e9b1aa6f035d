"""Bad input gets a clear one-line error naming what is wrong, never a deep trace or garbage."""

import pytest
import torch

import lrn


def raises(match, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_layer_input_errors():
    model = lrn.LRN(4, 5, num_layers=2)
    raises(r"Expected input to be 2D or 3D, got 4D", model, torch.randn(2, 3, 4, 1))
    raises(r"input.size\(-1\) must be equal to input_size. Expected 4, got 7", model, torch.randn(3, 2, 7))
    raises(r"Expected hidden size \(2, 2, 5\), got \[1, 2, 5\]", model, torch.randn(3, 2, 4), torch.randn(1, 2, 5))
    raises(r"hx should also be 2-D", model, torch.randn(3, 4), torch.randn(2, 1, 5))
    raises(r"input must have the type torch.float32", model, torch.randn(3, 2, 4, dtype=torch.float64))
    raises(r"hx must match the input's dtype", model, torch.randn(3, 2, 4), torch.randn(2, 2, 5, dtype=torch.float64))
    raises(r"input is on meta but the parameters are on cpu", model, torch.randn(3, 2, 4, device="meta"))
    raises(r"sequence length must be at least 1, got 0", model, torch.randn(0, 2, 4))
    raises(r"lengths must have shape \(2,\) to match the batch", model, torch.randn(3, 2, 4), lengths=torch.tensor([3]))
    raises(r"lengths must lie in \[1, 3\].*max 4", model, torch.randn(3, 2, 4), lengths=torch.tensor([3, 4]))
    raises(r"lengths must lie in \[1, 3\].*min 0", model, torch.randn(3, 2, 4), lengths=torch.tensor([0, 2]))
    raises(r"lengths must be an integer tensor", model, torch.randn(3, 2, 4), lengths=torch.tensor([3.0, 2.0]))


def test_constructor_errors():
    raises(r"activation must be one of \('tanh', 'identity'\), got 'relu'", lrn.LRN, 3, 4, activation="relu")
    raises(r"backend must be one of .*got 'cuda'", lrn.LRN, 3, 4, backend="cuda")
    raises(r"hidden_size must be a positive integer, got 0", lrn.LRN, 3, 0)
    raises(r"dropout must be a number in \[0, 1\], got 1.5", lrn.LRN, 3, 4, dropout=1.5)
    raises(r"unknown cell 'rnn'", lrn.make_rnn, "rnn", 3, 4)
    raises(r"layer_norm is not available for torch's lstm", lrn.make_rnn, "lstm", 3, 4, layer_norm=True)
    raises(r"expected key=value, got 'tanh'", lrn.parse_cell_spec, "lrn:tanh")
    raises(r"activation must be one of", lrn.LRNCell, 3, 4, activation="gelu")


@pytest.mark.parametrize("layer", [lrn.LRN, lrn.LRNCell, lrn.ATR, lrn.SRU])
def test_switches_must_be_real_booleans(layer):
    # 'false' is a truthy string: accepted, it would switch layer norm on
    raises(r"layer_norm must be True or False, got 'false'", layer, 3, 4, layer_norm="false")
    raises(r"bias must be True or False, got 0", layer, 3, 4, bias=0)


def test_cell_spec_switches_and_options_are_checked():
    raises(r"layer_norm must be true or false \(yes/no, 1/0\), got 'maybe'", lrn.parse_cell_spec,
           "lrn:layer_norm=maybe")
    assert lrn.parse_cell_spec("lrn:bidirectional=no,layer_norm=YES") == ("lrn", {"bidirectional": False,
                                                                                "layer_norm": True})
    raises(r"lrn has no option 'bogus' \(options: num_layers, ", lrn.parse_cell_spec, "lrn:bogus=1")
    raises(r"olrn has no option 'output_gate'", lrn.parse_cell_spec, "olrn:output_gate=false")
    raises(r"gru has no option 'layer_norm'", lrn.parse_cell_spec, "gru:layer_norm=true")


@pytest.mark.parametrize("setting,value,message", [
    ("batch_size", 0, r"'batch_size' must be an integer >= 1, got 0"),
    ("batch_size", -3, r"'batch_size' must be an integer >= 1, got -3"),
    ("eval_every", -1, r"'eval_every' must be an integer >= 0, got -1"),
    ("lr", "abc", r"setting 'lr' must be a number, got 'abc'"),
    ("clip", -1.0, r"'clip' must be a number >= 0"),
    ("max_steps", 2.5, r"'max_steps' must be an integer >= 0 \(or null\), got 2.5"),
    ("batch_size", None, r"'batch_size' must be an integer >= 1, got None"),
])
def test_settings_out_of_range_are_refused(setting, value, message):
    from lrn.tasks import get_task
    from lrn.train.config import resolve_config

    raises(message, resolve_config, get_task("adding"), "tiny", None, {setting: value}, 0)


def test_functional_errors():
    q = torch.randn(3, 2, 4)
    raises(r"k must have the shape of q \(3, 2, 4\), got \(3, 2, 5\)", lrn.lrn_recurrence, q, torch.randn(3, 2, 5), q)
    raises(r"q must be a 3-D \(T, B, H\) tensor, got 2-D", lrn.lrn_recurrence, q[0], q[0], q[0])
    raises(r"h0 must have shape \(2, 4\), got \(1, 2, 4\)", lrn.lrn_recurrence, q, q, q, torch.randn(1, 2, 4))
    raises(r"need T, B and H of at least 1", lrn.lrn_recurrence, q[:0], q[:0], q[:0])
    raises(r"v must match q's dtype", lrn.lrn_recurrence, q, q, q.double())
    raises(r"backend 'cpu' supports float32 and float64, got torch.float16", lrn.lrn_recurrence, q.half(), q.half(), q.half(), backend="cpu")
    raises(r"backend must be one of", lrn.lrn_recurrence, q, q, q, backend="fast")


def test_cell_errors():
    cell = lrn.LRNCell(3, 4)
    raises(r"input.size\(-1\) must be equal to input_size. Expected 3, got 2", cell, torch.randn(5, 2))
    raises(r"Expected hidden size \(5, 4\), got \[5, 3\]", cell, torch.randn(5, 3), torch.randn(5, 3))
    raises(r"Expected input to be 1D or 2D", cell, torch.randn(1, 5, 3))


def test_a_backend_that_cannot_serve_the_ablation_says_so():
    raises(r"backend 'cpu' has no recurrent_gates=False variant", lrn.LRN(3, 4, recurrent_gates=False, backend="cpu"),
           torch.randn(2, 1, 3))
    lrn.LRN(3, 4, recurrent_gates=False)(torch.randn(2, 1, 3))  # auto: the reference serves it
