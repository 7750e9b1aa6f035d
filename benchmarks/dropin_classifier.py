"""Per-epoch learning of LRN as a drop-in for nn.GRU in a packed bidirectional text classifier.

    python benchmarks/dropin_classifier.py --out benchmarks/cpu_dropin_classifier.json \
        --markdown benchmarks/cpu_dropin_classifier.md --plot benchmarks/cpu_dropin_classifier.png

The classifier of benchmarks/real_programs.py (embedding 128, 2 bidirectional layers of 256,
dropout 0.5, the last layer's final states into the classes; Adam 1e-3, batch 32) on AG
News World vs Sports: the first 1,280 such articles of the shared training file, and every
World or Sports article of the test file.  Test accuracy after every epoch, per variant and
seed:

- gru: nn.GRU, torch's initialisation;
- lrn: lrn.LRN with its defaults (the authors' initialisation: Xavier weights, zero biases);
- lrn forget bias 1: the same, with the forget gate's bias (the q block of ``bias_ih``)
  started at 1, so that f = sigma(q - h) starts near 0.73 instead of 0.5;
- lrn mean-pooled: the same LRN, read out by the mean of the last layer's outputs over the
  valid steps instead of its final states (a diagnosis: does the final state forget the
  start of the article?).

After the last epoch, each run also measures where in the article the prediction comes from:
the norm of the gradient of the logit margin with respect to each token's embedding, as a
share of the article's total, summed over fifths of the article (the trained model, dropout
off, the first 512 test articles).  A readout that forgets shows up as little share in the
middle fifths, which neither direction's final state has seen recently.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from tqdm import tqdm

from lrn.bench.machine import machine_info
from lrn.bench.report import emit
from real_programs import Classifier

VARIANTS = ("gru", "lrn", "lrn forget bias 1", "lrn mean-pooled")
CLASSES = {"1": 0, "2": 1}  # World, Sports
MAX_TOKENS = 100
FIFTHS = 5


def read_articles(path: Path, limit: int | None) -> list[tuple[list[str], int]]:
    articles = []
    with open(path, newline="", encoding="utf-8") as f:
        for label, title, description in csv.reader(f):
            if label in CLASSES:
                words = re.findall(r"[a-z0-9']+", f"{title} {description}".lower())[:MAX_TOKENS]
                articles.append((words or ["<empty>"], CLASSES[label]))
                if limit is not None and len(articles) == limit:
                    break
    return articles


def batches(articles, vocab: dict[str, int], size: int, generator: torch.Generator | None):
    order = torch.randperm(len(articles), generator=generator) if generator is not None else range(len(articles))
    order = list(order)
    for start in range(0, len(order), size):
        chunk = [articles[int(i)] for i in order[start:start + size]]
        lengths = torch.tensor([len(words) for words, _ in chunk])
        tokens = torch.zeros(int(lengths.max()), len(chunk), dtype=torch.long)  # (T, B)
        for b, (words, _) in enumerate(chunk):
            tokens[:len(words), b] = torch.tensor([vocab.get(w, 1) for w in words])
        yield tokens, lengths, torch.tensor([label for _, label in chunk])


class MeanPooled(Classifier):
    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.dropout(self.embedding(tokens)), lengths, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.rnn(packed)[0])  # (T, B, 2H), 0 at padding
        return self.out(self.dropout(out.sum(0) / lengths.unsqueeze(1)))


def build(variant: str, vocab_size: int) -> torch.nn.Module:
    if variant == "gru":
        return Classifier("gru", vocab=vocab_size, classes=2)
    if variant == "lrn mean-pooled":
        return MeanPooled("lrn", vocab=vocab_size, classes=2)
    model = Classifier("lrn", vocab=vocab_size, classes=2)
    if variant == "lrn forget bias 1":
        H = model.rnn.hidden_size
        with torch.no_grad():
            for name, param in model.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    param[:H] = 1.0  # [q; k; v] blocks: q is the forget gate's input
    return model


def accuracy(model, articles, vocab) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for tokens, lengths, labels in batches(articles, vocab, 256, None):
            right += int((model(tokens, lengths).argmax(-1) == labels).sum())
    model.train()
    return 100.0 * right / len(articles)


def position_influence(model, articles, vocab) -> list[float]:
    """Share of the logit margin's gradient norm from each fifth of the articles (mean)."""
    model.eval()
    embedded = []

    def keep_gradient(_module, _inputs, out: torch.Tensor) -> None:
        out.retain_grad()
        embedded.append(out)  # (T, B, E)

    hook = model.embedding.register_forward_hook(keep_gradient)
    shares = torch.zeros(FIFTHS)
    for tokens, lengths, _ in batches(articles, vocab, 256, None):
        embedded.clear()
        logits = model(tokens, lengths)
        (logits[:, 1] - logits[:, 0]).sum().backward()
        norms = embedded[0].grad.norm(dim=-1)  # (T, B), 0 at padding
        for b, n in enumerate(lengths.tolist()):
            fifth = torch.arange(n) * FIFTHS // n  # the fifth of the article each token lies in
            shares += torch.zeros(FIFTHS).index_add_(0, fifth, norms[:n, b]) / norms[:n, b].sum()
    hook.remove()
    model.zero_grad(set_to_none=True)
    model.train()
    return (shares / len(articles)).tolist()


