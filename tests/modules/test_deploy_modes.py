"""TorchScript (jit.script) of the layers, and the deployment modes refused in one clear line
instead of a wrong or cryptic result."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lrn


class Wrapped(torch.nn.Module):
    """A user's model around our layers, as torch.jit.script meets it."""

    def __init__(self, **options):
        super().__init__()
        self.rnn = lrn.LRN(4, 8, **options)
        self.cell = lrn.LRNCell(4, 8, layer_norm=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        out, h_n = self.rnn(x, lengths=lengths)
        return out.sum(0) + self.cell(x[0], h_n[-1]).sum()


@pytest.mark.parametrize("options", [
    {},
    {"num_layers": 2, "bidirectional": True, "layer_norm": True, "output_gate": True},
    {"bias": False, "activation": "identity", "recurrent_gates": False},
], ids=["plain", "deep-bidirectional-ln-olrn", "no-bias-identity-ablation"])
def test_torch_jit_script_runs_at_any_length_after_save_and_load_and_equals_eager(options):
    torch.manual_seed(0)
    eager = Wrapped(**options)
    reference = copy.deepcopy(eager)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(eager), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    for T in (1, 7, 20):
        x = torch.randn(T, 3, 4)
        lengths = torch.tensor([T, max(1, T - 3), 1])
        expected = reference(x, lengths)
        got = scripted(x, lengths)
        torch.testing.assert_close(got, expected)
        grads = torch.autograd.grad(got.sum(), list(scripted.parameters()))
        expected_grads = torch.autograd.grad(expected.sum(), list(reference.parameters()))
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)  # fused vs plain sums


def test_scripting_leaves_the_eager_model_fast_with_its_parameters_and_state_dict_keys():
    model = Wrapped(bidirectional=True)
    keys = list(model.state_dict())
    weight = model.rnn.weight_ih_l0
    scripted = torch.jit.script(model)
    # torch.jit.script puts the TorchScript twin in the eager model too; it shares the Parameters
    # and its eager calls take the original layer (fused kernels, PackedSequence).
    assert list(model.state_dict()) == keys and model.rnn.weight_ih_l0 is weight
    packed = pack_padded_sequence(torch.randn(6, 2, 4), torch.tensor([6, 3]))
    assert model.rnn(packed)[0].data.shape == (9, 16)
    with torch.no_grad():
        weight.mul_(2)  # one set of parameters: the scripted module sees the update
    x, lengths = torch.randn(5, 2, 4), torch.tensor([5, 2])
    torch.testing.assert_close(scripted(x, lengths), model(x, lengths))


def test_torch_jit_script_checks_its_input_in_one_line():
    scripted = torch.jit.script(lrn.LRN(4, 8))
    with pytest.raises(torch.jit.Error, match=r"lengths must lie in \[1, 5\]"):
        scripted(torch.randn(5, 2, 4), lengths=torch.tensor([6, 2]))
    with pytest.raises(torch.jit.Error, match="input.size\\(-1\\) must be equal to input_size"):
        scripted(torch.randn(5, 2, 3))


def test_torch_jit_script_of_a_baseline_with_python_only_code_is_refused_with_the_alternatives():
    with pytest.raises(NotImplementedError, match=r"cannot be compiled by torch.jit.script .*use torch.export") as info:
        torch.jit.script(lrn.make_rnn("sru", 4, 8))
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


def test_a_saved_scripted_model_loads_and_runs_where_lrn_cannot_be_imported(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "model.pt"
    model = Wrapped(bidirectional=True).eval()
    torch.jit.save(torch.jit.script(model), str(path))
    x, lengths = torch.randn(9, 2, 4), torch.tensor([9, 4])
    torch.save({"x": x, "lengths": lengths, "expected": model(x, lengths)}, tmp_path / "io.pt")
    code = (f"import sys; sys.modules['lrn'] = None\n"  # any import of lrn would now fail
            f"import torch\n"
            f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
            f"got = torch.jit.load({str(path)!r})(io['x'], io['lengths'])\n"
            f"torch.testing.assert_close(got, io['expected'])\n"
            f"print('ok')\n")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
