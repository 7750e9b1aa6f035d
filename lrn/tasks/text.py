"""Text utilities shared by the tasks: vocabularies, tokenisation, padding,
length-bucketed batching, a character-level word encoder and GloVe loading."""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrn.tasks.base import DataError

PAD = "<pad>"
UNK = "<unk>"


class Vocab:
    """A token <-> id mapping.  Specials come first, then tokens by falling
    frequency (ties broken alphabetically, so the order is deterministic)."""

    def __init__(self, itos: Sequence[str], specials: Sequence[str] = (PAD, UNK)):
        self.itos = list(itos)
        self.specials = tuple(specials)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Vocab: duplicate tokens in itos")
        missing = [s for s in self.specials if s not in self.stoi]
        if missing:
            raise ValueError(f"Vocab: specials {missing} not in itos")

    @classmethod
    def build(cls, token_iter: Iterable[str], *, min_freq: int = 1, max_size: int | None = None,
              specials: Sequence[str] = (PAD, UNK)) -> Vocab:
        counts = Counter(token_iter)
        for s in specials:
            counts.pop(s, None)
        ranked = sorted((tok for tok, c in counts.items() if c >= min_freq),
                        key=lambda tok: (-counts[tok], tok))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(specials))]
        return cls(list(specials) + ranked, specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    @property
    def pad_id(self) -> int:
        return self.stoi[PAD]

    @property
    def unk_id(self) -> int:
        return self.stoi[UNK]

    def index(self, token: str) -> int:
        """The id of ``token``; the unknown id if it is not in the vocabulary."""
        i = self.stoi.get(token)
        if i is not None:
            return i
        if UNK not in self.stoi:
            raise KeyError(f"token {token!r} not in a vocabulary without {UNK}")
        return self.stoi[UNK]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.index(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def state_dict(self) -> dict:
        return {"itos": list(self.itos), "specials": list(self.specials)}

    @classmethod
    def from_state(cls, state: dict) -> Vocab:
        return cls(state["itos"], state["specials"])


# Penn-Treebank-like split so that raw text ("don't", "John's") and text that
# was already PTB-tokenised ("do n't", "John 's") give the same tokens.
_TOKEN_RE = re.compile(
    r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+|[^\w\s]", re.IGNORECASE
)
_PTB_QUOTES = re.compile(r"``|''")


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) for every line of a UTF-8 text file (line ends read as
    "\\n"); a DataError naming the file (and line) when it is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"not valid UTF-8 (byte {e.start + 1} of the line)", path, lineno) from None
            yield lineno, line[:-2] + "\n" if line.endswith("\r\n") else line


def nonblank_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``text_lines`` without the blank ones."""
    return ((lineno, line) for lineno, line in text_lines(path) if line.strip())


def tokenize(text: str) -> list[str]:
    """Words and punctuation marks: ``"Don't stop," he said.`` ->
    ``['"', 'Do', "n't", 'stop', ',', '"', 'he', 'said', '.']``."""
    return _TOKEN_RE.findall(_PTB_QUOTES.sub('"', text))


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-major padded ids (T, B) and the true lengths (B,) of ``seqs``."""
    if len(seqs) == 0:
        raise ValueError("pad_batch: empty batch")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((int(lengths.max()), len(seqs)), pad_id, dtype=torch.long)  # (T, B)
    for b, s in enumerate(seqs):
        if len(s):
            out[: len(s), b] = torch.as_tensor(s, dtype=torch.long)
    return out, lengths


def log_unigram(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(V,) log relative frequency of each id in ``ids``; an id never seen counts 1/2 (its
    log stays finite).  A softmax over a vocabulary starts from this as its bias: see
    lrn.tasks.lm.RNNLM for why."""
    counts = torch.bincount(ids, minlength=vocab_size).double().clamp_min(0.5)
    return (counts / counts.sum()).log().float()


def length_buckets(lengths: Sequence[int], batch_size: int, *, shuffle: bool,
                   seed: int = 0, pool: int = 50) -> list[list[int]]:
    """Batches of example indices with similar lengths, so little padding is computed.

    Without ``shuffle``: indices sorted by length, cut into batches, in order.
    With ``shuffle``: examples are shuffled, sorted by length inside pools of
    ``pool`` batches, cut into batches, and the batch order is shuffled; the
    result depends only on ``seed``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lambda i: lengths[i])
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    span = batch_size * pool
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start: start + span], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def char_ids(words: Sequence[str], char_vocab: Vocab, max_chars: int = 20) -> list[list[int]]:
    """Character ids of each word, cut to ``max_chars`` (at least one id per word)."""
    return [char_vocab.encode(w[:max_chars]) or [char_vocab.pad_id] for w in words]


