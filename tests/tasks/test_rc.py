"""Reading comprehension: SQuAD metrics, token <-> character maps, span decoding,
data checks and the R-Net task end to end on a tiny SQuAD-format file."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from lrn.paths import shared_data_dir
from lrn.tasks.base import DataError
from lrn.tasks.rc import (
    PRESETS,
    ReadingComprehension,
    char_to_token_span,
    exact_match,
    f1_score,
    normalize_answer,
    read_squad,
    squad_scores,
    tokenize_with_spans,
)
from lrn.tasks.rc_model import NEG_INF, best_spans

CPU = torch.device("cpu")


# ---------------------------------------------------------------- metrics, worked by hand

def test_normalize_answer_official_rules():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("  A\tB\nc ") == "b c"  # "a" is an article


def test_exact_match_and_f1_hand_worked():
    assert exact_match("the Denver Broncos", "Denver Broncos!") == 1.0
    assert exact_match("Broncos", "Denver Broncos") == 0.0
    # pred {denver, broncos, won} vs gold {denver, broncos}: P = 2/3, R = 1 -> F1 = 0.8
    assert f1_score("Denver Broncos won", "the Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count with multiplicity: pred x y y, gold y y z -> 2 shared, P = R = 2/3
    assert f1_score("x y y", "y y z") == pytest.approx(2 / 3)
    assert f1_score("cats", "dogs") == 0.0
    assert f1_score("the", "a") == 0.0  # both normalise to nothing: 0, as the official script


def test_squad_scores_take_best_ground_truth():
    scores = squad_scores(
        ["Broncos", "in 1990"],
        [["Denver Broncos", "Broncos"], ["1990", "the year 1990"]])
    # q1: EM 1, F1 1.  q2: EM 0; F1 vs "1990": P 1/2 R 1 -> 2/3; vs "year 1990": 1/2 -> max 2/3.
    assert scores["em"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    with pytest.raises(ValueError):
        squad_scores(["a"], [])


# ---------------------------------------------------------------- token <-> character map

def test_token_char_map_round_trip():
    text = "``Don't  stop,'' she said;\tBeyoncé's 1990s-era  hits (e.g. \"Halo\")."
    tokens, spans = tokenize_with_spans(text)
    assert tokens[:4] == ['"', "Do", "n't", "stop"]
    for tok, (s, e) in zip(tokens, spans):
        assert text[s:e] == tok or (tok == '"' and text[s:e] in ("``", "''"))
    for i, j in itertools.combinations_with_replacement(range(len(tokens)), 2):
        assert char_to_token_span(spans, spans[i][0], spans[j][1]) == (i, j)
    # characters inside one token map to that token; a span starting in white space skips it
    k = tokens.index("Beyonc\u00e9")
    assert char_to_token_span(spans, spans[k][0] + 1, spans[k][0] + 3) == (k, k)
    assert char_to_token_span(spans, spans[k][0] - 1, spans[k][1]) == (k, k)
    with pytest.raises(ValueError):  # only the two spaces between "n't" and "stop"
        char_to_token_span(spans, spans[2][1], spans[3][0])


# ---------------------------------------------------------------- span decoding

def _brute_force(ls, le, max_len):
    best, arg = -math.inf, None
    for s in range(len(ls)):
        for e in range(s, min(len(ls), s + max_len)):
            if ls[s] + le[e] > best + 1e-9:
                best, arg = ls[s] + le[e], (s, e)
    return arg


def test_best_spans_respects_order_and_max_length():
    start = torch.full((1, 8), -5.0)
    end = torch.full((1, 8), -5.0)
    start[0, 5], end[0, 1] = 5.0, 5.0  # the best start lies after the best end
    s, e, _ = best_spans(start, end, max_answer_len=3)
    assert s.item() <= e.item() < s.item() + 3
    s, e, _ = best_spans(start, end, max_answer_len=1)
    assert s.item() == e.item()

    torch.manual_seed(0)
    start, end = torch.randn(6, 12), torch.randn(6, 12)
    lengths = torch.tensor([12, 9, 5, 1, 7, 12])
    pad = torch.arange(12)[None, :] >= lengths[:, None]
    start, end = start.masked_fill(pad, NEG_INF), end.masked_fill(pad, NEG_INF)
    for max_len in (1, 2, 4, 15):
        s, e, score = best_spans(start, end, max_len)
        ls, le = start.log_softmax(-1), end.log_softmax(-1)
        for b in range(6):
            assert 0 <= s[b] <= e[b] < min(lengths[b], s[b] + max_len)
            assert (s[b].item(), e[b].item()) == _brute_force(ls[b, :lengths[b]].tolist(),
                                                              le[b, :lengths[b]].tolist(), max_len)
            assert score[b].item() == pytest.approx((ls[b, s[b]] + le[b, e[b]]).item(), abs=1e-5)
    with pytest.raises(ValueError):
        best_spans(start, end, 0)


# ---------------------------------------------------------------- a tiny SQuAD-format file

CONTEXTS = [
    "The Denver Broncos defeated the Carolina Panthers 24-10 to win Super Bowl 50.",
    "Warsaw is the capital of Poland. It has about 1.7 million inhabitants.",
    "Nikola Tesla was born in 1856 in Smiljan. He died in New York in 1943.",
    "The Normans gave their name to Normandy, a region in France.",
]
QUESTIONS = [
    [("Who won Super Bowl 50?", ["Denver Broncos", "The Denver Broncos"]),
     ("How many points did the Panthers score?", ["10"])],
    [("What is the capital of Poland?", ["Warsaw"]),
     ("How many people live in Warsaw?", ["about 1.7 million", "1.7 million"])],
    [("When was Tesla born?", ["1856"]), ("Where did Tesla die?", ["New York"])],
    [("Where is Normandy?", ["France", "in France"])],
]


def _squad_json(contexts, questions, prefix):
    data = []
    for a, (context, qas) in enumerate(zip(contexts, questions)):
        entries = [{"id": f"{prefix}{a}-{q}", "question": question,
                    "answers": [{"text": t, "answer_start": context.index(t)} for t in answers]}
                   for q, (question, answers) in enumerate(qas)]
        data.append({"title": f"article{a}", "paragraphs": [{"context": context, "qas": entries}]})
    return {"data": data, "version": "1.1"}


@pytest.fixture()
def squad_dir(tmp_path: Path) -> Path:
    root = tmp_path / "rc" / "squad"
    root.mkdir(parents=True)
    (root / "train-v1.1.json").write_text(json.dumps(_squad_json(CONTEXTS, QUESTIONS, "t")))
    (root / "dev-v1.1.json").write_text(json.dumps(_squad_json(CONTEXTS[:2], QUESTIONS[:2], "d")))
    return root


def _tiny_config(**overrides):
    config = ReadingComprehension().config("tiny", Path("."))
    config.update(seed=0, valid_articles=1, train_questions=None, valid_questions=None,
                  test_questions=None)
    config.update(overrides)
    return config


def test_malformed_offsets_name_file_and_question(tmp_path: Path):
    bad = _squad_json(CONTEXTS[:1], QUESTIONS[:1], "q")
    bad["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 500
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"bad\.json.*question q0-1.*outside the 77-character"):
        read_squad(path)

    bad["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 0
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"bad\.json.*question q0-1.*not the answer '10'"):
        read_squad(path)

    path.write_text('{"data": [\n  {"title": }\n]}')
    with pytest.raises(DataError, match=r"bad\.json:2: invalid JSON"):
        read_squad(path)
    with pytest.raises(DataError, match="not found"):
        read_squad(tmp_path / "missing.json")


def test_splits_and_first_answer_targets(squad_dir: Path):
    task = ReadingComprehension()
    data = task.load_data(squad_dir, _tiny_config())
    train, valid, test = (data.splits[s] for s in ("train", "valid", "test"))
    assert len(train) + len(valid) == 7 and len(test) == 4
    assert {ex.paragraph.context for ex in train}.isdisjoint(ex.paragraph.context for ex in valid)
    for ex in train + valid + test:
        spans = ex.paragraph.spans
        assert ex.paragraph.context[spans[ex.start][0]:spans[ex.end][1]] == ex.answers[0]
    # the same data_seed gives the same split whatever the run seed
    again = task.load_data(squad_dir, _tiny_config(seed=7), vocab=task.vocab_state(data))
    assert [ex.qid for ex in again.splits["valid"]] == [ex.qid for ex in valid]


def test_padding_never_changes_an_answer(squad_dir: Path):
    """A question's logits do not depend on the longer examples batched with it."""
    task = ReadingComprehension()
    config = _tiny_config()
    data = task.load_data(squad_dir, config)
    from lrn.tasks.rc import make_batch

    examples = data.splits["test"]
    short = min(range(len(examples)), key=lambda i: len(examples[i].paragraph.tokens))
    for cell in ("lrn", "lstm"):
        torch.manual_seed(0)
        model = task.build_model(config, data, cell).eval()
        with torch.no_grad():
            alone = model(make_batch(examples, [short], data, 1000))
            batched = model(make_batch(examples, list(range(len(examples))), data, 1000))
        n = len(examples[short].paragraph.tokens)
        for a, b in zip(alone, batched):
            torch.testing.assert_close(a[0, :n], b[short, :n], atol=1e-5, rtol=1e-5)
            assert (b[short, n:] == NEG_INF).all()


