import random

import pytest
import torch
from conftest import train_tiny

from lrn.paths import shared_data_dir
from lrn.tasks.base import DataError
from lrn.tasks.doc import AttentivePooling, DocTask, clean_text, find_train_file, read_csv


def test_clean_text_undoes_the_format_escapes():
    assert clean_text("Wall Street#39;s dwindling\\band") == "Wall Street's dwindling band"
    assert clean_text("a #151; b &amp; c #36;5") == "a \u2014 b & c $5"


def test_reader_fields_labels_and_quoting(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text('"3","Title, with comma","Body ""quoted"" text"\n"1","Only","two\\nlines"\n'
                 '"2","Yahoo","has","three fields"\n')
    docs = read_csv(f, num_classes=4)
    assert [d.label for d in docs] == [2, 0, 1]
    assert docs[0].tokens == ["Title", ",", "with", "comma", "Body", '"', "quoted", '"', "text"]
    assert docs[1].tokens == ["Only", "two", "lines"]
    assert docs[2].tokens == ["Yahoo", "has", "three", "fields"]


@pytest.mark.parametrize("row, what", [
    ('"x","title","body"', "label 'x' is not a class number"),
    ('"0","title","body"', "label '0' is not a class number"),
    ('"9","title","body"', "label 9 but classes.txt lists 4 classes"),
    ('"2"', "expected a label and at least one text field"),
    ('"2","",""', "empty document"),
    ('"2","caf\xe9","x"', "not valid UTF-8"),
])
def test_reader_errors_name_file_and_line(tmp_path, row, what):
    f = tmp_path / "bad.csv"
    f.write_bytes(('"1","ok","fine"\n' + row + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=rf"bad\.csv:2: {what}"):
        read_csv(f, num_classes=4)


def test_train_file_discovery(tmp_path):
    with pytest.raises(DataError, match="no train"):
        find_train_file(tmp_path)
    (tmp_path / "train_first10.csv").write_text("")
    assert find_train_file(tmp_path).name == "train_first10.csv"
    (tmp_path / "train_part2.csv").write_text("")
    with pytest.raises(DataError, match="several"):
        find_train_file(tmp_path)
    (tmp_path / "train.csv").write_text("")
    assert find_train_file(tmp_path).name == "train.csv"


def test_reader_on_real_ag_news():
    root = shared_data_dir()
    if root is None or not (root / "doc" / "ag_news").is_dir():
        pytest.skip("AG News check: ../shared/data not found")
    test = read_csv(root / "doc" / "ag_news" / "test.csv", num_classes=4)
    assert len(test) == 7600 and [sum(d.label == c for d in test) for c in range(4)] == [1900] * 4


def test_attentive_pooling_ignores_padding():
    pool = AttentivePooling(3, 4)
    h = torch.randn(5, 2, 3)
    lengths = torch.tensor([5, 2])
    out = pool(h, lengths)
    assert torch.allclose(out[1], pool(h[:2, 1:], lengths[1:])[0], atol=1e-6)
    one = pool(h[:1, :1], torch.tensor([1]))
    assert torch.allclose(one[0], h[0, 0], atol=1e-6)  # a single position gets all the weight


def write_toy_corpus(root, seed=0):
    """Four classes, each with its own keywords among shared filler words."""
    rng = random.Random(seed)
    keys = [["match", "goal"], ["stock", "bank"], ["chip", "software"], ["war", "minister"]]
    filler = ["the", "a", "today", "said", "on", "new", "report"]
    root.mkdir(exist_ok=True)
    (root / "classes.txt").write_text("Sports\nBusiness\nTech\nWorld\n")
    for name, n in (("train_small.csv", 400), ("test.csv", 80)):
        with open(root / name, "w") as f:
            for _ in range(n):
                c = rng.randrange(4)
                words = [rng.choice(filler) for _ in range(rng.randint(4, 20))]
                words.insert(rng.randrange(len(words)), rng.choice(keys[c]))
                f.write(f'"{c + 1}","{" ".join(words[:3])}","{" ".join(words[3:])}"\n')


def test_validation_slice_is_fixed_and_truncation_applies(tmp_path):
    write_toy_corpus(tmp_path / "toy")
    task = DocTask()
    config = task.config("tiny", tmp_path / "toy")
    a = task.load_data(tmp_path / "toy", config)
    b = task.load_data(tmp_path / "toy", dict(config, seed=7, max_tokens=5))
    assert len(a.splits["valid"]) == 40 and len(a.splits["train"]) == 360
    assert [d.label for d in a.splits["valid"]] == [d.label for d in b.splits["valid"]]
    assert max(len(d.tokens) for split in b.splits.values() for d in split) == 5
    assert a.classes == ["Sports", "Business", "Tech", "World"]


@pytest.mark.parametrize("cell", ["lrn", "sru"])
def test_tiny_preset_learns(tmp_path, cell, one_thread):
    torch.manual_seed(0)
    write_toy_corpus(tmp_path / "toy")
    task = DocTask()
    config = task.config("tiny", tmp_path / "toy")
    data = task.load_data(tmp_path / "toy", config)
    model, losses = train_tiny(task, data, config, cell, epochs=5)
    device = torch.device("cpu")
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])
    scores = task.evaluate(model, data, "test", config, device)
    assert scores["accuracy"] > 80.0 and scores["error"] == pytest.approx(100 - scores["accuracy"])
    again = task.load_data(tmp_path / "toy", config, vocab=task.vocab_state(data))
    assert again.words.itos == data.words.itos and again.classes == data.classes


def test_train_then_predict_command(tmp_path, capsys, one_thread):
    from lrn.cli import main

    write_toy_corpus(tmp_path / "toy")
    run = tmp_path / "run"
    assert main(["train", "doc", "--data", str(tmp_path / "toy"), "--preset", "tiny", "--cell", "lrn",
                 "--out", str(run), "--max-steps", "5", "--no-progress"]) == 0
    raw = tmp_path / "docs.txt"
    raw.write_text("the match ended with a late goal\n\nbank stock fell on the report\n")
    capsys.readouterr()
    assert main(["predict", "doc", str(run), "--input", str(raw)]) == 0
    out = capsys.readouterr().out.split("\n")
    assert len([x for x in out if x]) == 2 and set(x for x in out if x) <= {"Sports", "Business", "Tech", "World"}
