"""Machine translation task: BPE, data errors, BLEU against hand-worked values, the task contract."""

import json
import math
from pathlib import Path

import pytest
import torch

from lrn.paths import shared_data_dir
from lrn.tasks.base import DataError
from lrn.tasks.mt import (
    SPECIALS,
    MTTask,
    bleu_scores,
    bpe_decode,
    bpe_encode,
    read_parallel,
    train_bpe,
    translate_ids,
)

EN = ["A man in a blue shirt is standing on a ladder.", "Two dogs play in the snow.",
      "A little girl climbs into a wooden playhouse.", "The men are cooking dinner outside.",
      "A woman with a red hat rides a bicycle.", "Children are playing football in a park."]
DE = ["Ein Mann in einem blauen Hemd steht auf einer Leiter.", "Zwei Hunde spielen im Schnee.",
      "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.", "Die Männer kochen draußen Abendessen.",
      "Eine Frau mit einem roten Hut fährt Fahrrad.", "Kinder spielen in einem Park Fußball."]


def write_corpus(directory: Path, n_repeat: int = 4) -> Path:
    for prefix, reps in (("train", n_repeat), ("val", 1), ("test_2016_flickr", 1)):
        (directory / f"{prefix}.en").write_text("\n".join(EN * reps) + "\n", encoding="utf-8")
        (directory / f"{prefix}.de").write_text("\n".join(DE * reps) + "\n", encoding="utf-8")
    return directory


# ---------------------------------------------------------------- BPE
def test_bpe_round_trip_and_special_ids():
    tokenizer = train_bpe(EN + DE, vocab_size=120)
    assert [tokenizer.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    unseen = ["Ein Hund spielt im Park.", "A man rides a blue bicycle in the snow."]
    ids = bpe_encode(tokenizer, EN + DE + unseen)
    assert all(len(x) > 0 and min(x) >= 4 for x in ids)  # no specials, no <unk>
    assert [bpe_decode(tokenizer, x) for x in ids] == EN + DE + unseen
    # Subwords, not whole sentences: a 120-entry vocabulary must split words.
    assert sum(map(len, ids)) > sum(len(s.split()) for s in EN + DE + unseen)


def test_bpe_unknown_character_becomes_unk():
    tokenizer = train_bpe(EN, vocab_size=80)
    ids = bpe_encode(tokenizer, ["A man \u4e2d."])[0]
    assert SPECIALS.index("<unk>") in ids


# ------------------------------------------------------------ data errors
def test_misaligned_files_name_file_and_line(tmp_path):
    (tmp_path / "train.en").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "train.de").write_text("x\ny\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.de:3: misaligned") as err:
        read_parallel(tmp_path / "train.en", tmp_path / "train.de")
    assert "train.en has 3" in str(err.value)


def test_blank_sentence_on_one_side_names_file_and_line(tmp_path):
    (tmp_path / "a.en").write_text("one\n\nthree\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.en:2: blank sentence"):
        read_parallel(tmp_path / "a.en", tmp_path / "a.de")


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.en: file not found"):
        read_parallel(tmp_path / "nothere.en", tmp_path / "nothere.de")
    (tmp_path / "b.en").write_bytes(b"fine\n\xff\xfe broken\n")
    (tmp_path / "b.de").write_text("gut\nkaputt\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.en:2: not valid UTF-8"):
        read_parallel(tmp_path / "b.en", tmp_path / "b.de")


def test_whitespace_is_normalised_and_double_blank_lines_dropped(tmp_path):
    (tmp_path / "c.en").write_text("  a   man \n\nthe end\n", encoding="utf-8")
    (tmp_path / "c.de").write_text("ein Mann\n \nSchluss\n", encoding="utf-8")
    assert read_parallel(tmp_path / "c.en", tmp_path / "c.de") == (["a man", "the end"],
                                                                   ["ein Mann", "Schluss"])


