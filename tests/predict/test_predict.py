"""lrn.predict: one loader for every task's trained run, and what is built on it."""

from __future__ import annotations

import shutil

import pytest
import torch

from lrn.predict import evaluate_run, load_run, predict_file
from lrn.train import train

SENTENCES = [("John lives in Paris", "B-PER O O B-LOC"), ("Mary works at Acme Corp", "B-PER O O B-ORG I-ORG"),
             ("the weather in Rome is fine", "O O O B-LOC O O"), ("Acme hired Mary", "B-ORG O B-PER")]


def write_conll(root):
    root.mkdir(parents=True)
    text = "".join("".join(f"{w}\t{t}\n" for w, t in zip(s.split(), tags.split())) + "\n"
                   for s, tags in SENTENCES * 3)
    for name in ("train.txt", "valid.txt", "test.txt"):
        (root / name).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    write_conll(root / "data")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train("ner", root / "data", "lrn", preset="tiny", out_dir=root / "run", max_steps=6, progress=False)
    finally:
        torch.set_num_threads(before)
    return root


def test_a_run_predicts_from_its_checkpoint_alone(ner_run):
    vocab_only = load_run(ner_run / "run")
    with_data = load_run(ner_run / "run", with_data=True)
    assert vocab_only.data.splits == {} and set(with_data.data.splits) == {"train", "valid", "test"}
    for (name, a), (_, b) in zip(vocab_only.model.state_dict().items(), with_data.model.state_dict().items()):
        assert torch.equal(a, b), name
    raw = ner_run / "raw.txt"
    raw.write_text("John lives in Rome\nAcme hired John today\n", encoding="utf-8")
    shutil.move(ner_run / "data", ner_run / "moved")  # the dataset is not read to predict
    try:
        lines = predict_file(ner_run / "run", raw, task="ner")
        with pytest.raises(ValueError, match="train.txt: file not found"):
            evaluate_run(ner_run / "run")  # but it is to evaluate
    finally:
        shutil.move(ner_run / "moved", ner_run / "data")
    assert [[row.split()[0] for row in block.splitlines()] for block in lines] == [
        "John lives in Rome".split(), "Acme hired John today".split()]
    assert all(row.split()[1] in {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"}
               for block in lines for row in block.splitlines())


def test_evaluate_run_scores_the_split(ner_run):
    metrics = evaluate_run(ner_run / "run", "valid")
    assert 0.0 <= metrics["f1"] <= 100.0
    with pytest.raises(ValueError, match="--split must be 'valid' or 'test'"):
        evaluate_run(ner_run / "run", "train")


def test_a_run_of_another_task_is_refused_in_one_line(ner_run, tmp_path):
    with pytest.raises(ValueError, match="holds a run of task 'ner'; this command needs task 'nli'"):
        predict_file(ner_run / "run", ner_run / "raw.txt", task="nli")
    with pytest.raises(ValueError, match="no such run directory"):
        load_run(tmp_path / "missing")
    with pytest.raises(ValueError, match="no checkpoint found"):
        load_run(tmp_path)
