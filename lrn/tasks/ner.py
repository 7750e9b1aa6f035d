"""Named entity recognition on CoNLL-2003 (the paper's NER task).

Model as in Lample et al. (2016): word embeddings (optionally GloVe), character
features per word, a bidirectional recurrent layer of the chosen cell and a
linear-chain CRF.  Tags are read as IOB1, IOB2 or IOBES, normalised to IOB2,
and trained in IOBES (Lample et al.'s choice) with the CRF forbidding
ill-formed transitions; predictions are written and scored in IOB2.
Metric: conlleval's entity-level precision / recall / F1 (see ``conll_scores``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from seqeval.metrics.sequence_labeling import get_entities
from torch import nn

from lrn.modules.crf import CRF
from lrn.tasks.base import DataError, Task, preset_config, register
from lrn.tasks.text import (Vocab, WordCharEmbedding, birnn_from_config, char_ids,
                            length_buckets, nonblank_lines, pad_batch, pad_chars, text_lines)

SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
_TAG_RE = re.compile(r"^(O|[BIES]-\S+)$")


# ----------------------------------------------------------------------------- data

@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]  # IOB2


def read_conll(path: str | Path) -> list[Sentence]:
    """Sentences of a CoNLL file: ``token ... tag`` per line (2 columns, or the
    4-column CoNLL-2003 original), blank lines between sentences, ``-DOCSTART-``
    lines skipped.  Tags (IOB1, IOB2 or IOBES) are returned as IOB2."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush():
        if tokens:
            sentences.append(Sentence(list(tokens), to_iob2(tags)))
            tokens.clear()
            tags.clear()

    for lineno, line in text_lines(path):
        fields = line.split()
        if not fields:
            flush()
            continue
        if fields[0] == "-DOCSTART-":
            flush()
            continue
        if len(fields) < 2:
            raise DataError(f"expected 'token tag', got {line.strip()!r}", path, lineno)
        if not _TAG_RE.match(fields[-1]):
            raise DataError(f"bad tag {fields[-1]!r} (expected O, B-X, I-X, E-X or S-X)",
                            path, lineno)
        tokens.append(fields[0])
        tags.append(fields[-1])
    flush()
    if not sentences:
        raise DataError("no sentences", path)
    return sentences


def to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1, IOB2 or IOBES -> IOB2 with the same conlleval chunks: a chunk's first
    tag becomes B-, the others I-."""
    return [("B-" if start else "I-") + typ if typ else "O"
            for (start, typ) in _chunk_starts(tags)]


def _chunk_starts(tags: Sequence[str]) -> list[tuple[bool, str]]:
    """(starts a chunk, type) per tag, from the conlleval chunks of ``tags``."""
    out = [(False, "")] * len(tags)
    for typ, begin, end in get_entities(list(tags)):
        for i in range(begin, end + 1):
            out[i] = (i == begin, typ)
    return out


def iob2_to_iobes(tags: Sequence[str]) -> list[str]:
    out = []
    for i, tag in enumerate(tags):
        nxt = tags[i + 1] if i + 1 < len(tags) else "O"
        continues = nxt.startswith("I-")
        if tag.startswith("B-"):
            out.append(tag if continues else "S-" + tag[2:])
        elif tag.startswith("I-"):
            out.append(tag if continues else "E-" + tag[2:])
        else:
            out.append(tag)
    return out


# --------------------------------------------------------------------------- metric

def conll_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (percent), micro-averaged ('precision',
    'recall', 'f1') and per type ('f1_PER', ...), with conlleval's semantics.

    Chunks come from seqeval's default-mode ``get_entities``, which for IOB1/IOB2
    input is conlleval's endOfChunk/startOfChunk exactly (an I-X after O or after
    another type starts a chunk, B-X always starts one, a type change ends one;
    sentence boundaries end chunks).  A predicted chunk is correct when its type,
    first and last token all equal a gold chunk's; P = 0 when nothing is
    predicted, R = 0 when nothing is gold, F1 = 0 when P + R = 0 (as conlleval).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    gold_chunks: set[tuple[int, str, int, int]] = set()
    pred_chunks: set[tuple[int, str, int, int]] = set()
    for s, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {s}: {len(g)} gold tags but {len(p)} predicted")
        gold_chunks.update((s, *c) for c in get_entities(list(g)))
        pred_chunks.update((s, *c) for c in get_entities(list(p)))
    correct = gold_chunks & pred_chunks

    def prf(n_correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
        precision = 100.0 * n_correct / n_pred if n_pred else 0.0
        recall = 100.0 * n_correct / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1

    scores = dict(zip(("precision", "recall", "f1"),
                      prf(len(correct), len(pred_chunks), len(gold_chunks))))
    by_type = [Counter(c[1] for c in chunks) for chunks in (correct, pred_chunks, gold_chunks)]
    for typ in sorted(set(by_type[1]) | set(by_type[2])):
        p, r, f = prf(by_type[0][typ], by_type[1][typ], by_type[2][typ])
        scores.update({f"precision_{typ}": p, f"recall_{typ}": r, f"f1_{typ}": f})
    return scores


# ---------------------------------------------------------------------------- model

def normalise_word(token: str) -> str:
    """Word-embedding key: lower-cased, digits as 0 (case stays visible to the
    character features)."""
    return re.sub(r"\d", "0", token.lower())


def transition_constraints(tags: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Allowed IOBES transitions (K, K) [from, to], allowed first and last tags (K,)."""
    def inside(tag: str) -> bool:  # B-X or I-X: the chunk must go on with I-X or E-X
        return tag[:2] in ("B-", "I-")

    def ok(a: str, b: str) -> bool:
        if inside(a):
            return b[:2] in ("I-", "E-") and a[2:] == b[2:]
        return b == "O" or b[:2] in ("B-", "S-")

    allowed = torch.tensor([[ok(a, b) for b in tags] for a in tags])
    start = torch.tensor([t == "O" or t[:2] in ("B-", "S-") for t in tags])
    end = torch.tensor([t == "O" or t[:2] in ("E-", "S-") for t in tags])
    return allowed, start, end


