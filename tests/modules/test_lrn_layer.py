"""lrn.LRN / lrn.LRNCell against an independent per-sequence loop, and the nn.GRU contract."""

import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lrn
from conftest import CPU_BACKENDS

torch.set_default_dtype(torch.float32)


def naive_lrn(model: lrn.LRN, x: torch.Tensor, h0: torch.Tensor | None = None):
    """One unbatched sequence x (T, in) through ``model``'s weights, written from the
    paper's equations with per-step Python arithmetic.  Returns (T, D*H), (L*D, H)."""
    H, D = model.hidden_size, model.num_directions
    G = 4 if model.output_gate else 3
    layer_input, finals = x, []
    for layer in range(model.num_layers):
        outs = []
        for d, suffix in enumerate(["", "_reverse"][:D]):
            W = getattr(model, f"weight_ih_l{layer}{suffix}")
            b = getattr(model, f"bias_ih_l{layer}{suffix}") if model.bias else 0
            proj = layer_input @ W.T + b  # (T, G*H)
            if model.layer_norm:
                blocks = proj.view(-1, G, H)
                mean = blocks.mean(-1, keepdim=True)
                var = blocks.var(-1, unbiased=False, keepdim=True)
                proj = ((blocks - mean) / torch.sqrt(var + 1e-5)).view(-1, G * H)
                proj = proj * getattr(model, f"ln_weight_l{layer}{suffix}") + getattr(model, f"ln_bias_l{layer}{suffix}")
            h = torch.zeros(H, dtype=x.dtype) if h0 is None else h0[layer * D + d]
            steps = range(len(x) - 1, -1, -1) if d == 1 else range(len(x))
            out = [None] * len(x)
            for t in steps:
                q, k, v = proj[t, :H], proj[t, H:2 * H], proj[t, 2 * H:3 * H]
                f = 1 / (1 + torch.exp(-(q - h)))
                i = 1 / (1 + torch.exp(-(k + h)))
                c = i * v + f * h
                if model.activation == "tanh":
                    c = torch.tanh(c)
                if model.output_gate:
                    c = c / (1 + torch.exp(-(proj[t, 3 * H:] - c)))
                h = c
                out[t] = h
            outs.append(torch.stack(out))
            finals.append(h)
        layer_input = torch.cat(outs, -1)
    return layer_input, torch.stack(finals)


CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(activation="identity"),
    dict(output_gate=True, bidirectional=True),
    dict(layer_norm=True, num_layers=2),
    dict(bias=False),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_padded_batch_matches_naive_per_sequence_loop(config, backend):
    model = lrn.LRN(5, 6, backend=backend, dtype=torch.float64, **config)
    for p in model.parameters():  # non-trivial biases and layer-norm parameters
        nn.init.uniform_(p, -0.7, 0.7)
    lengths = torch.tensor([7, 3, 1, 5])
    x = torch.randn(7, 4, 5, dtype=torch.float64)
    h0 = torch.randn(model.num_layers * model.num_directions, 4, 6, dtype=torch.float64)
    out, h_n = model(x, h0, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        ref_out, ref_h = naive_lrn(model, x[:n, b], h0[:, b])
        torch.testing.assert_close(out[:n, b], ref_out)
        torch.testing.assert_close(h_n[:, b], ref_h)
        assert torch.all(out[n:, b] == 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batched_equals_one_sequence_at_a_time(backend):
    model = lrn.LRN(3, 4, num_layers=2, bidirectional=True, backend=backend)
    x = torch.randn(6, 5, 3)
    out, h_n = model(x)
    for b in range(5):
        out_b, h_b = model(x[:, b])  # unbatched (T, in)
        torch.testing.assert_close(out[:, b], out_b, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(h_n[:, b], h_b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_equals_padded_with_lengths(backend, enforce_sorted):
    model = lrn.LRN(3, 4, num_layers=2, bidirectional=True, backend=backend)
    lengths = torch.tensor([6, 4, 4, 1]) if enforce_sorted else torch.tensor([4, 6, 1, 4])
    x = torch.randn(6, 4, 3)
    h0 = torch.randn(4, 4, 4)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out_packed, h_packed = model(packed, h0)
    assert isinstance(out_packed, nn.utils.rnn.PackedSequence)
    assert torch.equal(out_packed.batch_sizes, packed.batch_sizes)
    padded, out_lengths = pad_packed_sequence(out_packed)
    out, h_n = model(x, h0, lengths=lengths)
    torch.testing.assert_close(padded, out)
    torch.testing.assert_close(h_packed, h_n)
    assert torch.equal(out_lengths, lengths)


def test_packed_output_layout_matches_nn_gru():
    # Same packing contract as nn.GRU: an LRN output can feed code written for GRU output.
    lengths = torch.tensor([2, 5, 3])
    packed = pack_padded_sequence(torch.randn(5, 3, 2), lengths, enforce_sorted=False)
    gru_out, _ = nn.GRU(2, 4)(packed)
    lrn_out, _ = lrn.LRN(2, 4)(packed)
    assert lrn_out.data.shape == gru_out.data.shape
    assert torch.equal(lrn_out.sorted_indices, gru_out.sorted_indices)
    assert torch.equal(lrn_out.unsorted_indices, gru_out.unsorted_indices)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_reverse_direction_reads_each_sequence_from_its_true_end(backend):
    model = lrn.LRN(3, 4, bidirectional=True, backend=backend, dtype=torch.float64)
    lengths = torch.tensor([5, 2])
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, h_n = model(x, lengths=lengths)
    backward_only = lrn.LRN(3, 4, backend=backend, dtype=torch.float64)
    backward_only.weight_ih_l0.data.copy_(model.weight_ih_l0_reverse)
    backward_only.bias_ih_l0.data.copy_(model.bias_ih_l0_reverse)
    for b, n in enumerate(lengths.tolist()):
        flipped = x[:n, b].flip(0)
        ref_out, ref_h = backward_only(flipped)
        torch.testing.assert_close(out[:n, b, 4:], ref_out.flip(0))
        torch.testing.assert_close(h_n[1, b], ref_h[0])
    # functional form: reverse=True without lengths is the time-flipped forward run
    q, k, v = torch.randn(3, 4, 2, 5, dtype=torch.float64).unbind(0)
    out_r, h_r = lrn.lrn_recurrence(q, k, v, reverse=True, backend=backend)
    out_f, h_f = lrn.lrn_recurrence(q.flip(0), k.flip(0), v.flip(0), backend=backend)
    torch.testing.assert_close(out_r, out_f.flip(0))
    torch.testing.assert_close(h_r, h_f)


@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "inference"])  # plain ops / the step kernel
@pytest.mark.parametrize("config", [dict(), dict(output_gate=True, activation="identity"), dict(layer_norm=True)])
def test_cell_stepped_over_sequence_equals_layer(config, grad):
    layer = lrn.LRN(3, 5, **config)
    cell = lrn.LRNCell(3, 5, **config)
    cell.load_state_dict({name.removesuffix("_l0"): p for name, p in layer.state_dict().items()})
    x, h = torch.randn(6, 2, 3), torch.randn(2, 5)
    out, h_n = layer(x, h.unsqueeze(0))
    with torch.set_grad_enabled(grad):
        for t in range(6):
            h = cell(x[t], h)
            torch.testing.assert_close(h, out[t])
        assert cell(x[0, 0]).shape == (5,)  # unbatched
        assert cell(x[0]).shape == (2, 5)  # no state: zeros
    assert h.requires_grad == grad
    torch.testing.assert_close(h, h_n[0])
    assert cell.weight_ih.shape == ((4 if config.get("output_gate") else 3) * 5, 3)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("config", [dict(bidirectional=True, num_layers=2),
                                    dict(output_gate=True, layer_norm=True),
                                    dict(activation="identity", bidirectional=True)])
def test_gradcheck_float64(config, backend):
    model = lrn.LRN(2, 2, backend=backend, dtype=torch.float64, **config)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(model.num_layers * model.num_directions, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 1])
    params = tuple(model.parameters())

    def run(x, h0, *weights):
        state = dict(zip([n for n, _ in model.named_parameters()], weights))
        out, h_n = torch.func.functional_call(model, state, (x, h0), {"lengths": lengths})
        return out, h_n

    assert torch.autograd.gradcheck(run, (x, h0, *[p.detach().requires_grad_() for p in params]))


def test_functional_gradcheck_all_inputs():
    T, B, H = 4, 2, 3
    q, k, v, o = (torch.randn(T, B, H, dtype=torch.float64, requires_grad=True) for _ in range(4))
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    for backend in CPU_BACKENDS:
        fn = lambda q, k, v, o, h0: lrn.lrn_recurrence(q, k, v, h0, o=o, lengths=torch.tensor([4, 2]),
                                                       reverse=True, backend=backend)
        assert torch.autograd.gradcheck(fn, (q, k, v, o, h0))


def test_state_dict_round_trip_and_whole_model_pickle(tmp_path):
    model = lrn.LRN(4, 6, num_layers=2, bidirectional=True, layer_norm=True)
    names = dict(model.named_parameters())
    assert names["weight_ih_l1_reverse"].shape == (18, 12)
    assert names["bias_ih_l0"].shape == (18,)
    clone = lrn.LRN(4, 6, num_layers=2, bidirectional=True, layer_norm=True)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(clone(x)[0], model(x)[0])
    # Scripts that pickle the whole model and call flatten_parameters keep working.
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    restored.flatten_parameters()
    torch.testing.assert_close(restored(x)[0], model(x)[0])
    assert pickle.loads(pickle.dumps(model)).hidden_size == 6


def test_batch_first_and_h_layout():
    model = lrn.LRN(3, 4, num_layers=2, batch_first=True)
    x = torch.randn(5, 7, 3)  # (B, T, in)
    out, h_n = model(x)
    assert out.shape == (5, 7, 4) and h_n.shape == (2, 5, 4)  # batch_first never applies to h
    out_tm, _ = lrn.LRN(3, 4, num_layers=2)(x.transpose(0, 1))
    assert out_tm.shape == (7, 5, 4)


def test_repr_and_default_init():
    model = lrn.LRN(10, 20, num_layers=2, dropout=0.5, bidirectional=True, activation="identity")
    assert "LRN(10, 20, num_layers=2, dropout=0.5, bidirectional=True, activation='identity')" == repr(model)
    assert torch.all(model.bias_ih_l0 == 0)
    bound = (6 / (10 + 20)) ** 0.5
    assert model.weight_ih_l0.abs().max() <= bound and model.weight_ih_l0.abs().max() > 0.8 * bound


def test_dropout_only_between_layers():
    model = lrn.LRN(3, 4, num_layers=1, dropout=0.9).train()
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(model(x)[0], model(x)[0])  # single layer: no dropout anywhere
    deep = lrn.LRN(3, 4, num_layers=2, dropout=0.9)
    assert not torch.equal(deep.train()(x)[0], deep(x)[0])
    torch.testing.assert_close(deep.eval()(x)[0], deep(x)[0])


def test_drop_in_replacement_trains():
    """A script written for nn.GRU (PackedSequence input, flatten_parameters) trains with LRN."""
    torch.manual_seed(1)

    class Tagger(nn.Module):
        def __init__(self, rnn_cls):
            super().__init__()
            self.rnn = rnn_cls(2, 8, num_layers=2, batch_first=True, bidirectional=True)
            self.out = nn.Linear(16, 1)

        def forward(self, x, lengths):
            self.rnn.flatten_parameters()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True)
            return self.out(out).squeeze(-1)

    x = torch.randn(32, 10, 2)
    lengths = torch.randint(3, 11, (32,))
    target = x[..., 0].cumsum(1) > 0  # a running-sum sign: needs memory
    model = Tagger(lrn.LRN)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        logits = model(x, lengths)
        mask = torch.arange(logits.shape[1]) < lengths[:, None]
        loss = nn.functional.binary_cross_entropy_with_logits(logits[mask], target[:, :logits.shape[1]][mask].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_torch_compile_agrees(backend):
    model = lrn.LRN(3, 4, num_layers=2, bidirectional=True, backend=backend)
    x = torch.randn(5, 2, 3, requires_grad=True)
    compiled = torch.compile(model)
    out, h = compiled(x)
    ref_out, ref_h = model(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (ref_grad,) = torch.autograd.grad(ref_out.sum(), x)
    torch.testing.assert_close(grad, ref_grad)


def test_an_empty_batch_gives_empty_outputs_as_nn_gru():
    for batch_first in (False, True):
        model, gru = lrn.LRN(4, 5, num_layers=2, bidirectional=True, batch_first=batch_first), torch.nn.GRU(
            4, 5, num_layers=2, bidirectional=True, batch_first=batch_first)
        x = torch.randn(0, 3, 4) if batch_first else torch.randn(3, 0, 4)
        (out, h), (gru_out, gru_h) = model(x), gru(x)
        assert out.shape == gru_out.shape and h.shape == gru_h.shape
    cell, gru_cell = lrn.LRNCell(4, 5), torch.nn.GRUCell(4, 5)
    assert cell(torch.randn(0, 4)).shape == gru_cell(torch.randn(0, 4)).shape == (0, 5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_cpu_runs_the_float32_kernel(dtype, monkeypatch):
    from lrn.ops import fused

    torch.manual_seed(0)
    model = lrn.LRN(8, 16, num_layers=2, bidirectional=True)
    x = torch.randn(7, 3, 8)
    expected, _ = model(x)
    half = lrn.LRN(8, 16, num_layers=2, bidirectional=True).to(dtype)
    half.load_state_dict(model.state_dict())
    calls = []
    original = fused.scan
    monkeypatch.setattr(fused, "scan", lambda *a: (calls.append(a[0].dtype), original(*a))[1])
    xh = x.to(dtype).requires_grad_(True)
    out, h = half(xh)
    assert out.dtype == h.dtype == dtype and calls and set(calls) == {torch.float32}
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)
    out.float().sum().backward()
    assert xh.grad.dtype == dtype and torch.isfinite(xh.grad.float()).all()


def test_torch_func_grad_and_vmap():
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = lrn.LRN(8, 16, num_layers=2)
    x = torch.randn(5, 70, 8)  # 70 sequences: the fused kernels' sizes in eager mode
    params = dict(model.named_parameters())
    got = grad(lambda p: functional_call(model, p, (x,))[0].square().sum())(params)
    expected = torch.autograd.grad(model(x)[0].square().sum(), list(params.values()))
    for (name, g), e in zip(got.items(), expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5, msg=name)
    # vmap over the batch dimension: each sequence alone, the same as the batch
    out = vmap(lambda seq: model(seq.unsqueeze(1))[0].squeeze(1), in_dims=1, out_dims=1)(x)
    torch.testing.assert_close(out, model(x)[0], rtol=1e-5, atol=1e-5)
    cell = lrn.LRNCell(8, 16)
    torch.testing.assert_close(vmap(cell)(x[0]), cell(x[0]), rtol=1e-5, atol=1e-5)


def test_double_backward_through_the_layer_in_float32():
    # a gradient penalty: d/dW of ||d loss / d x||^2, through the fused projection and kernel
    torch.manual_seed(0)
    model = lrn.LRN(8, 16, bidirectional=True)
    x = torch.randn(6, 70, 8, requires_grad=True)
    (gx,) = torch.autograd.grad(model(x)[0].square().sum(), x, create_graph=True)
    penalty = torch.autograd.grad(gx.square().sum(), model.weight_ih_l0)[0]
    reference = lrn.LRN(8, 16, bidirectional=True, backend="reference").double()
    reference.load_state_dict(model.state_dict())
    xd = x.detach().double().requires_grad_(True)
    (gxd,) = torch.autograd.grad(reference(xd)[0].square().sum(), xd, create_graph=True)
    expected = torch.autograd.grad(gxd.square().sum(), reference.weight_ih_l0)[0]
    torch.testing.assert_close(penalty.double(), expected, rtol=1e-3, atol=1e-4)


def test_torch_jit_trace_keeps_sequence_length_and_batch_dynamic():
    torch.manual_seed(0)
    model = lrn.LRN(8, 16, num_layers=2, bidirectional=True).eval()
    cell = lrn.LRNCell(8, 16).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, (torch.randn(20, 4, 8),))
        traced_cell = torch.jit.trace(cell, (torch.randn(4, 8), torch.randn(4, 16)))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        for T, B in ((7, 4), (20, 1), (50, 9)):
            x = torch.randn(T, B, 8)
            for module in (traced, loaded):
                out, h = module(x)
                torch.testing.assert_close(out, model(x)[0])
                torch.testing.assert_close(h, model(x)[1])
        x, h = torch.randn(4, 8), torch.randn(4, 16)
        torch.testing.assert_close(traced_cell(x, h), cell(x, h))
