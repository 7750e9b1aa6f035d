import random

import pytest
import torch
from conftest import train_tiny

from lrn.paths import shared_data_dir
from lrn.tasks.base import DataError
from lrn.tasks.ner import (NERTask, conll_scores, iob2_to_iobes, read_conll, read_raw, to_iob2,
                           transition_constraints)

# ------------------------------------------------------------------ metric (hand-worked)


def test_scores_micro_and_per_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"]]
    s = conll_scores(gold, pred)
    # gold {PER 0-1, LOC 3}, predicted {PER 0-1, ORG 3}: one of two correct either way.
    assert (s["precision"], s["recall"], s["f1"]) == (50.0, 50.0, 50.0)
    assert (s["precision_PER"], s["recall_PER"], s["f1_PER"]) == (100.0, 100.0, 100.0)
    assert (s["precision_LOC"], s["recall_LOC"], s["f1_LOC"]) == (0.0, 0.0, 0.0)  # nothing predicted
    assert (s["precision_ORG"], s["recall_ORG"], s["f1_ORG"]) == (0.0, 0.0, 0.0)  # nothing gold


def test_scores_partial_overlap_is_wrong_and_f1_is_harmonic_mean():
    gold = [["B-PER", "I-PER", "O"], ["B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "O", "O"], ["B-LOC", "O", "B-ORG"]]  # PER 0-0 != PER 0-1
    s = conll_scores(gold, pred)
    assert s["precision"] == pytest.approx(200 / 3) and s["recall"] == pytest.approx(200 / 3)
    pred2 = [["O", "O", "O"], ["B-LOC", "O", "O"]]
    s2 = conll_scores(gold, pred2)
    p, r = 100.0, 100 / 3
    assert s2["precision"] == p and s2["recall"] == pytest.approx(r)
    assert s2["f1"] == pytest.approx(2 * p * r / (p + r))


def test_iob1_input_chunks_like_conlleval():
    # IOB1: I- continues or starts a chunk, B- only separates two adjacent same-type chunks.
    gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]]
    pred = [["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]]  # the same chunks in IOB2
    assert conll_scores(gold, pred)["f1"] == 100.0
    wrong = [["I-PER", "I-PER", "I-PER", "O", "I-LOC", "I-ORG"]]  # PER 0-2 instead of 0-1 + 2-2
    s = conll_scores(gold, wrong)
    assert s["precision"] == pytest.approx(200 / 3) and s["recall"] == 50.0


def test_broken_spans_follow_conlleval():
    # An I- after O starts a chunk; a type change inside a chunk ends it and starts another;
    # a chunk never crosses a sentence boundary.
    gold = [["O", "I-PER", "I-PER"], ["B-PER", "I-LOC", "I-LOC"], ["I-MISC"], ["I-MISC"]]
    pred = [["O", "B-PER", "I-PER"], ["B-PER", "B-LOC", "I-LOC"], ["B-MISC"], ["B-MISC"]]
    s = conll_scores(gold, pred)
    assert s["f1"] == 100.0 and s["recall_MISC"] == 100.0
    merged = [["O", "B-PER", "I-PER"], ["B-PER", "I-PER", "I-PER"], ["B-MISC"], ["B-MISC"]]
    s = conll_scores(gold, merged)
    # predicted: PER 0:1-2 ok, PER 1:0-2 wrong, MISC x2 ok -> P 3/4; gold has 5 -> R 3/5
    assert s["precision"] == 75.0 and s["recall"] == 60.0


def test_iobes_and_empty_predictions():
    gold = [["S-PER", "B-LOC", "E-LOC", "O"]]
    assert conll_scores(gold, [["B-PER", "B-LOC", "I-LOC", "O"]])["f1"] == 100.0
    s = conll_scores(gold, [["O"] * 4])
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="sentence 0"):
        conll_scores(gold, [["O"]])


def test_scheme_conversions():
    assert to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert to_iob2(["S-PER", "B-LOC", "I-LOC", "E-LOC"]) == ["B-PER", "B-LOC", "I-LOC", "I-LOC"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-LOC"]
    iobes = iob2_to_iobes(iob2)
    assert iobes == ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "I-LOC", "E-LOC"]
    assert to_iob2(iobes) == iob2


def test_transition_constraints_forbid_ill_formed_iobes():
    tags = ["B-PER", "I-PER", "E-PER", "S-PER", "O", "B-LOC"]
    allowed, start, end = transition_constraints(tags)
    ok = {(a, b) for i, a in enumerate(tags) for j, b in enumerate(tags) if allowed[i, j]}
    assert ("B-PER", "E-PER") in ok and ("B-PER", "I-PER") in ok and ("O", "B-LOC") in ok
    assert ("O", "I-PER") not in ok and ("B-PER", "O") not in ok and ("E-PER", "I-PER") not in ok
    assert [t for t, s in zip(tags, start) if s] == ["B-PER", "S-PER", "O", "B-LOC"]
    assert [t for t, e in zip(tags, end) if e] == ["E-PER", "S-PER", "O"]


# ------------------------------------------------------------------------------ readers


def test_reader_formats(tmp_path):
    four = tmp_path / "four.txt"
    four.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP I-ORG\nrejects VBZ B-VP O\n"
                    "German JJ B-NP I-MISC\n\nPeter NNP B-NP I-PER\n")
    sents = read_conll(four)
    assert [s.tokens for s in sents] == [["EU", "rejects", "German"], ["Peter"]]
    assert [s.tags for s in sents] == [["B-ORG", "O", "B-MISC"], ["B-PER"]]  # IOB1 -> IOB2
    two = tmp_path / "two.txt"
    two.write_text("John\tS-PER\nlives\tO\n\n\n")
    assert read_conll(two)[0].tags == ["B-PER", "O"]


