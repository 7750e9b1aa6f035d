import pytest
import torch

from lrn.tasks.base import DataError
from lrn.tasks.text import (CharEncoder, Vocab, char_ids, length_buckets, load_glove,
                            log_unigram, make_rnn_from_spec, pad_batch, pad_chars, tokenize)


def test_vocab_order_specials_unknown_and_roundtrip():
    v = Vocab.build("b a c c b c".split())
    assert v.itos == ["<pad>", "<unk>", "c", "b", "a"]  # by frequency, ties alphabetical
    assert (v.pad_id, v.unk_id) == (0, 1)
    assert v.encode(["a", "zzz"]) == [4, 1]
    assert v.decode([2, 3]) == ["c", "b"]
    assert "c" in v and "zzz" not in v and len(v) == 5
    assert Vocab.from_state(v.state_dict()).itos == v.itos


def test_vocab_min_freq_and_max_size():
    tokens = "a a a b b c".split()
    assert Vocab.build(tokens, min_freq=2).itos == ["<pad>", "<unk>", "a", "b"]
    assert Vocab.build(tokens, max_size=3).itos == ["<pad>", "<unk>", "a"]
    no_unk = Vocab.build(tokens, specials=("<pad>",))
    with pytest.raises(KeyError):
        no_unk.index("zzz")


def test_tokenize_raw_and_ptb_tokenised_text_agree():
    raw = tokenize('A man\'s dog doesn\'t bark, "really".')
    ptb = tokenize("A man 's dog does n't bark , `` really '' .")
    assert raw == ptb == ["A", "man", "'s", "dog", "does", "n't", "bark", ",", '"', "really", '"', "."]


def test_pad_batch_is_time_major_with_lengths():
    ids, lengths = pad_batch([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 4], [2, 0], [3, 0]]
    assert lengths.tolist() == [3, 1]


def test_pad_chars_is_time_major():
    out = pad_chars([[[1, 2], [3]], [[4]]], pad_id=0)  # sentence 0: two words, sentence 1: one
    assert out.shape == (2, 2, 2)  # (T, B, L)
    assert out[:, 0].tolist() == [[1, 2], [3, 0]] and out[:, 1].tolist() == [[4, 0], [0, 0]]


def test_make_rnn_from_spec_lets_the_spec_override_defaults():
    rnn = make_rnn_from_spec("lrn:layer_norm=true", 4, 3, bidirectional=True, layer_norm=False)
    assert rnn.output_size == 6
    assert any("ln_weight" in name for name, _ in rnn.named_parameters())
    out, _ = rnn(torch.randn(5, 2, 4), lengths=torch.tensor([5, 3]))
    assert out.shape == (5, 2, 6) and torch.all(out[3:, 1] == 0)


def test_length_buckets_cover_everything_once_and_group_lengths():
    lengths = [(i * 7) % 23 + 1 for i in range(100)]
    batches = length_buckets(lengths, 8, shuffle=True, seed=3, pool=100)
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert batches == length_buckets(lengths, 8, shuffle=True, seed=3, pool=100)
    assert batches != length_buckets(lengths, 8, shuffle=True, seed=4, pool=100)
    # One pool holds everything, so every batch is a contiguous run of sorted lengths.
    spread = max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread <= 2
    ordered = length_buckets(lengths, 8, shuffle=False)
    flat = [lengths[i] for b in ordered for i in b]
    assert flat == sorted(lengths)


def test_char_encoder_shapes_padding_and_gradients():
    chars = Vocab.build("abc", specials=("<pad>", "<unk>"))
    ids = char_ids(["ab", "c", ""], chars)
    assert ids[2] == [chars.pad_id]  # an empty word still has one (padding) id
    enc = CharEncoder(len(chars), char_dim=4, out_dim=6, pad_id=chars.pad_id)
    words = torch.tensor([[[2, 3, 0], [4, 0, 0]], [[0, 0, 0], [2, 0, 0]]])  # (T=2, B=2, L=3)
    out = enc(words)
    assert out.shape == (2, 2, 6)
    assert torch.all(out[1, 0] == 0)  # all-padding word
    out.sum().backward()
    assert torch.isfinite(enc.embed.weight.grad).all()
    # Padding characters do not change a word's vector.
    longer = torch.tensor([[2, 3, 0, 0, 0]])
    assert torch.allclose(enc(longer), enc(torch.tensor([[2, 3]])), atol=1e-6)


def test_load_glove_values_fallback_and_errors(tmp_path):
    vocab = Vocab(["<pad>", "<unk>", "paris", "Paris", "Rome", "x"])
    good = tmp_path / "g.txt"
    good.write_text("paris 1 2 3\nrome 4 5 6\nunused 7 8 9\n")
    w, found = load_glove(good, vocab, 3)
    assert w.shape == (6, 3) and found == 3  # paris, Paris (fallback), Rome (fallback)
    assert w[2].tolist() == [1, 2, 3] and w[3].tolist() == [1, 2, 3] and w[4].tolist() == [4, 5, 6]
    assert torch.all(w[0] == 0)
    exact = tmp_path / "e.txt"
    exact.write_text("Paris 9 9 9\nparis 1 2 3\n")
    w, _ = load_glove(exact, vocab, 3)
    assert w[3].tolist() == [9, 9, 9]  # the exact entry wins over the lower-case one
    bad_dim = tmp_path / "d.txt"
    bad_dim.write_text("paris 1 2 3\nrome 4 5\n")
    with pytest.raises(DataError, match=r"d\.txt:2: expected a word and 3 numbers, got 2"):
        load_glove(bad_dim, vocab, 3)
    bad_num = tmp_path / "n.txt"
    bad_num.write_text("paris 1 two 3\n")
    with pytest.raises(DataError, match=r"n\.txt:1: non-numeric"):
        load_glove(bad_num, vocab, 3)
    with pytest.raises(DataError, match="not found"):
        load_glove(tmp_path / "missing.txt", vocab, 3)


def test_log_unigram_on_a_hand_worked_case():
    # counts 2, 1, 0 (counted as 1/2), 1 over a total of 4.5
    got = log_unigram(torch.tensor([0, 0, 1, 3]), 4)
    torch.testing.assert_close(got, torch.tensor([2 / 4.5, 1 / 4.5, 0.5 / 4.5, 1 / 4.5]).log())


def test_non_utf8_lines_are_named_by_file_and_line(tmp_path):
    from lrn.tasks.text import text_lines

    path = tmp_path / "x.txt"
    path.write_bytes(b"fine\r\n\nab\xfecd\n")
    with pytest.raises(DataError, match=r"x.txt:3: not valid UTF-8 \(byte 3 of the line\)"):
        list(text_lines(path))
    path.write_bytes(b"fine\r\n\nok\n")
    assert list(text_lines(path)) == [(1, "fine\n"), (2, "\n"), (3, "ok\n")]
