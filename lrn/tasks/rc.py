"""Reading comprehension (TASK = rc): SQuAD v1.1 with R-Net (lrn/tasks/rc_model.py).

Splits: SQuAD has train and dev only.  ``test`` is the official dev file;
``valid`` is a fixed slice of ``valid_articles`` whole training articles drawn
with ``data_seed`` (whole articles, so no validation context is also a training
context); ``train`` is the other training articles.  ``train_questions`` /
``valid_questions`` / ``test_questions`` optionally keep a fixed random subset
of each split's questions (drawn with ``data_seed``, so every cell sees the same one).

Training uses each question's first answer; EM and F1 take the maximum over all
of its answers, with the official SQuAD v1.1 normalisation.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lrn.modules import parse_cell_spec
from lrn.tasks.base import DataError, Task, preset_config, register
from lrn.tasks.rc_model import RCBatch, RNet, best_spans
from lrn.tasks.text import Vocab, char_ids, length_buckets, load_glove, pad_batch, tokenize

# ---------------------------------------------------------------- SQuAD v1.1 metrics

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official v1.1 normalisation: lower case, drop punctuation, drop the
    articles a/an/the, collapse white space (in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    """Bag-of-tokens F1 of the normalised strings (0 when nothing is shared)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus EM and F1 in percent; each question scores its best ground truth."""
    if len(predictions) != len(answers) or not answers:
        raise ValueError(f"need as many predictions as questions (>0), got "
                         f"{len(predictions)} and {len(answers)}")
    em = sum(max(exact_match(p, t) for t in truths) for p, truths in zip(predictions, answers))
    f1 = sum(max(f1_score(p, t) for t in truths) for p, truths in zip(predictions, answers))
    return {"em": 100.0 * em / len(answers), "f1": 100.0 * f1 / len(answers)}


# ---------------------------------------------------------------- tokens <-> characters

def tokenize_with_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """``tokenize(text)`` and each token's [start, end) character span in ``text``,
    so ``text[start:end]`` is the token (a ``"`` token may come from `` or '')."""
    tokens = tokenize(text)
    spans = []
    pos = 0
    for tok in tokens:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if text.startswith(tok, pos):
            end = pos + len(tok)
        elif tok == '"' and text[pos:pos + 2] in ("``", "''"):
            end = pos + 2
        else:
            raise ValueError(f"cannot align token {tok!r} at character {pos} of {text[:60]!r}...")
        spans.append((pos, end))
        pos = end
    return tokens, spans


def char_to_token_span(spans: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The first and last token overlapping the characters [start, end)."""
    inside = [i for i, (s, e) in enumerate(spans) if s < end and e > start]
    if not inside:
        raise ValueError(f"characters [{start}, {end}) cover no token")
    return inside[0], inside[-1]


# ---------------------------------------------------------------- data

@dataclass
class Paragraph:
    context: str
    tokens: list[str]
    spans: list[tuple[int, int]]
    word_ids: list[int] = field(default_factory=list)
    chars: torch.Tensor | None = None  # (T, W) int32 character ids, padded


@dataclass
class Example:
    qid: str
    question: list[str]
    paragraph: Paragraph
    answers: list[str]
    start: int  # token span of the first answer (training target)
    end: int
    word_ids: list[int] = field(default_factory=list)
    chars: torch.Tensor | None = None  # (T, W) int32 character ids, padded


@dataclass
class RCData:
    words: Vocab
    chars: Vocab
    splits: dict[str, list[Example]]


def read_squad(path: Path) -> list[list[dict]]:
    """Articles as lists of paragraphs ``{"context", "qas"}``, every answer checked:
    DataError naming the file and question id if an offset falls outside the context."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise DataError("SQuAD file not found", path) from None
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON: {err.msg}", path, err.lineno) from None
    except UnicodeDecodeError as err:
        raise DataError(f"not valid UTF-8 (byte {err.start + 1} of the file)", path) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DataError('not SQuAD v1.1 JSON: no top-level "data" list', path)
    articles = []
    for a, article in enumerate(raw["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f'article {a} has no "paragraphs" list', path)
        for p, para in enumerate(paragraphs):
            if (not isinstance(para, dict) or not isinstance(para.get("context"), str)
                    or not isinstance(para.get("qas"), list)):
                raise DataError(f'article {a} paragraph {p} needs "context" and "qas"', path)
            for qa in para["qas"]:
                _check_question(qa, para["context"], path)
        articles.append(paragraphs)
    return articles


def _check_question(qa: dict, context: str, path: Path) -> None:
    qid = qa.get("id", "?") if isinstance(qa, dict) else "?"
    if (not isinstance(qid, str) or not isinstance(qa.get("question"), str)
            or not isinstance(qa.get("answers"), list) or not qa["answers"]):
        raise DataError(f'question {qid}: needs a string "id" and "question" and a non-empty '
                        f'"answers" list', path)
    for ans in qa["answers"]:
        start, text = ans.get("answer_start"), ans.get("text")
        if not isinstance(start, int) or not isinstance(text, str) or not text.strip():
            raise DataError(f'question {qid}: answer needs an integer "answer_start" and a '
                            f'non-empty "text", got {ans!r}', path)
        if start < 0 or start + len(text) > len(context):
            raise DataError(f"question {qid}: answer_start {start} + {len(text)} characters "
                            f"is outside the {len(context)}-character context", path)
        if context[start:start + len(text)] != text:
            raise DataError(f"question {qid}: context[{start}:{start + len(text)}] is "
                            f"{context[start:start + len(text)]!r}, not the answer {text!r}", path)


def _subset(items: list, size: int | None, seed: int) -> list:
    """A fixed random subset of ``size`` items, in their original order."""
    if size is None or size >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), size))
    return [items[i] for i in keep]


def build_examples(articles: list[list[dict]], path: Path, *, size: int | None,
                   seed: int, training: bool, config: dict) -> list[Example]:
    """Tokenise the (subset of) questions and their paragraphs.  Training examples
    whose context is longer than ``para_limit`` tokens are dropped."""
    questions = [(para, qa) for article in articles for para in article for qa in para["qas"]]
    questions = _subset(questions, size, seed)
    paragraphs: dict[int, Paragraph] = {}
    examples = []
    for para, qa in questions:
        key = id(para)
        if key not in paragraphs:
            try:
                paragraphs[key] = Paragraph(para["context"], *tokenize_with_spans(para["context"]))
            except ValueError as err:
                raise DataError(f"question {qa['id']}: {err}", path) from None
        paragraph = paragraphs[key]
        if training and len(paragraph.tokens) > config["para_limit"]:
            continue
        first = qa["answers"][0]
        try:
            start, end = char_to_token_span(paragraph.spans, first["answer_start"],
                                            first["answer_start"] + len(first["text"]))
        except ValueError as err:
            raise DataError(f"question {qa['id']}: answer {err}", path) from None
        question = tokenize(qa["question"])[: config["ques_limit"]]
        if not question:
            raise DataError(f"question {qa['id']}: empty question", path)
        examples.append(Example(qa["id"], question, paragraph,
                                [a["text"] for a in qa["answers"]], start, end))
    return examples


def encode(examples: list[Example], words: Vocab, chars: Vocab, config: dict) -> None:
    """Fill in the word and character ids (each paragraph once)."""
    def word_ids(tokens):
        return words.encode(t.lower() if config["lowercase"] else t for t in tokens)

    def char_matrix(tokens) -> torch.Tensor:
        ids = char_ids(tokens, chars, config["char_limit"])
        lengths = np.array([len(w) for w in ids])
        matrix = np.full((len(ids), lengths.max()), chars.pad_id, dtype=np.int32)  # (T, W)
        matrix[np.arange(lengths.max())[None, :] < lengths[:, None]] = np.concatenate(ids)
        return torch.from_numpy(matrix)

    for ex in examples:
        p = ex.paragraph
        if p.chars is None:
            p.word_ids, p.chars = word_ids(p.tokens), char_matrix(p.tokens)
        ex.word_ids, ex.chars = word_ids(ex.question), char_matrix(ex.question)


def _pad_chars(matrices: Sequence[torch.Tensor], pad_id: int) -> torch.Tensor:
    """Character-id matrices (T_b, W_b) -> one (T, B, W) batch, padded with ``pad_id``."""
    out = torch.full((max(m.shape[0] for m in matrices), len(matrices),
                      max(m.shape[1] for m in matrices)), pad_id, dtype=torch.long)
    for b, m in enumerate(matrices):
        out[: m.shape[0], b, : m.shape[1]] = m
    return out


def make_batch(examples: Sequence[Example], index: Sequence[int], data: RCData,
               context_limit: int) -> RCBatch:
    chosen = [examples[i] for i in index]
    c_words, c_lengths = pad_batch([ex.paragraph.word_ids[:context_limit] for ex in chosen],
                                   data.words.pad_id)
    q_words, q_lengths = pad_batch([ex.word_ids for ex in chosen], data.words.pad_id)
    return RCBatch(
        c_words=c_words, c_lengths=c_lengths,
        c_chars=_pad_chars([ex.paragraph.chars[:context_limit] for ex in chosen],
                           data.chars.pad_id),
        q_words=q_words, q_lengths=q_lengths,
        q_chars=_pad_chars([ex.chars for ex in chosen], data.chars.pad_id),
        starts=torch.tensor([ex.start for ex in chosen]),
        ends=torch.tensor([ex.end for ex in chosen]),
        index=list(index))


# ---------------------------------------------------------------- the task

_COMMON = dict(
    data_seed=1234, valid_articles=20, train_questions=None, valid_questions=None,
    test_questions=None, para_limit=400, ques_limit=50, test_para_limit=1000,
    char_limit=16, max_answer_len=16, lowercase=True, word_min_freq=1, embeddings=None,
    encoder_layers=3, layer_norm=False, optimizer="adam", clip=5.0, weight_decay=0.0,
    lr_schedule="constant", decay_factor=0.5, patience=2,
    rho=0.95, eps=1e-6,  # read only by optimizer="adadelta" (TF's defaults, as the authors')
)

#: why no published baseline is reproduced here (see preset_config)
NO_ANCHOR = ("the published SQuAD baselines (R-Net, the LRN paper) train on all 88k questions with GloVe 300d; "
             "shared/data holds subsets, so their numbers are not reachable")
PRESETS: dict[str, dict[str, Any]] = {
    # CI: a few steps on a few dozen questions.
    "tiny": dict(_COMMON, train_questions=64, valid_questions=16, test_questions=16,
                 test_para_limit=400, word_dim=16, char_dim=8, char_out=8, hidden_size=8,
                 encoder_layers=1, dropout=0.1, pointer_dropout=0.1, batch_size=8,
                 eval_batch_size=16, lr=2e-3, max_steps=10, max_epochs=5, eval_every=10),
    # For the CPU (under 20 to over 70 minutes per run on one core, by cell; the report's
    # "minutes per run" column): a narrower R-Net (2 encoder layers, H=48, words seen
    # twice or more) on a fixed 40k-question subset of the training articles, validated on
    # 1,000 held-out training questions and tested on 2,000 dev questions.
    "small": dict(_COMMON, train_questions=40000, valid_questions=1000, test_questions=2000,
                  para_limit=250, test_para_limit=400, word_min_freq=2, word_dim=100,
                  char_dim=16, char_out=50, hidden_size=48, encoder_layers=2,
                  dropout=0.2, pointer_dropout=0.2, batch_size=32, eval_batch_size=64,
                  lr=2e-3, max_steps=4000, max_epochs=10, eval_every=500),
    # The authors' R-Net settings (bzhangGo/lrn rc/rnet/code/config.py: H=75, 3 encoder
    # layers, keep 0.7, batch 64, 60k steps, clip 5, lr halved on plateaus), for a GPU.
    # Adadelta(lr 0.5, TF's rho 0.95, eps 1e-6) as theirs.  Their frozen GloVe 840B
    # vectors: set embeddings=PATH (word_dim=300); without it words are learnt.
    "paper": dict(_COMMON, word_dim=300, char_dim=8, char_out=200, hidden_size=75,
                  dropout=0.3, pointer_dropout=0.3, batch_size=64, eval_batch_size=64,
                  optimizer="adadelta", lr=0.5, lr_schedule="plateau", max_steps=60000, max_epochs=100,
                  eval_every=1000),
}


@register
class ReadingComprehension(Task):
    name = "rc"
    metrics = ("em", "f1")
    table_metrics = ("em",)
    primary_metric = "f1"
    higher_is_better = True

    def config(self, preset: str, data_dir: Path) -> dict[str, Any]:
        return preset_config(self.name, PRESETS, preset, no_anchor=NO_ANCHOR)

    def vocab_data(self, config: dict[str, Any], vocab: dict) -> RCData:
        return RCData(Vocab.from_state(vocab["words"]), Vocab.from_state(vocab["chars"]), splits={})

    def load_data(self, data_dir: Path, config: dict[str, Any], vocab: dict | None = None) -> RCData:
        data_dir = Path(data_dir)  # the SQuAD v1.1 directory, e.g. ../shared/data/rc/squad
        train_path, dev_path = data_dir / "train-v1.1.json", data_dir / "dev-v1.1.json"
        seed = config["data_seed"]
        articles = read_squad(train_path)
        if not 0 < config["valid_articles"] < len(articles):
            raise ValueError(f"valid_articles must be in 1..{len(articles) - 1}")
        held_out = set(random.Random(seed).sample(range(len(articles)), config["valid_articles"]))
        splits = {
            "train": build_examples([a for i, a in enumerate(articles) if i not in held_out],
                                    train_path, size=config["train_questions"], seed=seed,
                                    training=True, config=config),
            "valid": build_examples([articles[i] for i in sorted(held_out)], train_path,
                                    size=config["valid_questions"], seed=seed + 1,
                                    training=False, config=config),
            "test": build_examples(read_squad(dev_path), dev_path, size=config["test_questions"],
                                   seed=seed + 2, training=False, config=config),
        }
        if vocab is None:
            tokens = [t for ex in splits["train"] for t in ex.question]
            tokens += [t for p in {id(ex.paragraph): ex.paragraph for ex in splits["train"]}.values()
                       for t in p.tokens]
            words = Vocab.build((t.lower() if config["lowercase"] else t for t in tokens),
                                min_freq=config["word_min_freq"])
            chars = Vocab.build(ch for t in tokens for ch in t)
        else:
            words, chars = Vocab.from_state(vocab["words"]), Vocab.from_state(vocab["chars"])
        for examples in splits.values():
            encode(examples, words, chars, config)
        return RCData(words, chars, splits)

    def vocab_state(self, data: RCData) -> dict:
        return {"words": data.words.state_dict(), "chars": data.chars.state_dict()}

    def build_model(self, config: dict[str, Any], data: RCData, cell: str) -> nn.Module:
        name, cell_kwargs = parse_cell_spec(cell)
        if config["layer_norm"]:
            cell_kwargs.setdefault("layer_norm", True)
        vectors = None
        if config["embeddings"]:
            vectors, _ = load_glove(config["embeddings"], data.words, config["word_dim"])
        return RNet(cell=name, cell_kwargs=cell_kwargs, num_words=len(data.words),
                    num_chars=len(data.chars), word_dim=config["word_dim"],
                    char_dim=config["char_dim"], char_out=config["char_out"],
                    hidden_size=config["hidden_size"], encoder_layers=config["encoder_layers"],
                    dropout=config["dropout"], pointer_dropout=config["pointer_dropout"],
                    word_pad_id=data.words.pad_id, char_pad_id=data.chars.pad_id,
                    word_vectors=vectors)

    def train_batches(self, data: RCData, config: dict[str, Any], *, epoch: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[RCBatch]:
        examples = data.splits["train"]
        lengths = [len(ex.paragraph.tokens) for ex in examples]
        batches = length_buckets(lengths, config["batch_size"], shuffle=True,
                                 seed=config.get("seed", 0) * 100_003 + epoch)
        for index in batches[rank::world_size]:
            yield make_batch(examples, index, data, config["para_limit"])

    def loss(self, model: nn.Module, batch: RCBatch, device: torch.device) -> tuple[torch.Tensor, int]:
        batch = batch.to(device)
        start_logits, end_logits = model(batch)
        loss = F.cross_entropy(start_logits, batch.starts) + F.cross_entropy(end_logits, batch.ends)
        return loss, len(batch.index)

    @torch.no_grad()
    def predict(self, model: nn.Module, data: RCData, examples: list[Example],
                config: dict[str, Any], device: torch.device) -> list[tuple[int, int]]:
        """Predicted answers as [start, end) character offsets into each example's
        context, in ``examples`` order."""
        model.eval()
        limit = config["test_para_limit"]
        lengths = [min(len(ex.paragraph.tokens), limit) for ex in examples]
        offsets = [(0, 0)] * len(examples)
        batches = length_buckets(lengths, config["eval_batch_size"], shuffle=False)
        # disable=None: a bar on a terminal only, not in logs
        for index in self.progress(batches, "answering"):
            batch = make_batch(examples, index, data, limit).to(device)
            starts, ends, _ = best_spans(*model(batch), config["max_answer_len"])
            for i, s, e in zip(index, starts.tolist(), ends.tolist()):
                spans = examples[i].paragraph.spans
                offsets[i] = (spans[s][0], spans[e][1])
        return offsets

    def evaluate(self, model: nn.Module, data: RCData, split: str, config: dict[str, Any],
                 device: torch.device) -> dict[str, float]:
        examples = data.splits[split]
        offsets = self.predict(model, data, examples, config, device)
        predictions = [ex.paragraph.context[s:e] for ex, (s, e) in zip(examples, offsets)]
        return squad_scores(predictions, [ex.answers for ex in examples])

    def answer(self, model: nn.Module, data: RCData, config: dict[str, Any], context: str,
               question: str, device: torch.device) -> tuple[str, int, int]:
        """Answer one question about the whole of ``context``: (text, start, end)
        with text == context[start:end]."""
        if not context.strip() or not question.strip():
            raise ValueError("both the context and the question must contain text")
        example = Example("cli", tokenize(question)[: config["ques_limit"]],
                          Paragraph(context, *tokenize_with_spans(context)), [], -1, -1)
        encode([example], data.words, data.chars, config)
        whole = dict(config, test_para_limit=len(example.paragraph.tokens))
        (start, end), = self.predict(model, data, [example], whole, device)
        return context[start:end], start, end
