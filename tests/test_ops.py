"""The fused kernels as torch ops: opcheck, torch.compile(fullgraph=True), torch.export and ONNX."""

import pytest
import torch

import lrn
from lrn.functional import available_backends
from lrn.ops import fused

FUSED = [b for b in ("cpu", "triton") if b in available_backends()]


def scan_args(backend, h0=True, lengths=True, D=2, output_gate=True, requires_grad=True):
    T, B, H = 4, 3, 5
    G = 4 if output_gate else 3
    gates = torch.randn(T, B, D * G * H, requires_grad=requires_grad)
    h = torch.randn(D, B, H, requires_grad=requires_grad) if h0 else None
    lens = torch.tensor([4, 1, 3]) if lengths else None
    return (gates, h, lens, D, False, True, output_gate, backend)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("variant", [dict(), dict(h0=False, lengths=False, D=1, output_gate=False)])
def test_opcheck(backend, variant):
    torch.library.opcheck(torch.ops.lrn.scan.default, scan_args(backend, **variant))


@pytest.mark.parametrize("backend", [b for b in FUSED if b == "cpu"])
def test_op_gradients_match_reference(backend):
    gates, h0, lengths, D, reverse, tanh, og, _ = scan_args(backend)
    out, h_last = fused.scan(gates, h0, lengths, D, reverse, tanh, og, backend)
    ref_out, ref_h = lrn.ops.reference.lrn_scan_reference(gates, h0, lengths, num_directions=D,
                                                          output_gate=og)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h_last, ref_h)
    g_out, g_h = torch.randn_like(out), torch.randn_like(h_last)
    grads = torch.autograd.grad((out * g_out).sum() + (h_last * g_h).sum(), (gates, h0))
    ref_grads = torch.autograd.grad((ref_out * g_out).sum() + (ref_h * g_h).sum(), (gates, h0))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif("cpu" not in FUSED, reason="the cpu backend needs numba")
@pytest.mark.parametrize("variant", [dict(), dict(h0=False, lengths=False, D=1, output_gate=False)])
def test_double_backward(variant, monkeypatch):
    gates, h0, lengths, D, reverse, tanh, og, backend = scan_args("cpu", **variant)
    inputs = tuple(t.detach().double().requires_grad_(True) for t in (gates, h0) if t is not None)

    def scan(*tensors):
        return fused.scan(tensors[0], tensors[1] if len(tensors) > 1 else None, lengths, D, reverse, tanh, og, "cpu")

    assert torch.autograd.gradgradcheck(scan, inputs)
    # a plain backward still runs the fused kernel's backward, not the reference
    calls = []
    original = fused.scan_backward
    monkeypatch.setattr(fused, "scan_backward", lambda *a: (calls.append(1), original(*a))[1])
    out, h_last = scan(*inputs)
    (out.sum() + h_last.sum()).backward()
    assert calls == [1]


@pytest.mark.skipif("cpu" not in FUSED, reason="the cpu backend needs numba")
def test_eager_inference_runs_the_kernel_without_the_op(monkeypatch):
    gates, h0, lengths, D, reverse, tanh, og, backend = scan_args("cpu")
    with torch.no_grad():
        expected = fused.scan(gates, h0, lengths, D, reverse, tanh, og, backend)

    def refuse(*args):
        raise AssertionError("the custom op was dispatched")

    monkeypatch.setattr(fused, "scan", refuse)
    activation = "tanh" if tanh else "identity"
    with torch.no_grad():
        got = lrn.functional.lrn_scan(gates, h0, lengths, D, reverse, activation, og, "cpu")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # With autograd needed the op is still used.
    with pytest.raises(AssertionError, match="custom op was dispatched"):
        lrn.functional.lrn_scan(gates, h0, lengths, D, reverse, activation, og, "cpu")


@pytest.mark.skipif("cpu" not in FUSED, reason="the cpu backend needs numba")
def test_compile_fullgraph_no_graph_break():
    model = lrn.LRN(3, 4, num_layers=2, bidirectional=True, backend="cpu")
    x = torch.randn(5, 2, 3, requires_grad=True)
    lengths = torch.tensor([5, 3])
    compiled = torch.compile(model, fullgraph=True)
    out, h = compiled(x, lengths=lengths)
    ref_out, ref_h = model(x, lengths=lengths)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (ref_grad,) = torch.autograd.grad(ref_out.square().sum(), x)
    torch.testing.assert_close(grad, ref_grad)


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = lrn.LRN(3, 4, bidirectional=True)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.out(out.mean(0))


def test_torch_export_runs_reference_decomposition():
    model = Classifier().eval()
    x = torch.randn(6, 2, 3)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


def test_onnx_export_matches_eager(tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export test needs the onnx package ([test] extra)")
    model = Classifier().eval()
    x = torch.randn(6, 2, 3)
    path = tmp_path / "lrn.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    onnx.checker.check_model(onnx.load(str(path)))
    ort = pytest.importorskip("onnxruntime", reason="running the ONNX graph needs onnxruntime")
    session = ort.InferenceSession(str(path))
    (result,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(result), model(x), atol=1e-5, rtol=1e-4)
