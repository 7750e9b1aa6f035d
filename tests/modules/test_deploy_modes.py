"""Deployment modes that LRN refuses, each in one clear line instead of a wrong or cryptic result."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import lrn


class Wrapped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = lrn.LRN(4, 8, bidirectional=True)
        self.cell = lrn.LRNCell(4, 8)

    def forward(self, x):
        return self.rnn(x)[0].sum(0) + self.cell(x[0]).sum()


@pytest.mark.parametrize("module", [Wrapped(), lrn.LRNCell(4, 8), lrn.make_rnn("sru", 4, 8)],
                         ids=["nested", "cell", "sru"])
def test_torch_jit_script_is_refused_with_the_alternatives(module):
    with pytest.raises(NotImplementedError, match=r"cannot be compiled by torch.jit.script .*use torch.export") as info:
        torch.jit.script(module)
    assert "\n" not in str(info.value)


def test_the_torchscript_onnx_exporter_is_refused_rather_than_fixing_the_length():
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package ([test] extra)")
    model = lrn.LRN(4, 8).eval()
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match=r"dynamo=False\): use torch.onnx.export"):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(5, 2, 4),), io.BytesIO(), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "T"}})
    # Tracing without exporting still works (the fused op is recorded, the length stays dynamic).
    traced = torch.jit.trace(model, (torch.randn(5, 2, 4),))
    x = torch.randn(9, 2, 4)
    torch.testing.assert_close(traced(x)[0], model(x)[0])