@pytest.mark.parametrize("text, line, what", [
    ("John B-PER\nlives\n", 2, "expected 'token tag'"),
    ("John B-PER\nlives X-PER\n", 2, "bad tag 'X-PER'"),
    ("John PER\n", 1, "bad tag 'PER'"),
    ("John B-PER\n\nM\xfcller B-PER\n", 3, r"not valid UTF-8 \(byte 2"),
])
def test_reader_errors_name_file_and_line(tmp_path, text, line, what):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=rf"bad\.txt:{line}: {what}"):
        read_conll(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no sentences"):
        read_conll(empty)


def test_reader_on_real_conll2003():
    root = shared_data_dir()
    if root is None or not (root / "ner" / "conll2003").is_dir():
        pytest.skip("CoNLL-2003 check: ../shared/data not found")
    valid = read_conll(root / "ner" / "conll2003" / "valid.txt")
    assert len(valid) == 3250 and sum(len(s.tokens) for s in valid) == 51362
    types = {t[2:] for s in valid for t in s.tags if t != "O"}
    assert types == {"PER", "LOC", "ORG", "MISC"}


# ------------------------------------------------------------------------------- model


def write_toy_corpus(root, seed=0):
    """Names after 'Mr' are PER, after 'in' LOC; everything else O."""
    rng = random.Random(seed)
    names, places, filler = ["Smith", "Jones", "Brown"], ["Paris", "Rome", "Oslo"], ["he", "ran", "today", "fast"]

    def sentence():
        out = []
        for _ in range(rng.randint(2, 4)):
            kind = rng.random()
            if kind < 0.35:
                out += [("Mr", "O"), (rng.choice(names), "B-PER")]
            elif kind < 0.7:
                out += [("in", "O"), (rng.choice(places), "B-LOC"), (rng.choice(places), "I-LOC")]
            else:
                out.append((rng.choice(filler), "O"))
        return out

    root.mkdir(exist_ok=True)
    for split, n in (("train", 200), ("valid", 40), ("test", 40)):
        with open(root / f"{split}.txt", "w") as f:
            for _ in range(n):
                f.write("".join(f"{w} {t}\n" for w, t in sentence()) + "\n")


@pytest.mark.parametrize("cell", ["lrn", "lstm"])
def test_tiny_preset_learns(tmp_path, cell, one_thread):
    torch.manual_seed(0)
    write_toy_corpus(tmp_path / "toy")
    task = NERTask()
    config = task.config("tiny", tmp_path / "toy")
    data = task.load_data(tmp_path / "toy", config)
    model, losses = train_tiny(task, data, config, cell, epochs=4)
    device = torch.device("cpu")
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])
    scores = task.evaluate(model, data, "test", config, device)
    assert set(task.metrics) <= set(scores)
    assert scores["f1"] > 80.0
    # Vocabularies survive a checkpoint round trip.
    again = task.load_data(tmp_path / "toy", config, vocab=task.vocab_state(data))
    assert again.words.itos == data.words.itos and again.tags == data.tags