class NERModel(nn.Module):
    def __init__(self, config: dict[str, Any], num_words: int, num_chars: int,
                 tags: Sequence[str], cell: str):
        super().__init__()
        self.embed = WordCharEmbedding.from_config(config, num_words, num_chars)
        if config["embed_init"] not in ("normal", "uniform"):
            raise ValueError(f"setting 'embed_init' must be 'normal' (torch's N(0, 1)) or 'uniform' "
                             f"(Ma & Hovy's U(±sqrt(3/dim))), got {config['embed_init']!r}")
        if config["embed_init"] == "uniform":
            # Ma & Hovy (2016): word and char vectors from U(-sqrt(3/dim), sqrt(3/dim))
            for table in (self.embed.words, self.embed.chars.embed):
                bound = (3.0 / table.embedding_dim) ** 0.5
                nn.init.uniform_(table.weight, -bound, bound)
                with torch.no_grad():
                    table.weight[table.padding_idx].zero_()
        self.rnn = birnn_from_config(cell, self.embed.output_size, config)
        fc_dim = config["fc_dim"]  # 0: the recurrent states go straight to the tag scores
        hidden = [nn.Linear(self.rnn.output_size, fc_dim), nn.Tanh()] if fc_dim else []
        self.project = nn.Sequential(nn.Dropout(config["dropout"]), *hidden,
                                     nn.Linear(fc_dim or self.rnn.output_size, len(tags)))
        self.crf = CRF(len(tags), *transition_constraints(tags))

    def emissions(self, words: torch.Tensor, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embed(words, chars)  # (T, B, E)
        h, _ = self.rnn(x, lengths=lengths)  # (T, B, 2H)
        return self.project(h)  # (T, B, K)

    def decode(self, words, chars, lengths) -> torch.Tensor:
        return self.crf.decode(self.emissions(words, chars, lengths), lengths)[0]  # (T, B)


# ----------------------------------------------------------------------------- task

@dataclass
class Batch:
    words: torch.Tensor  # (T, B)
    chars: torch.Tensor  # (T, B, L)
    lengths: torch.Tensor  # (B,)
    tags: torch.Tensor  # (T, B)
    index: list[int]  # example indices in the split

    def to(self, device: torch.device) -> Batch:
        return Batch(self.words.to(device), self.chars.to(device), self.lengths.to(device),
                     self.tags.to(device), self.index)


@dataclass
class NERData:
    words: Vocab
    chars: Vocab
    tags: list[str]  # IOBES tag set, CRF order
    splits: dict[str, list[Sentence]]
    singletons: set[int]  # word ids seen once in train (randomly replaced by <unk>)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(word_dim=16, char_dim=8, char_out=16, hidden_size=16, fc_dim=16, num_layers=1,
                 dropout=0.1, batch_size=8, lr=5e-3, optimizer="adam", clip=5.0,
                 max_epochs=30, eval_every=0, max_chars=15, unk_replace=0.0, embeddings=None,
                 embed_init="normal"),
    # The paper's sizes with a higher learning rate and 8 epochs, to fit ~10 minutes on 2 cores.
    "small": dict(word_dim=100, char_dim=25, char_out=50, hidden_size=100, fc_dim=100, num_layers=1,
                  dropout=0.5, batch_size=32, lr=2e-3, optimizer="adam", clip=5.0,
                  max_epochs=8, eval_every=200, max_chars=20, unk_replace=0.5, embeddings=None,
                  embed_init="normal"),
    # The published baseline this task is anchored to: Ma & Hovy (2016), "End-to-end sequence
    # labeling via bi-directional LSTM-CNNs-CRF", with random 100-d word vectors (Table 4: test
    # F1 80.76): 30-d chars through 30 filters of width 3, max-pooled; 200 units per direction;
    # dropout 0.5 before and after the recurrent layer; the states straight into the CRF; SGD,
    # momentum 0.9, lr 0.015 / (1 + 0.05 t) after t epochs, batches of 10, gradient norm 5, up to
    # 50 epochs, the best validation epoch kept; IOBES tags.  (They also drop out the char
    # vectors before the convolution and start the LSTM's forget bias at 1; we do not.)
    "anchor": dict(word_dim=100, char_dim=30, char_out=30, hidden_size=200, fc_dim=0, num_layers=1,
                   dropout=0.5, batch_size=10, optimizer="sgd", lr=0.015, momentum=0.9,
                   lr_schedule="inverse_time", decay_rate=0.05, clip=5.0, max_epochs=50, eval_every=0,
                   max_chars=25, unk_replace=0.0, embeddings=None, embed_init="uniform"),
    # The paper (authors' ner/code, after anago): 100-d GloVe (pass embeddings=FILE), 25-d chars,
    # 100 units per direction, a 100-unit tanh layer before the CRF, dropout 0.5, Adam 1e-3,
    # batches of 32, 30 epochs.  (Their char encoder is a 25-unit BiLSTM; ours is a CNN.)
    "paper": dict(word_dim=100, char_dim=25, char_out=50, hidden_size=100, fc_dim=100, num_layers=1,
                  dropout=0.5, batch_size=32, lr=1e-3, optimizer="adam", clip=5.0,
                  max_epochs=30, eval_every=0, max_chars=25, unk_replace=0.5, embeddings=None,
                  embed_init="normal"),
}
#: the published number of the anchor preset's LSTM (Ma & Hovy 2016, Table 4, random embeddings)
ANCHOR_PUBLISHED = {"conll2003": {"test f1": 80.76,
                                  "source": "Ma & Hovy 2016, End-to-end sequence labeling via bi-directional "
                                            "LSTM-CNNs-CRF, Table 4 (random embeddings)"}}


