"""The published LRN results, for the report's "paper" columns.

Source: Biao Zhang and Rico Sennrich, "A Lightweight Recurrent Network for Sequence
Modeling", ACL 2019, pages 1538-1548 (arXiv:1905.13324), result tables as reproduced by
the authors in their repository github.com/bzhangGo/lrn (nli/README.md, doc/README.md,
mt/README.md, rc/README.md, ner/README.md, lm/README.md).  Only numbers printed there
are listed; where a table has no time column there is no time here.

Settings and units as published:
- times are seconds per training batch averaged over 1k steps (MT: 0.2k steps), on the
  authors' GPU; they are comparable between cells, not with this machine's times;
- nli: SNLI test accuracy (%), rows "Base" and "+LN" (BERT rows omitted);
- doc: test error rate (%) on four Zhang et al. (2015) datasets, none of which is AG News;
- mt: WMT14 En-De case-insensitive tokenized BLEU, newstest2014;
- rc: SQuAD v1.1 dev exact match / F1 (%), "Base" (no ELMo);
- ner: CoNLL-2003 English test F1 (%), mean of 5 runs;
- lm: test perplexity, "Base" (no finetuning / dynamic evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CITATION = ("Zhang & Sennrich, A Lightweight Recurrent Network for Sequence Modeling, "
            "ACL 2019 (arXiv:1905.13324); tables from github.com/bzhangGo/lrn")


@dataclass(frozen=True)
class PaperRow:
    task: str  # our task name
    dataset: str  # as the paper names it
    setting: str  # "Base", "+LN"
    cell: str  # lstm | gru | atr | sru | lrn | olrn
    params: str  # as printed, e.g. "8.36M"
    metrics: dict[str, float] = field(default_factory=dict)  # our metric names
    time_s: float | None = None  # seconds per training batch, authors' GPU


def _rows(task, dataset, setting, metric, table):
    """table: (cell, params, value, time or None) tuples."""
    return [PaperRow(task, dataset, setting, cell, params, {metric: value}, time)
            for cell, params, value, time in table]


_PARAMS_NLI = {"lstm": "8.36M", "gru": "6.41M", "atr": "2.87M", "sru": "5.48M", "lrn": "4.25M"}

PAPER_ROWS: list[PaperRow] = [
    *_rows("nli", "SNLI", "Base", "accuracy", [
        ("lstm", _PARAMS_NLI["lstm"], 84.27, 0.262), ("gru", _PARAMS_NLI["gru"], 85.71, 0.245),
        ("atr", _PARAMS_NLI["atr"], 84.88, 0.210), ("sru", _PARAMS_NLI["sru"], 84.28, 0.258),
        ("lrn", _PARAMS_NLI["lrn"], 84.88, 0.209)]),
    *_rows("nli", "SNLI", "+LN", "accuracy", [
        ("lstm", _PARAMS_NLI["lstm"], 86.03, 0.432), ("gru", _PARAMS_NLI["gru"], 86.05, 0.419),
        ("atr", _PARAMS_NLI["atr"], 85.81, 0.307), ("sru", _PARAMS_NLI["sru"], 85.32, 0.283),
        ("lrn", _PARAMS_NLI["lrn"], 85.06, 0.223)]),
    *_rows("doc", "AmaPolar", "Base", "error", [
        ("lstm", "227K", 4.37, 0.947), ("gru", "176K", 4.39, 0.948), ("atr", "74K", 4.78, 0.867),
        ("sru", "194K", 4.95, 0.919), ("lrn", "151K", 4.98, 0.731)]),
    *_rows("doc", "Yahoo", "Base", "error", [
        ("lstm", "227K", 24.62, 1.332), ("gru", "176K", 24.68, 1.242), ("atr", "74K", 25.33, 1.117),
        ("sru", "194K", 24.78, 1.394), ("lrn", "151K", 25.07, 1.038)]),
    *_rows("doc", "AmaFull", "Base", "error", [
        ("lstm", "227K", 37.22, 1.003), ("gru", "176K", 37.20, 0.982), ("atr", "74K", 38.54, 0.836),
        ("sru", "194K", 38.23, 0.907), ("lrn", "151K", 38.42, 0.788)]),
    *_rows("doc", "YelpPolar", "Base", "error", [
        ("lstm", "227K", 3.58, 1.362), ("gru", "176K", 3.47, 1.230), ("atr", "74K", 4.00, 1.124),
        ("sru", "194K", 3.99, 1.310), ("lrn", "151K", 3.98, 1.022)]),
    *_rows("mt", "WMT14 En-De", "Base", "bleu_tok_uncased", [
        ("gru", "206M", 26.28, 2.67), ("atr", "122M", 25.70, 1.33), ("sru", "170M", 25.91, 1.34),
        ("lrn", "143M", 26.26, 0.99), ("olrn", "164M", 26.73, 1.15)]),
    *[PaperRow("rc", "SQuAD v1.1", "Base", cell, params, {"em": em, "f1": f1})
      for cell, params, em, f1 in [
          ("lstm", "2.67M", 70.46, 78.98), ("gru", "2.31M", 70.41, 79.15),
          ("atr", "1.59M", 69.73, 78.70), ("sru", "2.44M", 69.27, 78.41),
          ("lrn", "2.14M", 70.11, 78.83)]],
    *_rows("ner", "CoNLL-2003", "Base", "f1", [
        ("lstm", "245K", 89.61, None), ("gru", "192K", 89.35, None), ("atr", "87K", 88.46, None),
        ("sru", "161K", 88.89, None), ("lrn", "129K", 88.56, None)]),
    *_rows("lm", "PTB", "Base", "ppl", [
        ("lstm", "22M", 63.78, None), ("gru", "17M", 69.09, None), ("atr", "9M", 66.24, None),
        ("sru", "13M", 69.64, None), ("lrn", "11M", 61.26, None)]),
    *_rows("lm", "WT2", "Base", "ppl", [
        ("lstm", "22M", 69.78, None), ("gru", "17M", 73.37, None), ("atr", "9M", 75.36, None),
        ("sru", "13M", 85.15, None), ("lrn", "11M", 69.91, None)]),
]

#: MT decoding time, milliseconds per sentence on newstest2014 (authors' GPU).
PAPER_MT_DECODE_MS = {"gru": 45.35, "atr": 34.40, "sru": 42.84, "lrn": 36.50, "olrn": 40.19}


def paper_rows(task: str, dataset: str | None = None) -> list[PaperRow]:
    """Published rows of ``task`` (and of ``dataset``, matched case-insensitively)."""
    return [r for r in PAPER_ROWS if r.task == task
            and (dataset is None or r.dataset.lower() == dataset.lower())]