def test_read_raw_and_predict_shapes(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("Mr Smith ran\n\nin Paris Rome\n")
    sents = read_raw(raw)
    assert [s.tokens for s in sents] == [["Mr", "Smith", "ran"], ["in", "Paris", "Rome"]]
    write_toy_corpus(tmp_path / "toy")
    task = NERTask()
    config = task.config("tiny", tmp_path / "toy")
    data = task.load_data(tmp_path / "toy", config)
    model = task.build_model(config, data, "lrn")
    tags = task.predict(model, data, sents, config, torch.device("cpu"))
    assert [len(t) for t in tags] == [3, 3]
    assert all(t == "O" or t[:2] in ("B-", "I-") for s in tags for t in s)  # IOB2


def test_train_then_predict_command(tmp_path, capsys, one_thread):
    from lrn.cli import main

    write_toy_corpus(tmp_path / "toy")
    glove = tmp_path / "glove.txt"
    glove.write_text("smith " + " ".join(["0.5"] * 16) + "\n")
    run = tmp_path / "run"
    assert main(["train", "ner", "--data", str(tmp_path / "toy"), "--preset", "tiny", "--cell", "lrn",
                 "--out", str(run), "--max-steps", "40", "--no-progress", "--set", f"embeddings={glove}"]) == 0
    glove.unlink()  # the checkpoint holds every weight: prediction needs no embeddings file
    raw = tmp_path / "raw.txt"
    raw.write_text("Mr Smith ran\nin Paris Rome today\n")
    capsys.readouterr()
    assert main(["predict", "ner", str(run), "--input", str(raw)]) == 0
    lines = capsys.readouterr().out.split("\n")
    # CoNLL output: "token tag" per line, a blank line after each sentence.
    assert [line.split()[0] for line in lines if line] == "Mr Smith ran in Paris Rome today".split()
    assert lines[3] == "" and lines[8] == "" and len([x for x in lines if x]) == 7
    assert main(["predict", "ner", str(run), "--input", str(tmp_path / "missing.txt")]) == 2


def test_embeddings_file_initialises_words_and_bad_files_fail_clearly(tmp_path):
    write_toy_corpus(tmp_path / "toy")
    task = NERTask()
    config = task.config("tiny", tmp_path / "toy")
    data = task.load_data(tmp_path / "toy", config)
    glove = tmp_path / "glove.txt"
    glove.write_text("smith " + " ".join(["0.5"] * 16) + "\n")
    model = task.build_model(dict(config, embeddings=str(glove)), data, "lrn")
    row = model.embed.words.weight[data.words.index("smith")]
    assert torch.all(row == 0.5)
    glove.write_text("smith 0.5 0.5\n")
    with pytest.raises(DataError, match=r"glove\.txt:1: expected a word and 16 numbers, got 2"):
        task.build_model(dict(config, embeddings=str(glove)), data, "lrn")


def test_anchor_preset_is_ma_and_hovy(tmp_path):
    from lrn.train.config import resolve_config

    write_toy_corpus(tmp_path / "toy")
    task = NERTask()
    config = resolve_config(task, "anchor", tmp_path / "toy", None, seed=0)
    assert (config["optimizer"], config["lr"], config["momentum"], config["batch_size"]) == ("sgd", 0.015, 0.9, 10)
    assert (config["lr_schedule"], config["decay_rate"], config["max_epochs"]) == ("inverse_time", 0.05, 50)
    data = task.load_data(tmp_path / "toy", config)
    model = task.build_model(config, data, "lstm")
    # the 400 recurrent features go straight to the tag scores: no hidden tanh layer
    linears = [m for m in model.project if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, len(data.tags))]
    for table in (model.embed.words, model.embed.chars.embed):
        bound, weight = (3.0 / table.embedding_dim) ** 0.5, table.weight.detach()
        rows = torch.cat([weight[:table.padding_idx], weight[table.padding_idx + 1:]])
        assert bound >= float(rows.abs().max()) > 0.9 * bound
        assert not weight[table.padding_idx].any()