@pytest.mark.parametrize("cell", ["lrn", "lstm"])  # lstm: the (h, c) pointer state
def test_training_step_and_evaluation(squad_dir: Path, cell: str):
    task = ReadingComprehension()
    config = _tiny_config()
    data = task.load_data(squad_dir, config)
    torch.manual_seed(0)
    model = task.build_model(config, data, cell)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = list(task.train_batches(data, config, epoch=0))
    assert sum(len(b.index) for b in batches) == len(data.splits["train"])
    losses = []
    for _ in range(8):
        for batch in batches:
            model.train()
            loss, items = task.loss(model, batch, CPU)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            assert items == len(batch.index)
    assert losses[-1] < losses[0]  # it fits a handful of questions
    scores = task.evaluate(model, data, "test", config, CPU)
    assert set(scores) == set(task.metrics) and all(0 <= v <= 100 for v in scores.values())
    context = CONTEXTS[2]
    text, start, end = task.answer(model, data, config, context, "When did Tesla die?", CPU)
    assert text == context[start:end] and text.strip() == text and text


def test_presets_share_keys():
    keys = set(PRESETS["paper"])
    assert all(set(p) == keys for p in PRESETS.values())


# ---------------------------------------------------------------- the real data

def test_real_squad_subset_smoke():
    root = shared_data_dir()
    if root is None or not (root / "rc" / "squad" / "dev-v1.1.json").is_file():
        pytest.skip("SQuAD v1.1 smoke test: ../shared/data/rc/squad not found")
    task = ReadingComprehension()
    config = task.config("tiny", root)
    config["seed"] = 0
    data = task.load_data(root / "rc" / "squad", config)
    assert all(len(data.splits[s]) > 0 for s in ("train", "valid", "test"))
    assert max(len(ex.answers) for ex in data.splits["test"]) > 1  # dev keeps every answer
    for ex in data.splits["train"]:
        spans = ex.paragraph.spans
        found = ex.paragraph.context[spans[ex.start][0]:spans[ex.end][1]]
        assert normalize_answer(ex.answers[0]) in normalize_answer(found)
    model = task.build_model(config, data, "lrn")
    loss, _ = task.loss(model, next(iter(task.train_batches(data, config, epoch=0))), CPU)
    assert torch.isfinite(loss)


