"""Beam search and greedy search on small random encoder-decoders."""

import itertools

import pytest
import torch

from lrn.modules import CELLS
from lrn.tasks.beam import beam_search, greedy_search, normalized_score
from lrn.tasks.mt_model import Seq2Seq

PAD, UNK, BOS, EOS = 0, 1, 2, 3
BANNED = (PAD, BOS)


def random_model(cell: str, vocab_size: int, seed: int, layers: int = 2) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(cell, {}, vocab_size, embed_size=8, hidden_size=8, encoder_layers=layers,
                    decoder_layers=layers, dropout=0.0, layer_norm=False, pad_id=PAD).eval()
    # Larger weights than the initialisation gives, so the distributions are far from uniform.
    with torch.no_grad():
        model.tgt_embed.weight.mul_(8.0)
        model.out_bias.normal_(0.0, 1.0)
    return model


def sources(vocab_size: int, lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab_size, (max(lengths), len(lengths)), generator=g)
    for b, n in enumerate(lengths):
        src[n:, b] = PAD
    return src, torch.tensor(lengths)


@torch.no_grad()
def sequence_log_probs(model: Seq2Seq, src, lengths, b: int, hyps: list[list[int]]) -> list[float]:
    """log p(tokens + </s> | source b) of each hypothesis, by one teacher-forced forward pass."""
    n, N, T = int(lengths[b]), len(hyps), max(len(h) for h in hyps) + 1
    tgt_in = torch.full((T, N), PAD)
    tgt_out = torch.full((T, N), PAD)
    for j, h in enumerate(hyps):
        tgt_in[: len(h) + 1, j] = torch.tensor([BOS] + h)
        tgt_out[: len(h) + 1, j] = torch.tensor(h + [EOS])
    src_b = src[:n, b:b + 1].expand(n, N)
    logp = model(src_b, lengths[b:b + 1].expand(N), tgt_in).log_softmax(-1)  # (T, N, V)
    picked = logp.gather(2, tgt_out.unsqueeze(2)).squeeze(2) * (tgt_out != PAD)  # (T, N)
    return picked.sum(0).tolist()


def sequence_log_prob(model: Seq2Seq, src, lengths, b: int, tokens: list[int]) -> float:
    return sequence_log_probs(model, src, lengths, b, [tokens])[0]


@pytest.mark.parametrize("cell", ["gru", "lrn", "olrn"])
def test_beam_size_one_equals_greedy(cell):
    model = random_model(cell, vocab_size=12, seed=1)
    src, lengths = sources(12, [5, 3, 7, 1], seed=2)
    memory = model.encode(src, lengths)
    max_len = torch.tensor([6, 9, 4, 12])
    greedy = greedy_search(model, memory, max_len, bos=BOS, eos=EOS, banned=BANNED)
    beam = beam_search(model, memory, max_len, beam_size=1, bos=BOS, eos=EOS, banned=BANNED)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    for g, b in zip(greedy, beam):
        assert b.score == pytest.approx(g.score, abs=1e-5)
    for b, (h, limit) in enumerate(zip(greedy, max_len.tolist())):
        assert len(h.tokens) + 1 <= limit
        assert h.score == pytest.approx(sequence_log_prob(model, src, lengths, b, h.tokens), abs=1e-4)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("cell", ["lstm", "lrn"])
def test_beam_search_finds_the_best_hypothesis_exhaustively(cell, length_penalty):
    # 3 ordinary tokens + <unk> can follow, at most 3 of them then </s>: 1 + 4 + 16 + 64 = 85
    # hypotheses; a beam of 85 never prunes, so it must return the best of all of them.
    vocab_size = 7
    model = random_model(cell, vocab_size, seed=3)
    src, lengths = sources(vocab_size, [4, 2], seed=4)
    memory = model.encode(src, lengths)
    max_len = torch.tensor([4, 4])
    found = beam_search(model, memory, max_len, beam_size=85, bos=BOS, eos=EOS,
                        length_penalty=length_penalty, banned=BANNED)
    free = [UNK] + list(range(4, vocab_size))
    for b in range(2):
        hyps = [list(t) for n in range(4) for t in itertools.product(free, repeat=n)]
        log_probs = sequence_log_probs(model, src, lengths, b, hyps)
        scored = [(lp / (len(h) + 1) ** length_penalty, h, lp) for h, lp in zip(hyps, log_probs)]
        best_norm, best_tokens, best_lp = max(scored)
        assert found[b].tokens == best_tokens
        assert found[b].score == pytest.approx(best_lp, abs=1e-4)
        assert normalized_score(found[b], length_penalty) == pytest.approx(best_norm, abs=1e-4)


def test_small_beam_scores_are_true_log_probs_and_respect_limits():
    model = random_model("gru", vocab_size=15, seed=5)
    src, lengths = sources(15, [6, 2, 4], seed=6)
    memory = model.encode(src, lengths)
    max_len = torch.tensor([3, 8, 5])
    hyps = beam_search(model, memory, max_len, beam_size=3, bos=BOS, eos=EOS, banned=BANNED)
    for b, h in enumerate(hyps):
        assert len(h.tokens) + 1 <= int(max_len[b])
        assert not set(h.tokens) & {PAD, BOS, EOS}
        assert h.score == pytest.approx(sequence_log_prob(model, src, lengths, b, h.tokens), abs=1e-4)


def test_beam_size_must_be_positive():
    model = random_model("gru", vocab_size=8, seed=0)
    src, lengths = sources(8, [2], seed=0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, model.encode(src, lengths), torch.tensor([3]), beam_size=0,
                    bos=BOS, eos=EOS)


@pytest.mark.parametrize("cell", CELLS)
def test_stepwise_decoding_equals_full_forward(cell):
    model = random_model(cell, vocab_size=10, seed=7, layers=3)
    src, lengths = sources(10, [5, 2, 4], seed=8)
    tgt = torch.randint(4, 10, (6, 3), generator=torch.Generator().manual_seed(9))
    full = model(src, lengths, tgt)  # (T, B, V)
    memory = model.encode(src, lengths)
    state, steps = model.initial_state(), []
    for t in range(tgt.shape[0]):
        logits, state = model.step(tgt[t], state, memory)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell,kwargs", [("atr", {}), ("sru", {}), ("lrn", {}), ("olrn", {}),
                                         ("lrn", {"activation": "identity"})])
def test_stepwise_decoding_equals_full_forward_with_layer_norm(cell, kwargs):
    torch.manual_seed(10)
    model = Seq2Seq(cell, kwargs, 10, embed_size=8, hidden_size=6, encoder_layers=2,
                    decoder_layers=2, dropout=0.3, layer_norm=True, pad_id=PAD).eval()
    src, lengths = sources(10, [3, 5], seed=11)
    tgt = torch.randint(4, 10, (5, 2), generator=torch.Generator().manual_seed(12))
    full = model(src, lengths, tgt)
    memory = model.encode(src, lengths)
    state, steps = model.initial_state(), []
    for t in range(tgt.shape[0]):
        logits, state = model.step(tgt[t], state, memory)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps), full, rtol=1e-5, atol=1e-5)


def test_layer_norm_with_torch_gru_is_a_clear_error():
    with pytest.raises(ValueError, match="layer_norm is not available for torch's gru"):
        Seq2Seq("gru", {}, 10, embed_size=8, hidden_size=6, encoder_layers=1, decoder_layers=1,
                dropout=0.0, layer_norm=True, pad_id=PAD)