# ---------------------------------------------------------------- BLEU
def test_bleu_hand_worked_equal_lengths():
    # Precisions 6/7, 4/6, 2/5, 1/4; brevity penalty 1 (both 7 tokens).
    scores, signature = bleu_scores(["the cat sat on the mat today"], ["the cat sat on a mat today"])
    expected = 100 * (6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert scores["bleu"] == pytest.approx(expected, abs=1e-6)
    assert scores["bleu_tok_uncased"] == pytest.approx(expected, abs=1e-6)
    assert "tok:13a" in signature and "case:mixed" in signature


def test_bleu_hand_worked_brevity_penalty():
    # 6 hypothesis tokens against 7: precisions 5/6, 3/5, 2/4, 1/3; BP = exp(1 - 7/6).
    scores, _ = bleu_scores(["the cat sat on the mat"], ["the cat sat on a mat today"])
    expected = 100 * math.exp(1 - 7 / 6) * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert scores["bleu"] == pytest.approx(expected, abs=1e-6)


def test_bleu_case_and_tokenisation():
    # Cased: "The"/"Cat" miss; the uncased score equals the hand-worked lower-case value.
    hyp, ref = ["The Cat sat on the mat today."], ["the cat sat on a mat today."]
    scores, _ = bleu_scores(hyp, ref)
    # "today." is split into "today ." by both tokenisers: 8 tokens, precisions 7/8, 5/7, 3/6, 1/5.
    uncased = 100 * (7 / 8 * 5 / 7 * 3 / 6 * 1 / 5) ** 0.25  # = 50
    assert scores["bleu_tok_uncased"] == pytest.approx(uncased, abs=1e-6)
    assert scores["bleu"] < uncased - 10
    perfect, _ = bleu_scores(["Ein Mann, der läuft."], ["Ein Mann, der läuft."])
    assert perfect == {"bleu": pytest.approx(100.0), "bleu_tok_uncased": pytest.approx(100.0)}
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        bleu_scores(["a", "b"], ["a"])


# ------------------------------------------------------------ the task
def test_task_trains_evaluates_and_reloads_vocab(tmp_path):
    data_dir = write_corpus(tmp_path)
    task = MTTask()
    config = task.config("tiny", data_dir)
    config.update(train_subset=0, eval_subset=0, bpe_vocab_size=150, seed=0)
    data = task.load_data(data_dir, config)
    assert len(data.splits["train"].src) == 24 and len(data.splits["test"].src) == 6
    model = task.build_model(config, data, "lrn")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    device = torch.device("cpu")
    first = None
    for epoch in range(3):
        for batch in task.train_batches(data, config, epoch=epoch):
            loss, items = task.loss(model, batch, device)
            assert items == int((batch.tgt_out != 0).sum())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            first = loss.item() if first is None else first
    assert loss.item() < first
    results = task.evaluate(model, data, "test", config, device)
    assert set(results) == set(MTTask.metrics) | {"bleu_signature"}
    assert results["bleu_signature"].startswith("nrefs:1|case:mixed|")
    assert 0.0 <= results["bleu"] <= 100.0 and results["ppl"] > 1.0
    assert results["decode_ms_per_sent"] > 0.0
    # The saved vocabulary reproduces the same BPE ids.
    again = task.load_data(data_dir, config, vocab=task.vocab_state(data))
    assert again.splits["train"].src == data.splits["train"].src
    # Greedy decoding through the same path; outputs are valid BPE ids without specials.
    out = translate_ids(model, data.splits["test"].src, config, device, beam_size=1)
    assert len(out) == 6 and all(min(o, default=4) >= 4 for o in out)


def test_decoder_softmax_starts_at_the_target_unigram(tmp_path):
    data_dir = write_corpus(tmp_path)
    task = MTTask()
    config = dict(task.config("tiny", data_dir), train_subset=0, bpe_vocab_size=150, seed=0)
    data = task.load_data(data_dir, config)
    model = task.build_model(config, data, "gru")
    V = data.tokenizer.get_vocab_size()
    counts = torch.zeros(V)
    for batch in task.train_batches(data, config, epoch=0):  # every target the loss sees
        counts += torch.bincount(batch.tgt_out[batch.tgt_out != 0], minlength=V)
    expected = (counts.clamp_min(0.5) / counts.clamp_min(0.5).sum()).log()
    torch.testing.assert_close(model.out_bias.detach(), expected)
    assert int(counts[SPECIALS.index("</s>")]) == len(data.splits["train"].tgt)


def test_unknown_and_anchor_presets_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="no 'anchor' preset: the LRN paper's WMT14"):
        MTTask().config("anchor", tmp_path)


