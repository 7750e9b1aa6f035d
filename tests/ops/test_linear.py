"""The oneDNN input projection equals F.linear on outputs and every gradient."""

import pytest
import torch
import torch.nn.functional as F

from lrn.ops import linear as linear_mod


@pytest.mark.skipif(not linear_mod._ONEDNN, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("shape", [(5, 3, 7), (4, 7)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_linear_matches_f_linear(shape, with_bias):
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(12, 7, requires_grad=True)
    b = torch.randn(12, requires_grad=True) if with_bias else None
    out = linear_mod.onednn_linear(x, w, b)
    ref = F.linear(x, w, b)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    inputs = (x, w, b) if with_bias else (x, w)
    grads = torch.autograd.grad(out, inputs, g)
    ref_grads = torch.autograd.grad(ref, inputs, g)
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-5)


def test_other_dtypes_fall_back_to_f_linear():
    x, w = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(linear_mod.linear(x, w), F.linear(x, w))


@pytest.mark.skipif(not linear_mod._ONEDNN, reason="this torch build has no oneDNN linear")
def test_frozen_weight_still_gives_bias_and_input_gradients():
    x = torch.randn(6, 7, requires_grad=True)
    w, b = torch.randn(12, 7), torch.randn(12, requires_grad=True)
    g = torch.randn(6, 12)
    grads = torch.autograd.grad(linear_mod.onednn_linear(x, w, b), (x, b), g)
    ref_grads = torch.autograd.grad(F.linear(x, w, b), (x, b), g)
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-5)


@pytest.mark.skipif(not linear_mod._ONEDNN, reason="this torch build has no oneDNN linear")
def test_products_below_the_row_threshold_use_f_linear():
    w = torch.randn(12, 7, requires_grad=True)
    rows = linear_mod._ONEDNN_MIN_ROWS
    small = linear_mod.linear(torch.randn(rows - 1, 7), w)  # torch's own product is as fast or faster
    large = linear_mod.linear(torch.randn(rows, 7), w)  # (its output is a view of oneDNN's)
    assert type(small.grad_fn).__name__ == "MmBackward0"
    assert type(large.grad_fn.next_functions[0][0]).__name__ == "_OneDNNLinearBackward"


@pytest.mark.skipif(not linear_mod._BACKED_BUFFERS, reason="this torch build cannot expose oneDNN memory")
def test_onednn_backed_buffer_is_read_without_a_copy():
    import gc

    buffer = linear_mod.onednn_backed_empty(3, 2, 5)
    buffer.copy_(torch.arange(30.0).view(3, 2, 5))
    flat = buffer.view(6, 5)  # as the projection's backward sees it
    owner = linear_mod._as_onednn(flat)
    assert owner.is_mkldnn and linear_mod._as_onednn(flat) is owner  # the owner, not a copy
    torch.testing.assert_close(owner.to_dense(), flat, rtol=0, atol=0)
    flat[1, 2] = -7.0  # one memory: writes show through
    assert owner.to_dense()[1, 2] == -7.0
    # Anything that is not exactly the buffer is copied.
    assert linear_mod._as_onednn(flat[:3]) is not owner
    assert linear_mod._as_onednn(flat.clone()) is not owner
    address = flat.data_ptr()
    del buffer, flat, owner
    gc.collect()
    assert address not in linear_mod._OWNERS  # forgotten with its owner


@pytest.mark.skipif(not linear_mod._BACKED_BUFFERS, reason="this torch build cannot expose oneDNN memory")
def test_gradients_through_a_backed_gate_gradient_match_f_linear(monkeypatch):
    # The LRN kernels' backward hands the projection a oneDNN-backed gate gradient.
    x = torch.randn(7, 4, requires_grad=True)
    w = torch.randn(9, 4, requires_grad=True)
    b = torch.randn(9, requires_grad=True)
    g = linear_mod.onednn_backed_empty(7, 9)
    g.copy_(torch.randn(7, 9))
    copied = []
    to_mkldnn = torch.Tensor.to_mkldnn
    monkeypatch.setattr(torch.Tensor, "to_mkldnn",
                        lambda self, *a: copied.append(tuple(self.shape)) or to_mkldnn(self, *a))
    grads = torch.autograd.grad(linear_mod.onednn_linear(x, w, b), (x, w, b), g)
    monkeypatch.undo()
    assert (7, 4) in copied and (7, 9) not in copied  # x is copied, the gradient is not
    ref_grads = torch.autograd.grad(F.linear(x, w, b), (x, w, b), g.clone())
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-5)