@register
class NERTask(Task):
    name = "ner"
    metrics = ("f1", "precision", "recall")
    primary_metric = "f1"
    higher_is_better = True

    def config(self, preset: str, data_dir: Path) -> dict[str, Any]:
        return preset_config(self.name, PRESETS, preset, layer_norm=False, seed=0)

    def load_data(self, data_dir: Path, config: dict[str, Any], vocab: dict | None = None) -> NERData:
        data_dir = Path(data_dir)
        splits = {split: read_conll(data_dir / name) for split, name in SPLIT_FILES.items()}
        train = splits["train"]
        counts = Counter(normalise_word(t) for s in train for t in s.tokens)
        if vocab is None:
            words = Vocab.build(counts.elements())
            chars = Vocab.build(c for s in train for t in s.tokens for c in t)
            tags = sorted({t for s in train for t in iob2_to_iobes(s.tags)})
        else:
            words, chars = Vocab.from_state(vocab["words"]), Vocab.from_state(vocab["chars"])
            tags = list(vocab["tags"])
        singletons = {words.stoi[w] for w, c in counts.items() if c == 1 and w in words}
        unknown = {t for s in train for t in iob2_to_iobes(s.tags)} - set(tags)
        if unknown:
            raise DataError(f"tags {sorted(unknown)} are not in the checkpoint's tag set",
                            data_dir / SPLIT_FILES["train"])
        # valid/test may hold entity types never seen in training: they count as misses.
        return NERData(words, chars, tags, splits, singletons)

    def vocab_data(self, config: dict[str, Any], vocab: dict) -> NERData:
        return NERData(Vocab.from_state(vocab["words"]), Vocab.from_state(vocab["chars"]), list(vocab["tags"]),
                       splits={}, singletons=set())

    def vocab_state(self, data: NERData) -> dict:
        return {"words": data.words.state_dict(), "chars": data.chars.state_dict(), "tags": data.tags}

    def build_model(self, config: dict[str, Any], data: NERData, cell: str) -> nn.Module:
        model = NERModel(config, len(data.words), len(data.chars), data.tags, cell)
        if config["embeddings"]:
            model.embed.load_pretrained(config["embeddings"], data.words, self.name)
        return model

    def make_batch(self, data: NERData, sentences: Sequence[Sentence], index: list[int],
                   config: dict[str, Any], rng: random.Random | None = None) -> Batch:
        tag_id = {t: i for i, t in enumerate(data.tags)}
        word_ids, chars, tags = [], [], []
        for s in sentences:
            ids = data.words.encode(normalise_word(t) for t in s.tokens)
            if rng is not None and config["unk_replace"] > 0:
                # Lample et al.: singletons become <unk> with probability p, so <unk> is trained.
                ids = [data.words.unk_id if i in data.singletons and rng.random() < config["unk_replace"]
                       else i for i in ids]
            word_ids.append(ids)
            chars.append(char_ids(s.tokens, data.chars, config["max_chars"]))
            tags.append([tag_id.get(t, 0) for t in iob2_to_iobes(s.tags)])
        words, lengths = pad_batch(word_ids, data.words.pad_id)
        return Batch(words, pad_chars(chars, data.chars.pad_id), lengths,
                     pad_batch(tags, 0)[0], index)

    def train_batches(self, data: NERData, config: dict[str, Any], *, epoch: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[Batch]:
        train = data.splits["train"]
        seed = config["seed"] * 1000003 + epoch
        buckets = length_buckets([len(s.tokens) for s in train], config["batch_size"],
                                 shuffle=True, seed=seed)
        rng = random.Random(seed + rank)
        for index in buckets[rank::world_size]:
            yield self.make_batch(data, [train[i] for i in index], index, config, rng)

    def loss(self, model: NERModel, batch: Batch, device: torch.device) -> tuple[torch.Tensor, int]:
        batch = batch.to(device)
        emissions = model.emissions(batch.words, batch.chars, batch.lengths)
        nll = model.crf.nll(emissions, batch.tags, batch.lengths)  # (B,)
        return nll.mean(), int(batch.lengths.sum())

    @torch.no_grad()
    def predict(self, model: NERModel, data: NERData, sentences: Sequence[Sentence],
                config: dict[str, Any], device: torch.device) -> list[list[str]]:
        """IOB2 tags of every sentence, in order."""
        was_training = model.training
        model.eval()
        out: list[list[str]] = [[] for _ in sentences]
        buckets = length_buckets([len(s.tokens) for s in sentences], config["batch_size"] * 4,
                                 shuffle=False)
        for index in self.progress(buckets, "tagging"):
            batch = self.make_batch(data, [sentences[i] for i in index], index, config).to(device)
            tags = model.decode(batch.words, batch.chars, batch.lengths).cpu()  # (T, B)
            for b, i in enumerate(index):
                n = int(batch.lengths[b])
                out[i] = to_iob2([data.tags[k] for k in tags[:n, b].tolist()])
        model.train(was_training)
        return out

    def evaluate(self, model: NERModel, data: NERData, split: str, config: dict[str, Any],
                 device: torch.device) -> dict[str, float]:
        sentences = data.splits[split]
        pred = self.predict(model, data, sentences, config, device)
        return conll_scores([s.tags for s in sentences], pred)

    def predict_file(self, model: NERModel, data: NERData, config: dict[str, Any], path: Path,
                     device: torch.device) -> Iterator[str]:
        """CoNLL output: "token tag" per line, a blank line after each sentence of ``path``."""
        sentences = read_raw(path)
        for s, t in zip(sentences, self.predict(model, data, sentences, config, device)):
            yield "".join(f"{tok} {tag}\n" for tok, tag in zip(s.tokens, t))


def read_raw(path: Path) -> list[Sentence]:
    """Whitespace-tokenised text, one sentence per line (blank lines skipped)."""
    return [Sentence(line.split(), ["O"] * len(line.split())) for _, line in nonblank_lines(path)]