def train(variant: str, seed: int, train_set, test_set, vocab, epochs: int) -> dict:
    torch.manual_seed(seed)
    model = build(variant, len(vocab) + 2)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(epochs):
        for tokens, lengths, labels in batches(train_set, vocab, 32, generator):
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(model(tokens, lengths), labels).backward()
            optimiser.step()
        curve.append(accuracy(model, test_set, vocab))
    return {"test_accuracy": curve, "influence_by_fifth": position_influence(model, test_set[:512], vocab)}


def run(data: Path, train_size: int, epochs: int, seeds: list[int]) -> dict:
    train_set = read_articles(data / "train_first10429.csv", train_size)
    test_set = read_articles(data / "test.csv", None)
    counts = Counter(w for words, _ in train_set for w in words)
    vocab = {w: i + 2 for i, w in enumerate(sorted(counts))}  # 0 padding, 1 unknown
    runs = []
    for seed in seeds:
        for variant in tqdm(VARIANTS, desc=f"seed {seed}"):
            runs.append({"variant": variant, "seed": seed, **train(variant, seed, train_set, test_set, vocab, epochs)})
    return {"machine": machine_info(torch.device("cpu")),
            "config": {"train_size": len(train_set), "test_size": len(test_set), "epochs": epochs, "seeds": seeds,
                       "vocab": len(vocab), "torch_threads": torch.get_num_threads()},
            "runs": runs}


def summary(report: dict) -> dict[str, list[tuple[float, float]]]:
    """variant -> per epoch (mean, std) of test accuracy over seeds."""
    out = {}
    for variant in VARIANTS:
        curves = [r["test_accuracy"] for r in report["runs"] if r["variant"] == variant]
        out[variant] = [(statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for v in zip(*curves)]
    return out


def influence_summary(report: dict) -> dict[str, list[float]]:
    """variant -> mean share (%) of the prediction's gradient from each fifth of the article."""
    return {variant: [100.0 * statistics.mean(v) for v in
                      zip(*(r["influence_by_fifth"] for r in report["runs"] if r["variant"] == variant))]
            for variant in VARIANTS}


def markdown(report: dict) -> str:
    c = report["config"]
    table = summary(report)
    epochs = range(1, c["epochs"] + 1)
    lines = [f"AG News World vs Sports: {c['train_size']} training and {c['test_size']} test articles; test "
             f"accuracy (%) after each epoch, mean ± std over seeds {c['seeds']}.", "",
             "| variant | " + " | ".join(f"epoch {e}" for e in epochs) + " |", "|---|" + "---:|" * len(epochs)]
    for variant, cells in table.items():
        lines.append(f"| {variant} | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in cells) + " |")
    lines += ["", "Where the trained model's prediction comes from: share (%) of the logit margin's gradient "
              "norm over the token embeddings, per fifth of the article (mean over seeds, first 512 test "
              "articles).", "", "| variant | " + " | ".join(f"fifth {i}" for i in range(1, FIFTHS + 1)) + " |",
              "|---|" + "---:|" * FIFTHS]
    for variant, shares in influence_summary(report).items():
        lines.append(f"| {variant} | " + " | ".join(f"{s:.1f}" for s in shares) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, cells in summary(report).items():
        epochs = range(1, len(cells) + 1)
        means = [m for m, _ in cells]
        ax.errorbar(epochs, means, yerr=[s for _, s in cells], label=variant, capsize=3, marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("packed bidirectional classifier, AG News World vs Sports")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/doc/ag_news"), help="(default %(default)s)")
    parser.add_argument("--train-size", type=int, default=1280, help="(default %(default)s)")
    parser.add_argument("--epochs", type=int, default=6, help="(default %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="(default %(default)s)")
    parser.add_argument("--out", help="JSON report")
    parser.add_argument("--markdown", help="markdown table")
    parser.add_argument("--plot", type=Path, help="PNG of the curves")
    args = parser.parse_args()
    report = run(args.data, args.train_size, args.epochs, [int(s) for s in args.seeds.split(",")])
    emit(report, markdown(report), args.out, args.markdown)
    if args.plot:
        plot(report, args.plot)


if __name__ == "__main__":
    main()
