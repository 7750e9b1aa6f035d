import json
import random

import pytest
import torch
from conftest import train_tiny

from lrn.paths import shared_data_dir
from lrn.tasks.base import DataError
from lrn.tasks.nli import LABELS, NLITask, mean_max_pool, read_snli


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_reader_drops_unlabelled_and_tokenises_every_split_alike(tmp_path):
    f = tmp_path / "a.jsonl"
    write_jsonl(f, [
        {"sentence1": "A man's dog doesn't bark.", "sentence2": "A dog.", "gold_label": "neutral"},
        {"sentence1": "x", "sentence2": "y", "gold_label": "-"},
        {"sentence1": "A man 's dog does n't bark .", "sentence2": "A dog .", "gold_label": "entailment"},
    ])
    pairs = read_snli(f)
    assert len(pairs) == 2
    assert pairs[0].premise == pairs[1].premise == ["A", "man", "'s", "dog", "does", "n't", "bark", "."]
    assert [p.label for p in pairs] == [LABELS.index("neutral"), LABELS.index("entailment")]


@pytest.mark.parametrize("line, what", [
    ('{"sentence1": "a", "sentence2": "b", "gold_label": "maybe"}', "unknown gold_label 'maybe'"),
    ('{"sentence1": "a", "gold_label": "neutral"}', "missing key"),
    ('{"sentence1": "a", "sentence2": ', "invalid JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"sentence1": "...", "sentence2": "  ", "gold_label": "neutral"}', "empty sentence"),
    ('{"sentence1": 5, "sentence2": "b", "gold_label": "neutral"}', "sentence1 must be a string, got 5"),
    ('{"sentence1": "a", "sentence2": null, "gold_label": "neutral"}', "sentence2 must be a string, got None"),
    ('{"sentence1": "caf\xe9", "sentence2": "b", "gold_label": "neutral"}', r"not valid UTF-8 \(byte 19"),
])
def test_reader_errors_name_file_and_line(tmp_path, line, what):
    f = tmp_path / "bad.jsonl"
    first = '{"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}\n'
    f.write_bytes((first + line + "\n").encode("latin-1"))  # latin-1: the \xe9 case is not UTF-8
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: {what}"):
        read_snli(f)


def test_reader_on_real_snli():
    root = shared_data_dir()
    if root is None or not (root / "nli" / "snli").is_dir():
        pytest.skip("SNLI check: ../shared/data not found")
    dev = read_snli(root / "nli" / "snli" / "dev.jsonl")
    assert len(dev) == 9842
    counts = [sum(p.label == i for p in dev) for i in range(3)]
    assert counts == [3329, 3235, 3278]  # entailment / neutral / contradiction (README)


def test_mean_max_pool_ignores_padding():
    h = torch.tensor([[[1.0], [3.0], [100.0]]])  # (B=1, T=3, D=1), last step is padding
    mask = torch.tensor([[True, True, False]])
    assert mean_max_pool(h, mask).tolist() == [[2.0, 3.0]]


def write_toy_snli(root, seed=0):
    """Entailment: the hypothesis repeats the premise's colour; contradiction: another
    colour; neutral: no colour."""
    rng = random.Random(seed)
    colours, nouns = ["red", "blue", "green"], ["car", "dog", "hat", "boat"]
    root.mkdir(exist_ok=True)
    for name, n in (("train", 300), ("dev", 60), ("test", 60)):
        rows = []
        for _ in range(n):
            c, noun = rng.choice(colours), rng.choice(nouns)
            premise = f"A {c} {noun} is {rng.choice(['here', 'outside', 'there'])}."
            label = rng.choice(LABELS)
            other = rng.choice([x for x in colours if x != c])
            hyp = {"entailment": f"The {noun} is {c}.", "contradiction": f"The {noun} is {other}.",
                   "neutral": f"The {noun} is {rng.choice(['old', 'new', 'big'])}."}[label]
            rows.append({"sentence1": premise, "sentence2": hyp, "gold_label": label})
        write_jsonl(root / f"{name}.jsonl", rows)


@pytest.mark.parametrize("cell", ["lrn", "gru"])
def test_tiny_preset_learns(tmp_path, cell, one_thread):
    torch.manual_seed(0)
    write_toy_snli(tmp_path / "toy")
    task = NLITask()
    config = task.config("tiny", tmp_path / "toy")
    data = task.load_data(tmp_path / "toy", config)
    model, losses = train_tiny(task, data, config, cell, epochs=8)
    device = torch.device("cpu")
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    scores = task.evaluate(model, data, "test", config, device)
    assert scores["accuracy"] > 70.0  # chance is 33
    again = task.load_data(tmp_path / "toy", config, vocab=task.vocab_state(data))
    assert again.words.itos == data.words.itos


def test_premise_and_hypothesis_padding_does_not_change_predictions(tmp_path, one_thread):
    torch.manual_seed(0)
    write_toy_snli(tmp_path / "toy")
    task = NLITask()
    config = task.config("tiny", tmp_path / "toy")
    data = task.load_data(tmp_path / "toy", config)
    model = task.build_model(config, data, "lrn").eval()
    pairs = data.splits["test"][:6]
    batch = task.make_batch(data, pairs, config)
    together = model(*batch.premise, *batch.hypothesis)
    for i, pair in enumerate(pairs):
        alone = task.make_batch(data, [pair], config)
        assert torch.allclose(model(*alone.premise, *alone.hypothesis)[0], together[i], atol=1e-5)


def test_train_then_predict_command(tmp_path, capsys, one_thread):
    from lrn.cli import main

    write_toy_snli(tmp_path / "toy")
    run = tmp_path / "run"
    assert main(["train", "nli", "--data", str(tmp_path / "toy"), "--preset", "tiny", "--cell", "lrn",
                 "--out", str(run), "--max-steps", "5", "--no-progress"]) == 0
    raw = tmp_path / "pairs.txt"
    raw.write_text("A red car is here.\tThe car is red.\n\nA dog.\tThe dog is blue.\n")
    capsys.readouterr()
    assert main(["predict", "nli", str(run), "--input", str(raw)]) == 0
    out = capsys.readouterr().out.split()
    assert len(out) == 2 and set(out) <= set(LABELS)
    raw.write_text("no tab here\n")
    assert main(["predict", "nli", str(run), "--input", str(raw)]) == 2
    assert "pairs.txt:1: expected 'premise<TAB>hypothesis'" in capsys.readouterr().err