# ---------------------------------------------------------------- lrn train / lrn predict rc

def test_cli_predict_answers_from_a_trained_run(squad_dir: Path, tmp_path: Path, capsys):
    from lrn.cli import main
    from lrn.train import train

    run = tmp_path / "run"
    overrides = {"valid_articles": 1, "train_questions": None, "valid_questions": None,
                 "test_questions": None}
    results = train("rc", squad_dir, "lrn", preset="tiny", overrides=overrides, out_dir=run,
                    max_steps=3, progress=False)
    assert set(results["metrics"]["test"]) == {"em", "f1"}
    context_file = tmp_path / "context.txt"
    context_file.write_text(CONTEXTS[1] + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", "rc", str(run), "--context", str(context_file),
                 "--question", "What is the capital of Poland?", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["answer"] == (CONTEXTS[1] + "\n")[answer["start"]:answer["end"]] != ""

    assert main(["predict", "rc", str(run), "--context", str(tmp_path / "none.txt"),
                 "--question", "Why?"]) == 2
    assert "none.txt: context file not found" in capsys.readouterr().err
    assert main(["predict", "rc", str(tmp_path), "--context", str(context_file),
                 "--question", "Why?"]) == 2
    assert "no checkpoint found" in capsys.readouterr().err


def test_squad_file_that_is_not_utf8_is_named(tmp_path):
    from lrn.tasks.rc import read_squad

    path = tmp_path / "train.json"
    path.write_bytes(b'{"data": [{"title": "caf\xe9"}]}')
    with pytest.raises(DataError, match=r"train.json: not valid UTF-8 \(byte 25 of the file\)"):
        read_squad(path)
