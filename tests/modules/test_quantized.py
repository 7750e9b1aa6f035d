"""lrn.quantize_dynamic: int8 projections for LRN and LRNCell, beside torch's own modules."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.ao.nn.quantized import dynamic as qdynamic

import lrn
from lrn.modules.quantized import DynamicQuantizedLRN, DynamicQuantizedLRNCell


class Model(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.rnn = lrn.LRN(32, 64, **kwargs)
        self.cell = lrn.LRNCell(32, 64, layer_norm=kwargs.get("layer_norm", False))
        self.gru = torch.nn.GRU(32, 64)

    def forward(self, x, lengths=None):
        return self.rnn(x, lengths=lengths)[0], self.cell(x[0]), self.gru(x)[0]


def relative_error(got, want):
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2, bidirectional=True, layer_norm=True),
                                    dict(output_gate=True, bias=False)], ids=["lrn", "bidir-2-ln", "olrn-nobias"])
def test_int8_projections_stay_within_five_percent_of_float(kwargs):
    model = Model(**kwargs).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization's notice
        quantized = lrn.quantize_dynamic(model)
    assert type(quantized.rnn) is DynamicQuantizedLRN and type(quantized.cell) is DynamicQuantizedLRNCell
    assert all(isinstance(p, qdynamic.Linear) for p in quantized.rnn.projections)
    assert not any(name.startswith("weight_ih") for name, _ in quantized.rnn.named_parameters())
    assert type(model.rnn) is lrn.LRN  # not changed in place
    x, lengths = torch.randn(12, 5, 32), torch.tensor([12, 3, 7, 1, 12])
    with torch.no_grad():
        for got, want in zip(quantized(x, lengths), model(x, lengths)):
            assert relative_error(got, want) < 0.05
        unbatched = quantized.rnn(x[:, 0])[0]
        torch.testing.assert_close(unbatched, quantized.rnn(x[:, :1])[0][:, 0])
    saved = [io.BytesIO() for _ in range(2)]
    torch.save(model.rnn.state_dict(), saved[0])
    torch.save(quantized.rnn.state_dict(), saved[1])
    assert saved[1].tell() < 0.5 * saved[0].tell()


def test_torch_alone_leaves_lrn_in_float_and_lrn_says_which_dtype_it_serves():
    model = Model().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        plain = torch.ao.quantization.quantize_dynamic(model)
    assert type(plain.rnn) is lrn.LRN  # what docs/deploy.md warns about
    with pytest.raises(ValueError, match="dtype must be torch.qint8"):
        lrn.quantize_dynamic(model, dtype=torch.float16)
    with pytest.raises(ValueError, match="qconfig is not set"):
        DynamicQuantizedLRN.from_float(lrn.LRN(4, 4))
