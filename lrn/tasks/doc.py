"""Document classification in the CSV format of Zhang et al. (2015): AG News,
Yelp, Amazon, Yahoo! Answers, DBpedia (the paper's document classification task).

Model as in the paper: word + character embeddings, a bidirectional recurrent
layer, attentive pooling (Yang et al. 2016 style: a learned query scores every
position) and a linear classifier.  Metric: error rate (and accuracy), percent.

Files: ``train*.csv`` (one of them), ``test.csv`` and optionally
``classes.txt``.  There is no validation split in this format: a fixed, seeded
slice of the training rows (``valid_fraction``) is held out for validation.
"""

from __future__ import annotations

import csv
import html
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrn.tasks.base import DataError, Task, preset_config, register
from lrn.tasks.text import (Vocab, WordCharEmbedding, birnn_from_config, char_ids,
                            length_buckets, nonblank_lines, pad_batch, pad_chars, text_lines, tokenize)


@dataclass
class Document:
    tokens: list[str]
    label: int  # 0-based


def clean_text(text: str) -> str:
    """Undo the format's escapes: ``\\`` for a line break, ``#39;`` for ``&#39;``,
    HTML entities; bytes 128-159 are Windows-1252 characters (``#151;`` is a dash)."""
    def char(m: re.Match) -> str:
        n = int(m.group(1))
        return bytes([n]).decode("cp1252", errors="replace") if 128 <= n < 160 else chr(n)

    text = re.sub(r"&?#(\d{1,7});", char, text.replace("\\n", " ").replace("\\", " "))
    return html.unescape(text)