def test_train_batches_shard_and_depend_on_epoch(tmp_path):
    data_dir = write_corpus(tmp_path, n_repeat=8)
    task = MTTask()
    config = dict(task.config("tiny", data_dir), train_subset=0, bpe_vocab_size=150, seed=0,
                  batch_size=5)
    data = task.load_data(data_dir, config)

    def order(**kw):
        return [b.src.t().tolist() for b in task.train_batches(data, config, **kw)]

    assert order(epoch=0) == order(epoch=0) and order(epoch=0) != order(epoch=1)
    shards = order(epoch=0, rank=0, world_size=2) + order(epoch=0, rank=1, world_size=2)
    assert sorted(map(str, shards)) == sorted(map(str, order(epoch=0)))


def test_extra_test_sets_are_scored_on_test(tmp_path):
    (tmp_path / "m30k").mkdir()
    data_dir = write_corpus(tmp_path / "m30k")
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "nt.en").write_text("Two dogs play.\n", encoding="utf-8")
    (tmp_path / "news" / "nt.de").write_text("Zwei Hunde spielen.\n", encoding="utf-8")
    task = MTTask()
    config = dict(task.config("tiny", data_dir), train_subset=0, bpe_vocab_size=150, seed=0,
                  extra_test="../news/nt")
    data = task.load_data(data_dir, config)
    model = task.build_model(config, data, "gru")
    results = task.evaluate(model, data, "test", config, torch.device("cpu"))
    assert {"bleu", "nt_bleu", "nt_bleu_tok_uncased", "nt_decode_ms_per_sent"} <= set(results)
    assert "nt_bleu" not in task.evaluate(model, data, "valid", config, torch.device("cpu"))


def test_extra_test_set_named_like_a_split_is_refused(tmp_path):
    data_dir = write_corpus(tmp_path)
    task = MTTask()
    config = dict(task.config("tiny", data_dir), extra_test="other/test")
    with pytest.raises(ValueError, match="extra_test: 'other/test' would be named like"):
        task.load_data(data_dir, config)


def test_unknown_preset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        MTTask().config("huge", tmp_path)


def test_real_multi30k_tiny_preset_loads():
    root = shared_data_dir()
    if root is None or not (root / "mt" / "multi30k" / "train.en").is_file():
        pytest.skip("Multi30k: ../shared/data not found")
    data_dir = root / "mt" / "multi30k"
    task = MTTask()
    config = dict(task.config("tiny", data_dir), seed=0)
    data = task.load_data(data_dir, config)
    assert len(data.splits["train"].src) <= 300 and len(data.splits["valid"].src) == 20
    assert data.splits["test"].tgt_text[0].startswith("Ein Mann mit einem orangefarbenen Hut")


def test_translate_command_on_a_trained_run(tmp_path, capsys, monkeypatch):
    import io

    from lrn.cli import main
    from lrn.train import train

    (tmp_path / "data").mkdir()
    data_dir = write_corpus(tmp_path / "data")
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "nt.en").write_text("Two dogs play.\n", encoding="utf-8")
    (tmp_path / "news" / "nt.de").write_text("Zwei Hunde spielen.\n", encoding="utf-8")
    run = tmp_path / "run"
    train("mt", data_dir, "olrn", preset="tiny", out_dir=run, max_steps=2, progress=False,
          overrides={"train_subset": 0, "bpe_vocab_size": 150, "eval_subset": 2,
                     "extra_test": "../news/nt"})
    # results.json keeps what the task reports beyond its declared metrics.
    test = json.loads((run / "results.json").read_text())["metrics"]["test"]
    assert {"nt_bleu", "nt_decode_ms_per_sent", "bleu_signature", "nt_bleu_signature"} <= set(test)
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("Two dogs play in the snow.\nA woman rides.\n"))
    assert main(["translate", str(run), "--no-progress"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    (tmp_path / "in.txt").write_text("Two dogs.\n", encoding="utf-8")
    assert main(["translate", str(run), "--input", str(tmp_path / "in.txt"), "--beam", "1",
                 "--output", str(tmp_path / "out.txt"), "--no-progress"]) == 0
    assert len((tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()) == 1
    assert main(["translate", str(run), "--beam", "0"]) == 2
    assert "--beam must be >= 1" in capsys.readouterr().err
    assert main(["translate", str(tmp_path / "nothing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
