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
from lrn.tasks.lm import (ANCHOR_PUBLISHED, PAPER, PRESETS, RNNLM, batchify, find_split_files,
                          read_tokens)
from lrn.predict import generate
from lrn.tasks.text import log_unigram
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
    model = RNNLM("lrn", 10000, {**PAPER["ptb"], "layer_norm": False}, torch.zeros(10000))
    # Embedding 10000x280 (tied), LRN layers 280->960->960->620, MoS latent and prior, decoder bias.
    lrn = 3 * 960 * 281 + 3 * 960 * 961 + 3 * 620 * 961
    mos = 620 * 15 * 280 + 15 * 280 + 620 * 15
    assert sum(p.numel() for p in model.parameters()) == 10000 * 280 + lrn + mos + 10000


@pytest.mark.parametrize("cell", ["lrn", "lstm"])
def test_mixture_of_softmaxes_gives_normalised_probabilities(cell):
    config = {**PAPER["ptb"], "emsize": 8, "nhid": 12, "nhidlast": 10, "n_experts": 3, "layer_norm": False}
    model = RNNLM(cell, 50, config, torch.zeros(50)).eval()
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
        model = RNNLM(cell, 20, config, torch.zeros(20))
        x = torch.randint(0, 20, (4, 3))
        model.eval()
        a, b = model.encode(x, None)[0], model.encode(x, None)[0]
        assert torch.equal(a, b)
        model.train()
        c = model.encode(x, None)[0]
        assert not torch.allclose(a, c)
        c.sum().backward()  # gradients reach the undropped weights
        assert model.rnns[0].rnn.weight_ih_l0.grad is not None


@pytest.mark.parametrize("preset", ["small", "anchor"])
@pytest.mark.parametrize("cell", ["gru", "lrn"])
def test_softmax_starts_at_the_unigram_distribution(preset, cell):
    unigram = log_unigram(torch.tensor([0, 0, 0, 1, 2, 2, 5]), 30)
    config = {**PRESETS[preset], "emsize": 8, "nhid": 8, "nhidlast": 8, "layer_norm": False}
    model = RNNLM(cell, 30, config, unigram)
    assert torch.equal(model.decoder.bias.detach(), unigram)
    # With the hidden state's contribution removed, the model predicts the unigram.
    with torch.no_grad():
        model.decoder.weight.zero_()
    output, _, _ = model.encode(torch.randint(0, 30, (3, 2)), None)
    torch.testing.assert_close(model.log_probs(output), unigram.log_softmax(-1).expand(3, 2, 30))


def test_anchor_preset_is_refused_off_ptb(tmp_path):
    with pytest.raises(ValueError, match="no 'anchor' preset for wikitext-2: .* PTB only"):
        get_task("lm").config("anchor", write_corpus(tmp_path / "w", "wiki.{}.tokens"))


def test_anchor_preset_is_zarembas_small_lstm():
    config = {**PRESETS["anchor"], "layer_norm": False}
    assert {k: config[k] for k in ("nlayers", "nhid", "bptt", "batch_size", "max_epochs", "decay_start_epoch",
                                   "decay_factor", "dropout", "optimizer")} == dict(
        nlayers=2, nhid=200, bptt=20, batch_size=20, max_epochs=13, decay_start_epoch=4, decay_factor=0.5,
        dropout=0.0, optimizer="sgd")
    # lr 1 and clip 5 on a loss summed over 20 steps = lr 20 and clip 0.25 on our per-token mean
    assert (config["lr"], config["clip"]) == (20.0, 0.25)
    model = RNNLM("lstm", 10000, config, torch.zeros(10000))
    # untied: embedding 10000x200, two 200->200 LSTMs (two biases each), softmax 200x10000 + bias
    lstms = 2 * (4 * 200 * 400 + 8 * 200)
    assert sum(p.numel() for p in model.parameters()) == 10000 * 200 + lstms + 200 * 10000 + 10000
    assert model.decoder.weight is not model.embedding.weight
    weights = [p for n, p in model.named_parameters() if n != "decoder.bias"]
    assert all(float(p.detach().abs().max()) <= 0.1 for p in weights)
    assert ANCHOR_PUBLISHED["ptb"]["test ppl"] == 114.5


def test_linear_head_refuses_experts_and_mismatched_tying():
    config = {**PRESETS["anchor"], "layer_norm": False}
    with pytest.raises(ValueError, match="n_experts=1"):
        RNNLM("lrn", 20, {**config, "n_experts": 2}, torch.zeros(20))
    with pytest.raises(ValueError, match="tie_weights"):
        RNNLM("lrn", 20, {**config, "tie_weights": True, "nhidlast": 10}, torch.zeros(20))
    with pytest.raises(ValueError, match="'head'"):
        RNNLM("lrn", 20, {**config, "head": "big"}, torch.zeros(20))


# -------------------------------------------------------------- training
def test_tiny_preset_learns_on_ptb(tmp_path):
    results = train("lm", ptb_dir(), "lrn", preset="tiny", out_dir=tmp_path / "r", max_steps=120, progress=False)
    losses = json.loads((tmp_path / "r" / "log.json").read_text())["train_loss"]
    assert len(losses) == 120
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.2
    # The softmax starts at the unigram distribution; the context must take it below that.
    task = get_task("lm")
    config = resolve_config(task, "tiny", ptb_dir(), None, 0)
    data = task.load_data(ptb_dir(), config)
    test = data.test[:config["eval_tokens"]]
    unigram_ppl = math.exp(float(-log_unigram(data.train, len(data.vocab))[test].mean()))
    assert results["metrics"]["test"]["ppl"] < 0.97 * unigram_ppl
    assert math.isclose(math.log(results["metrics"]["test"]["ppl"]), results["metrics"]["test"]["loss"])
    text = generate(tmp_path / "r", 20, seed=1)
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