def read_csv(path: str | Path, num_classes: int | None = None) -> list[Document]:
    """Rows ``"label","field",...``: label 1..C, then one or more text fields
    (title, description; Yahoo has three), joined.  Raises DataError naming the
    line of a malformed row."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    docs = []
    # decoded line by line, so that a byte that is not UTF-8 is reported on its own line
    reader = csv.reader(line for _, line in text_lines(path))
    while True:
        lineno = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e})", path, lineno) from None
        if not row or not any(field.strip() for field in row):
            continue
        if len(row) < 2:
            raise DataError("expected a label and at least one text field", path, lineno)
        if not row[0].strip().isdigit() or int(row[0]) < 1:
            raise DataError(f"label {row[0]!r} is not a class number >= 1", path, lineno)
        label = int(row[0])
        if num_classes is not None and label > num_classes:
            raise DataError(f"label {label} but classes.txt lists {num_classes} classes",
                            path, lineno)
        tokens = tokenize(clean_text(" ".join(row[1:])))
        if not tokens:
            raise DataError("empty document", path, lineno)
        docs.append(Document(tokens, label - 1))
    if not docs:
        raise DataError("no rows", path)
    return docs


def find_train_file(data_dir: Path) -> Path:
    if (data_dir / "train.csv").is_file():
        return data_dir / "train.csv"
    found = sorted(data_dir.glob("train*.csv"))
    if len(found) != 1:
        what = "no train*.csv" if not found else f"several train*.csv ({', '.join(p.name for p in found)})"
        raise DataError(f"{what}; expected train.csv or exactly one train*.csv", data_dir)
    return found[0]


def read_classes(data_dir: Path) -> list[str] | None:
    path = data_dir / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for _, line in nonblank_lines(path)]
    if not names:
        raise DataError("no class names", path)
    return names


# ---------------------------------------------------------------------------- model

class AttentivePooling(nn.Module):
    """alpha_t = softmax_t(v . tanh(W h_t + b)) over the true positions; returns sum_t alpha_t h_t."""

    def __init__(self, size: int, attention_size: int):
        super().__init__()
        self.proj = nn.Linear(size, attention_size)
        self.query = nn.Linear(attention_size, 1, bias=False)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """h (T, B, D), lengths (B,) -> (B, D)."""
        scores = self.query(torch.tanh(self.proj(h))).squeeze(2)  # (T, B)
        mask = torch.arange(h.shape[0], device=h.device).unsqueeze(1) < lengths.unsqueeze(0)
        alpha = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=0)  # (T, B)
        return (alpha.unsqueeze(2) * h).sum(0)


class DocModel(nn.Module):
    def __init__(self, config: dict[str, Any], num_words: int, num_chars: int, num_classes: int,
                 cell: str):
        super().__init__()
        self.label_smoothing = config["label_smoothing"]  # read by DocTask.loss
        self.embed = WordCharEmbedding.from_config(config, num_words, num_chars)
        self.rnn = birnn_from_config(cell, self.embed.output_size, config)
        self.pool = AttentivePooling(self.rnn.output_size, config["hidden_size"])
        self.dropout = nn.Dropout(config["dropout"])
        self.classify = nn.Linear(self.rnn.output_size, num_classes)

    def forward(self, words: torch.Tensor, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(words, chars), lengths=lengths)  # (T, B, 2H)
        return self.classify(self.dropout(self.pool(h, lengths)))  # (B, C)


# ----------------------------------------------------------------------------- task

@dataclass
class Batch:
    words: torch.Tensor  # (T, B)
    chars: torch.Tensor  # (T, B, L)
    lengths: torch.Tensor  # (B,)
    labels: torch.Tensor  # (B,)

    def to(self, device: torch.device) -> Batch:
        return Batch(self.words.to(device), self.chars.to(device), self.lengths.to(device),
                     self.labels.to(device))


@dataclass
class DocData:
    words: Vocab
    chars: Vocab
    classes: list[str]
    splits: dict[str, list[Document]]


#: why no published baseline is reproduced here (see preset_config)
NO_ANCHOR = ("the published AG News baselines (Zhang et al. 2015; the LRN paper) train on all 120k "
             "articles; shared/data holds a 10k-article training sample, so their numbers are not reachable")
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(word_dim=16, char_dim=8, char_out=8, hidden_size=16, num_layers=1, dropout=0.0,
                 batch_size=16, lr=5e-3, optimizer="adam", clip=5.0, max_epochs=20, eval_every=0,
                 max_tokens=50, max_chars=15, min_freq=1, max_vocab=None, lowercase=True,
                 label_smoothing=0.0, valid_fraction=0.1, embeddings=None),
    # The authors' settings (the paper preset below, from their doc/config.py), all 6 of their
    # epochs, over the shared 10k-row AG News sample, validated every 100 steps.  Nothing here
    # was tuned on any cell.  (The earlier small preset, dropout 0.5 and Adam 2e-3, was set
    # after an LRN probe; it is gone.)
    "small": dict(word_dim=300, char_dim=32, char_out=32, hidden_size=64, num_layers=1,
                  dropout=0.1, batch_size=64, lr=1e-3, optimizer="adam", clip=5.0, max_epochs=6,
                  weight_decay=3e-5, eval_every=100, max_tokens=400, max_chars=25, min_freq=1,
                  max_vocab=None, lowercase=False, label_smoothing=0.1, valid_fraction=0.05,
                  embeddings=None),
    # The paper (authors' doc/config.py): 300-d (GloVe) words, 32-d chars, hidden 64, dropout 0.1,
    # label smoothing 0.1, Adam 1e-3, batches of 64, clip 5, L2 3e-5, 6 epochs, documents cut at
    # 400 tokens, cased words.
    "paper": dict(word_dim=300, char_dim=32, char_out=32, hidden_size=64, num_layers=1,
                  dropout=0.1, batch_size=64, lr=1e-3, optimizer="adam", clip=5.0, max_epochs=6,
                  weight_decay=3e-5, eval_every=10000, max_tokens=400, max_chars=25, min_freq=1,
                  max_vocab=None, lowercase=False, label_smoothing=0.1, valid_fraction=0.05,
                  embeddings=None),
}


@register
class DocTask(Task):
    name = "doc"
    metrics = ("error", "accuracy")
    table_metrics = ("accuracy",)
    primary_metric = "error"
    higher_is_better = False

    def config(self, preset: str, data_dir: Path) -> dict[str, Any]:
        return preset_config(self.name, PRESETS, preset, no_anchor=NO_ANCHOR, layer_norm=False, seed=0)

    def load_data(self, data_dir: Path, config: dict[str, Any], vocab: dict | None = None) -> DocData:
        data_dir = Path(data_dir)
        classes = read_classes(data_dir)
        limit = None if classes is None else len(classes)
        rows = read_csv(find_train_file(data_dir), limit)
        test = read_csv(data_dir / "test.csv", limit)
        # Fixed held-out slice: depends only on the data size and the seed 12345, never on config['seed'].
        order = list(range(len(rows)))
        random.Random(12345).shuffle(order)
        n_valid = max(1, int(round(len(rows) * config["valid_fraction"])))
        held = set(order[:n_valid])
        splits = {"train": [d for i, d in enumerate(rows) if i not in held],
                  "valid": [d for i, d in enumerate(rows) if i in held], "test": test}
        for docs in splits.values():
            for d in docs:
                del d.tokens[config["max_tokens"]:]  # truncate long documents
        if vocab is None:
            train = splits["train"]
            words = Vocab.build((self._word(t, config) for d in train for t in d.tokens),
                                min_freq=config["min_freq"], max_size=config["max_vocab"])
            chars = Vocab.build(c for d in train for t in d.tokens for c in t)
            num_classes = max(d.label for docs in splits.values() for d in docs) + 1
            names = classes or [str(i + 1) for i in range(num_classes)]
        else:
            words, chars = Vocab.from_state(vocab["words"]), Vocab.from_state(vocab["chars"])
            names = list(vocab["classes"])
            bad = [d for docs in splits.values() for d in docs if d.label >= len(names)]
            if bad:
                raise DataError(f"label {bad[0].label + 1} but the checkpoint knows {len(names)} classes",
                                data_dir)
        return DocData(words, chars, names, splits)

    def vocab_data(self, config: dict[str, Any], vocab: dict) -> DocData:
        return DocData(Vocab.from_state(vocab["words"]), Vocab.from_state(vocab["chars"]), list(vocab["classes"]),
                       splits={})

    def vocab_state(self, data: DocData) -> dict:
        return {"words": data.words.state_dict(), "chars": data.chars.state_dict(),
                "classes": data.classes}

    def build_model(self, config: dict[str, Any], data: DocData, cell: str) -> nn.Module:
        model = DocModel(config, len(data.words), len(data.chars), len(data.classes), cell)
        if config["embeddings"]:
            model.embed.load_pretrained(config["embeddings"], data.words, self.name)
        return model

    @staticmethod
    def _word(token: str, config: dict[str, Any]) -> str:
        return token.lower() if config["lowercase"] else token

    def make_batch(self, data: DocData, docs: Sequence[Document], config: dict[str, Any]) -> Batch:
        words, lengths = pad_batch([data.words.encode(self._word(t, config) for t in d.tokens)
                                    for d in docs],
                                   data.words.pad_id)
        chars = pad_chars([char_ids(d.tokens, data.chars, config["max_chars"]) for d in docs],
                          data.chars.pad_id)
        return Batch(words, chars, lengths, torch.tensor([d.label for d in docs]))

    def train_batches(self, data: DocData, config: dict[str, Any], *, epoch: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[Batch]:
        train = data.splits["train"]
        buckets = length_buckets([len(d.tokens) for d in train], config["batch_size"], shuffle=True,
                                 seed=config["seed"] * 1000003 + epoch)
        for index in buckets[rank::world_size]:
            yield self.make_batch(data, [train[i] for i in index], config)

    def loss(self, model: DocModel, batch: Batch, device: torch.device) -> tuple[torch.Tensor, int]:
        batch = batch.to(device)
        logits = model(batch.words, batch.chars, batch.lengths)
        return F.cross_entropy(logits, batch.labels, label_smoothing=model.label_smoothing), \
            len(batch.labels)

    @torch.no_grad()
    def predict(self, model: DocModel, data: DocData, docs: Sequence[Document], config: dict[str, Any],
                device: torch.device) -> list[int]:
        """The predicted class index of every document, in order."""
        was_training = model.training
        model.eval()
        out = [0] * len(docs)
        for index in self.progress(length_buckets([len(d.tokens) for d in docs], config["batch_size"] * 4,
                                                  shuffle=False), "classifying"):
            batch = self.make_batch(data, [docs[i] for i in index], config).to(device)
            for i, label in zip(index, model(batch.words, batch.chars, batch.lengths).argmax(1).tolist()):
                out[i] = label
        model.train(was_training)
        return out

    def evaluate(self, model: DocModel, data: DocData, split: str, config: dict[str, Any],
                 device: torch.device) -> dict[str, float]:
        docs = data.splits[split]
        pred = self.predict(model, data, docs, config, device)
        accuracy = 100.0 * sum(p == d.label for p, d in zip(pred, docs)) / len(docs)
        return {"error": 100.0 - accuracy, "accuracy": accuracy}

    def predict_file(self, model: nn.Module, data: DocData, config: dict[str, Any], path: Path,
                     device: torch.device) -> Iterator[str]:
        """One class name per document (line) of ``path``."""
        for label in self.predict(model, data, read_lines(path, config["max_tokens"]), config, device):
            yield data.classes[label]


def read_lines(path: Path, max_tokens: int) -> list[Document]:
    """One document per line (blank lines skipped), cut to ``max_tokens``."""
    docs = []
    for lineno, line in nonblank_lines(path):
        tokens = tokenize(clean_text(line))[:max_tokens]
        if not tokens:
            raise DataError("empty document", path, lineno)
        docs.append(Document(tokens, 0))
    return docs
