"""The fused kernels as torch ops: opcheck, torch.compile(fullgraph=True), torch.export and ONNX."""

import pytest
import torch

import lrn
from lrn.functional import available_backends
from lrn.ops import fused
from lrn.ops.reference import is_exporting

FUSED = [b for b in ("cpu", "triton") if b in available_backends()]


def scan_args(backend, h0=True, lengths=True, D=2, output_gate=True, requires_grad=True):
    T, B, H = 4, 3, 5
    G = 4 if output_gate else 3
    # Triton runs CPU tensors only in its interpreter (no GPU); lengths stay on the CPU, as the modules pass them
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    gates = torch.randn(T, B, D * G * H, device=device, requires_grad=requires_grad)
    h = torch.randn(D, B, H, device=device, requires_grad=requires_grad) if h0 else None
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
        got = lrn.functional.lrn_scan(gates, h0, lengths, num_directions=D, reverse=reverse, activation=activation,
                                      output_gate=og, backend="cpu")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # With autograd needed the op is still used.
    with pytest.raises(AssertionError, match="custom op was dispatched"):
        lrn.functional.lrn_scan(gates, h0, lengths, num_directions=D, reverse=reverse, activation=activation,
                                output_gate=og, backend="cpu")


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


class ExportProbe(torch.nn.Module):
    def forward(self, x):
        return x + 1 if is_exporting() else x - 1


@pytest.mark.skipif("cpu" not in FUSED, reason="the cpu backend needs numba")
def test_compile_is_not_export():
    # Before pytorch/pytorch#176499, Dynamo folded torch.compiler.is_exporting() to True under
    # torch.compile: compiled LRNs took the export path (a scan op), whose gradients were wrong
    # on that torch (seen on torch 2.11, H200).  LRN's own is_exporting() must tell them apart.
    x = torch.zeros(2)
    assert torch.compile(ExportProbe(), fullgraph=True, backend="eager")(x).tolist() == [-1, -1]
    assert torch.export.export(ExportProbe(), (x,)).module()(x).tolist() == [1, 1]
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model = lrn.LRN(3, 4, bidirectional=True, backend="cpu")
    torch.compile(model, backend=recording_backend, fullgraph=True)(torch.randn(5, 2, 3, requires_grad=True))
    targets = {node.target for gm in graphs for node in gm.graph.nodes if node.op == "call_function"}
    assert torch.ops.lrn.scan.default in targets, targets


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = lrn.LRN(3, 4, num_layers=2, bidirectional=True)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x, lengths):
        out, h = self.rnn(x, lengths=lengths)
        return self.out(out.sum(0)), h


DYNAMIC = {"x": {0: torch.export.Dim("T", min=2, max=4096), 1: torch.export.Dim("B", min=2, max=1024)},
           "lengths": {0: torch.export.Dim("B", min=2, max=1024)}}


def _inputs(T, B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = T
    return torch.randn(T, B, 3, generator=gen), lengths


def test_torch_export_keeps_sequence_length_and_batch_dynamic():
    model = Classifier().eval()
    exported = torch.export.export(model, _inputs(20, 5), dynamic_shapes=DYNAMIC)
    for T, B in ((7, 3), (20, 5), (50, 9)):
        x, lengths = _inputs(T, B, seed=T)
        for got, want in zip(exported.module()(x, lengths), model(x, lengths)):
            torch.testing.assert_close(got, want)
    cell = lrn.LRNCell(3, 4).eval()
    batch = torch.export.Dim("batch", min=2, max=1024)
    exported_cell = torch.export.export(cell, (torch.randn(5, 3), torch.randn(5, 4)),
                                        dynamic_shapes=({0: batch}, {0: batch}))
    x, h = torch.randn(9, 3), torch.randn(9, 4)
    torch.testing.assert_close(exported_cell.module()(x, h), cell(x, h))


def test_onnx_export_runs_at_any_length(tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export test needs the onnx package ([test] extra)")
    ort = pytest.importorskip("onnxruntime", reason="running the ONNX graph needs onnxruntime")
    model = Classifier().eval()
    sizes = {}
    for example_T in (20, 200):  # the graph is a loop: its size does not grow with T
        path = tmp_path / f"lrn-{example_T}.onnx"
        torch.onnx.export(model, _inputs(example_T, 5), str(path), dynamo=True, dynamic_shapes=DYNAMIC)
        onnx.checker.check_model(onnx.load(str(path)))
        sizes[example_T] = len(onnx.load(str(path)).graph.node)
    assert sizes[20] == sizes[200]
    session = ort.InferenceSession(str(tmp_path / "lrn-20.onnx"))
    names = [i.name for i in session.get_inputs()]
    for T, B in ((7, 3), (50, 9)):
        x, lengths = _inputs(T, B, seed=T)
        got = session.run(None, dict(zip(names, (x.numpy(), lengths.numpy()))))
        for result, want in zip(got, model(x, lengths)):
            torch.testing.assert_close(torch.from_numpy(result), want.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", [dict(), dict(h0=False, lengths=False, D=1, output_gate=False)])
@pytest.mark.parametrize("reverse", [False, True])
def test_the_exportable_scan_equals_the_loop(variant, reverse):
    gates, h0, lengths, D, _, _, og, _ = scan_args("reference", **variant)
    for activation in ("tanh", "identity"):
        kw = dict(num_directions=D, reverse=reverse, activation=activation, output_gate=og)
        loop = lrn.ops.reference.lrn_scan_reference(gates, h0, lengths, **kw)
        scan = lrn.ops.reference.lrn_scan_reference(gates, h0, lengths, exportable=True, **kw)
        for a, b in zip(scan, loop):
            torch.testing.assert_close(a, b)