class CharEncoder(nn.Module):
    """Character embeddings, one convolution and max-pooling over the word:
    one ``out_dim`` vector per word (Ma & Hovy 2016 style)."""

    def __init__(self, num_chars: int, char_dim: int = 25, out_dim: int = 50,
                 kernel_size: int = 3, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.out_dim = out_dim
        self.embed = nn.Embedding(num_chars, char_dim, padding_idx=pad_id)
        self.conv = nn.Conv1d(char_dim, out_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """chars (..., L) char ids of words padded with ``pad_id`` -> (..., out_dim)."""
        lead, length = chars.shape[:-1], chars.shape[-1]
        flat = chars.reshape(-1, length)  # (N, L)
        h = self.conv(self.embed(flat).transpose(1, 2))  # (N, out_dim, L)
        pad = (flat == self.pad_id).unsqueeze(1)  # (N, 1, L)
        # An all-padding word (pad positions in a padded batch) pools to zeros.
        h = h.masked_fill(pad, float("-inf")).amax(dim=2)  # (N, out_dim)
        h = torch.where(torch.isinf(h), torch.zeros_like(h), h)
        return h.reshape(*lead, self.out_dim)


def load_glove(path: str | Path, vocab: Vocab, dim: int,
               lowercase_fallback: bool = True) -> tuple[torch.Tensor, int]:
    """Rows for ``vocab`` from a GloVe-format text file (``word v1 ... v_dim`` per line).

    Returns (weights (V, dim), number of vocabulary entries found).  Rows not in
    the file are drawn from N(0, 0.1); the padding row is zero.  A token missing
    from the file also matches the file's lower-cased entry when
    ``lowercase_fallback``.  Raises DataError on a malformed line or a dimension
    other than ``dim``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("embeddings file not found", path)
    weights = torch.randn(len(vocab), dim) * 0.1
    exact_hits: set[int] = set()
    fallback_hits: set[int] = set()
    by_lower: dict[str, list[int]] = {}
    if lowercase_fallback:
        for i, tok in enumerate(vocab.itos):
            if tok.lower() != tok:
                by_lower.setdefault(tok.lower(), []).append(i)
    for lineno, line in text_lines(path):
        parts = line.rstrip("\n").rstrip(" ").split(" ")
        if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue  # word2vec-style "count dim" header
        if len(parts) != dim + 1:
            raise DataError(
                f"expected a word and {dim} numbers, got {len(parts) - 1} values", path, lineno)
        try:
            vec = torch.tensor([float(x) for x in parts[1:]])
        except ValueError:
            raise DataError("non-numeric embedding value", path, lineno) from None
        exact = vocab.stoi.get(parts[0])
        if exact is not None:
            weights[exact] = vec
            exact_hits.add(exact)
        # "Paris" takes the vector of "paris" unless "Paris" itself is in the file.
        for i in by_lower.get(parts[0], ()):
            if i not in exact_hits:
                weights[i] = vec
                fallback_hits.add(i)
    if PAD in vocab:
        weights[vocab.pad_id] = 0.0
    return weights, len(exact_hits | fallback_hits)


class WordCharEmbedding(nn.Module):
    """Word embeddings concatenated with CharEncoder features, then dropout:
    words (T, B), chars (T, B, L) -> (T, B, word_dim + char_out)."""

    def __init__(self, num_words: int, num_chars: int, *, word_dim: int, char_dim: int,
                 char_out: int, dropout: float, word_pad_id: int = 0, char_pad_id: int = 0):
        super().__init__()
        self.words = nn.Embedding(num_words, word_dim, padding_idx=word_pad_id)
        self.chars = CharEncoder(num_chars, char_dim, char_out, pad_id=char_pad_id)
        self.dropout = nn.Dropout(dropout)
        self.output_size = word_dim + char_out

    @classmethod
    def from_config(cls, config: dict[str, Any], num_words: int, num_chars: int) -> WordCharEmbedding:
        """Sized by a task config's word_dim, char_dim, char_out and dropout."""
        return cls(num_words, num_chars, word_dim=config["word_dim"], char_dim=config["char_dim"],
                   char_out=config["char_out"], dropout=config["dropout"])

    def forward(self, words: torch.Tensor, chars: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.cat([self.words(words), self.chars(chars)], dim=-1))

    def load_pretrained(self, path: str | Path, vocab: Vocab, task: str) -> None:
        """Initialise the word embeddings from a GloVe-format file (see load_glove)."""
        weights, found = load_glove(path, vocab, self.words.embedding_dim)
        with torch.no_grad():
            self.words.weight.copy_(weights)
        print(f"{task}: {found}/{len(vocab)} words initialised from {path}", file=sys.stderr)


def pad_chars(words: Sequence[Sequence[Sequence[int]]], pad_id: int) -> torch.Tensor:
    """Char ids of a batch of word sequences, ``words[b][t]`` a list of char ids,
    as one tensor (T, B, L) padded with ``pad_id``."""
    num_steps = max(len(s) for s in words)
    width = max(len(w) for s in words for w in s)
    empty = [pad_id] * width
    rows = [[list(w) + [pad_id] * (width - len(w)) for w in s] + [empty] * (num_steps - len(s))
            for s in words]
    return torch.tensor(rows, dtype=torch.long).transpose(0, 1).contiguous()  # (T, B, L)


def make_rnn_from_spec(cell: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """``lrn.make_rnn`` for a cell spec ``name[:key=value,...]`` (see parse_cell_spec);
    keyword arguments of the spec override ``kwargs``."""
    from lrn import make_rnn
    from lrn.modules import parse_cell_spec

    name, spec_kwargs = parse_cell_spec(cell)
    return make_rnn(name, input_size, hidden_size, **{**kwargs, **spec_kwargs})


def birnn_from_config(cell: str, input_size: int, config: dict[str, Any]) -> nn.Module:
    """The bidirectional stack of a task config: hidden_size, num_layers, layer_norm, and
    dropout between layers (none for one layer, where torch's RNNs would warn)."""
    layers = config["num_layers"]
    return make_rnn_from_spec(cell, input_size, config["hidden_size"], num_layers=layers,
                              bidirectional=True, dropout=config["dropout"] if layers > 1 else 0.0,
                              layer_norm=config["layer_norm"])
