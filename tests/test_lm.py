"""Language modelling: data layouts and errors, the model, learning, exact resumption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lrn.paths import shared_data_dir
from lrn.tasks import get_task
from lrn.tasks.base import DataError
from lrn.tasks.lm import PAPER, RNNLM, batchify, find_split_files, generate_from_run, read_tokens
from lrn.train import train
from lrn.train.config import resolve_config

WORDS = "the cat sat on the mat\na dog ran in the park\nthe end\n"


def write_corpus(directory: Path, pattern: str = "{}.txt", text: str = WORDS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        (directory / pattern.format(split)).write_text(text * 30)
    return directory


def ptb_dir() -> Path:
    root = shared_data_dir()
    if root is None or not (root / "lm" / "ptb").is_dir():
        pytest.skip("PTB not available: ../shared/data not found")
    return root / "lm" / "ptb"


# ---------------------------------------------------------------- data
@pytest.mark.parametrize("pattern,dataset", [("ptb.{}.txt", "ptb"), ("wiki.{}.tokens", "wikitext-2"),
                                             ("{}.txt", "plain")])
def test_all_three_layouts_are_found(tmp_path, pattern, dataset):
    found, files = find_split_files(write_corpus(tmp_path, pattern))
    assert found == dataset and files["valid"].name == pattern.format("valid")


def test_eos_after_every_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text(" a b \n\nc\n")
    assert read_tokens(path) == ["a", "b", "<eos>", "<eos>", "c", "<eos>"]


def test_vocab_and_unknown_words(tmp_path):
    data_dir = write_corpus(tmp_path)
    (data_dir / "test.txt").write_text("the zebra\n")
    task = get_task("lm")
    data = task.load_data(data_dir, {})
    assert data.vocab.itos[:2] == ["<unk>", "<eos>"]
    assert data.vocab.decode(data.test.tolist()) == ["the", "<unk>", "<eos>"]


def test_missing_split_is_a_data_error(tmp_path):
    data_dir = write_corpus(tmp_path, "ptb.{}.txt")
    (data_dir / "ptb.test.txt").unlink()
    with pytest.raises(DataError, match=r"ptb\.test\.txt: missing test split"):
        find_split_files(data_dir)


def test_no_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no language-modelling data"):
        find_split_files(tmp_path)


def test_empty_split_is_a_data_error(tmp_path):
    data_dir = write_corpus(tmp_path)
    (data_dir / "valid.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"valid\.txt: empty split"):
        get_task("lm").load_data(data_dir, {})


def test_malformed_line_names_file_and_line(tmp_path):
    data_dir = write_corpus(tmp_path)
    (data_dir / "train.txt").write_bytes(b"fine line\nanother\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"train\.txt:3: not valid UTF-8"):
        get_task("lm").load_data(data_dir, {})


def test_batchify_makes_contiguous_columns_with_next_token_targets():
    inputs, targets = batchify(torch.arange(11), 2)
    assert inputs.tolist() == [[0, 5], [1, 6], [2, 7], [3, 8], [4, 9]]
    assert targets.tolist() == [[1, 6], [2, 7], [3, 8], [4, 9], [5, 10]]


# --------------------------------------------------------------- model
def test_paper_presets_are_the_authors_settings(tmp_path):
    task = get_task("lm")
    ptb = resolve_config(task, "paper", write_corpus(tmp_path / "p", "ptb.{}.txt"), None, 28)
    assert {k: ptb[k] for k in ("emsize", "nhid", "nhidlast", "n_experts", "dropouti", "dropoutl",
                                "dropouth", "batch_size", "lr", "optimizer")} == dict(
        emsize=280, nhid=960, nhidlast=620, n_experts=15, dropouti=0.4, dropoutl=0.29, dropouth=0.225,
        batch_size=12, lr=10.0, optimizer="nt-asgd")
    wt2 = resolve_config(task, "paper", write_corpus(tmp_path / "w", "wiki.{}.tokens"), None, 1882)
    assert (wt2["emsize"], wt2["nhid"], wt2["nhidlast"], wt2["lr"]) == (300, 1150, 650, 15.0)
    model = RNNLM("lrn", 10000, {**PAPER["ptb"], "layer_norm": False})
    # Embedding 10000x280 (tied), LRN layers 280->960->960->620, MoS latent and prior, decoder bias.
    lrn = 3 * 960 * 281 + 3 * 960 * 961 + 3 * 620 * 961
    mos = 620 * 15 * 280 + 15 * 280 + 620 * 15
    assert sum(p.numel() for p in model.parameters()) == 10000 * 280 + lrn + mos + 10000


@pytest.mark.parametrize("cell", ["lrn", "lstm"])
def test_mixture_of_softmaxes_gives_normalised_probabilities(cell):
    config = {**PAPER["ptb"], "emsize": 8, "nhid": 12, "nhidlast": 10, "n_experts": 3, "layer_norm": False}
    model = RNNLM(cell, 50, config).eval()
    inputs = torch.randint(0, 50, (5, 2))
    output, _, hidden = model.encode(inputs, None)
    log_probs = model.log_probs(output)
    assert log_probs.shape == (5, 2, 50)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(5, 2))
    nll, *_ = model(inputs[:-1], inputs[1:], None)
    expected = -log_probs[:-1].gather(-1, inputs[1:].unsqueeze(-1)).mean()
    # A prefix's outputs do not depend on later words (the model is causal).
    torch.testing.assert_close(nll, expected)
    assert len(hidden) == 3


def test_weight_drop_changes_training_outputs_only():
    config = {**PAPER["ptb"], "emsize": 8, "nhid": 8, "nhidlast": 8, "n_experts": 1, "dropout": 0.0,
              "dropouth": 0.0, "dropouti": 0.0, "dropoute": 0.0, "dropoutl": 0.0, "nlayers": 1,
              "wdrop": 0.5, "layer_norm": False}
    for cell in ("lrn", "lstm"):
        model = RNNLM(cell, 20, config)
        x = torch.randint(0, 20, (4, 3))
        model.eval()
        a, b = model.encode(x, None)[0], model.encode(x, None)[0]
        assert torch.equal(a, b)
        model.train()
        c = model.encode(x, None)[0]
        assert not torch.allclose(a, c)
        c.sum().backward()  # gradients reach the undropped weights
        assert model.rnns[0].rnn.weight_ih_l0.grad is not None


# -------------------------------------------------------------- training
def test_tiny_preset_learns_on_ptb(tmp_path):
    results = train("lm", ptb_dir(), "lrn", preset="tiny", out_dir=tmp_path / "r", progress=False)
    losses = json.loads((tmp_path / "r" / "log.json").read_text())["train_loss"]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0  # from ~9.2 (uniform) down
    assert results["metrics"]["test"]["ppl"] < 10000 / 4  # far better than uniform
    assert math.isclose(math.log(results["metrics"]["test"]["ppl"]), results["metrics"]["test"]["loss"])
    text = generate_from_run(tmp_path / "r", 20, seed=1)
    assert len(text.split()) + text.count("\n") >= 15


def test_resume_with_dropout_and_carried_state_is_exact(tmp_path):
    data_dir = write_corpus(tmp_path / "data", text=WORDS * 3)
    overrides = dict(dropout=0.2, dropouti=0.2, dropoute=0.1, dropoutl=0.1, eval_every=4, eval_tokens=200,
                     nlayers=2, bptt=5, batch_size=4)

    def run(out, steps, resume=False):
        return train("lm", data_dir, "lstm", preset="tiny", overrides=overrides, out_dir=out,
                     max_steps=steps, resume=resume, progress=False)

    run(tmp_path / "whole", 12)
    run(tmp_path / "split", 8)
    run(tmp_path / "split", 12, resume=True)
    whole = json.loads((tmp_path / "whole" / "log.json").read_text())["train_loss"]
    split = json.loads((tmp_path / "split" / "log.json").read_text())["train_loss"]
    assert split == whole and len(whole) == 12
