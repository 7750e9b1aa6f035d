"""`lrn analyze gradients|weights` and `lrn report` end to end, on tiny trained runs."""

import json

import pytest

from lrn.cli import main
from lrn.train import train


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "adding-lrn"
    train("adding", None, "lrn", preset="tiny", out_dir=out, max_steps=3, progress=False)
    return out


SENTENCES = [[("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC"), ("call", "O"), (".", "O")],
             [("Peter", "B-PER"), ("Blackburn", "I-PER")],
             [("BRUSSELS", "B-LOC"), ("1996-08-22", "O")]]


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    """A bidirectional-LRN NER run on a three-sentence CoNLL file."""
    data = tmp_path_factory.mktemp("conll")
    text = "\n".join("\n".join(f"{w}\t{t}" for w, t in s) + "\n" for s in SENTENCES)
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text(text)
    out = tmp_path_factory.mktemp("runs") / "ner-lrn"
    train("ner", data, "lrn", preset="tiny", out_dir=out, max_steps=2, progress=False)
    return out


def test_gradients_at_init_and_for_a_run_then_report(adding_run, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", "gradients", "--cells", "lrn,gru", "--hidden", "4", "--length", "8",
                 "--sequences", "2", "--run", str(adding_run), "--out", str(out)]) == 0
    sidecar = json.loads((out / "gradients.json").read_text())
    assert [g["title"].split(",")[0] for g in sidecar["groups"]] == [
        "at initialisation", "adding lrn: first layer on a real batch (T=8"]
    labels = [f["label"] for g in sidecar["groups"] for f in g["flows"]]
    assert labels == ["lrn", "gru", "adding lrn trained", "adding lrn at init"]
    assert (out / "gradients.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", "--runs", str(adding_run), str(out), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "### Adding problem" in text and "### Gradient flow" in text
    assert "report of 1 runs, 0 speed reports and 1 analyses" in capsys.readouterr().out


def test_weights_heatmap_and_top_tokens(ner_run, tmp_path, capsys):
    png = tmp_path / "weights.png"
    assert main(["analyze", "weights", str(ner_run), "--text", "EU rejects German call .",
                 "--top", "3", "--out", str(png)]) == 0
    sidecar = json.loads(png.with_suffix(".json").read_text())
    [segment] = sidecar["segments"]
    assert segment["tokens"] == ["EU", "rejects", "German", "call", "."]
    assert list(segment["rows"]) == ["forward state after the last token",
                                     "backward state after the first token"]
    weights = [t["weight"] for t in sidecar["top_tokens"]]
    assert len(weights) == 3 and weights == sorted(weights, reverse=True)
    assert png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert sidecar["top_tokens"][0]["token"] in printed.splitlines()[0]


def test_weights_name_the_tasks_that_read_text(adding_run, capsys):
    assert main(["analyze", "weights", str(adding_run), "--text", "a b"]) == 2
    assert "analyze weights reads raw text for" in capsys.readouterr().err


def test_bad_sizes_are_named(capsys):
    assert main(["analyze", "gradients", "--length", "2"]) == 2
    assert "--length must be at least 3" in capsys.readouterr().err


def test_weights_of_both_nli_sentences(tmp_path, capsys):
    pairs = [{"sentence1": "A man sleeps .", "sentence2": "A person rests .", "gold_label": label}
             for label in ("entailment", "neutral", "contradiction")]
    data = tmp_path / "snli"
    data.mkdir()
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        (data / name).write_text("".join(json.dumps(p) + "\n" for p in pairs))
    run = tmp_path / "nli-lrn"
    train("nli", data, "lrn", preset="tiny", out_dir=run, max_steps=2, progress=False)
    png = tmp_path / "nli.png"
    assert main(["analyze", "weights", str(run), "--text", "A dog barks loudly . ||| A dog is loud .",
                 "--out", str(png)]) == 0
    sidecar = json.loads(png.with_suffix(".json").read_text())
    assert [s["tokens"] for s in sidecar["segments"]] == [["A", "dog", "barks", "loudly", "."],
                                                          ["A", "dog", "is", "loud", "."]]
    assert main(["analyze", "weights", str(run), "--text", "no separator"]) == 2
    assert "premise ||| hypothesis" in capsys.readouterr().err


def test_weights_of_a_document(tmp_path):
    data = tmp_path / "ag"
    data.mkdir()
    rows = "".join(f'"{1 + i % 2}","Stocks rally","Shares rose on Monday #{i}"\n' for i in range(12))
    (data / "train.csv").write_text(rows)
    (data / "test.csv").write_text(rows)
    run = tmp_path / "doc-olrn"
    train("doc", data, "olrn", preset="tiny", out_dir=run, max_steps=2, progress=False)
    png = tmp_path / "doc.png"
    assert main(["analyze", "weights", str(run), "--text", "Oil prices fall (Reuters)",
                 "--out", str(png)]) == 0
    sidecar = json.loads(png.with_suffix(".json").read_text())
    assert sidecar["cell"] == "olrn"
    assert sidecar["segments"][0]["tokens"] == ["Oil", "prices", "fall", "(", "Reuters", ")"]
