"""Word-level language modelling (PTB, WikiText-2): the paper's LM experiment.

Data: a directory in one of three layouts, one sentence (or paragraph) per line,
``<eos>`` appended to every line as in Mikolov et al. / AWD-LSTM / MoS:
    ptb.{train,valid,test}.txt        (Mikolov's PTB)
    wiki.{train,valid,test}.tokens    (WikiText-2)
    {train,valid,test}.txt            (anything else)
The vocabulary is built from the training split; other words map to ``<unk>``.

Model (the LRN authors' setup, taken from MoS, Yang et al. 2018): embedding with
embedding dropout, locked (variational) dropout on the input, between layers and on
the output, N recurrent layers of the chosen cell (the last one of its own size),
DropConnect on the recurrent layers' weight matrices, a Mixture-of-Softmaxes head
whose output embedding is tied to the input one (one expert = a tanh projection and
a tied softmax), truncated BPTT carrying the state across batches, AR/TAR
regularisation.  Metric: perplexity.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lrn.modules import detach_state
from lrn.tasks.base import DataError, Task, register
from lrn.tasks.text import UNK, Vocab, log_unigram, make_rnn_from_spec, text_lines

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
#: (dataset name, file name pattern) of each recognised layout, tried in this order
LAYOUTS = (("ptb", "ptb.{}.txt"), ("wikitext-2", "wiki.{}.tokens"), ("plain", "{}.txt"))

#: model keys every preset shares unless it says otherwise: the MoS head (a tanh projection
#: before the softmax), tied embeddings, Xavier/uniform(-0.1, 0.1) init as in MoS
_HEAD = dict(head="mos", tie_weights=True, init_range=None)
_SMALL_MODEL = dict(_HEAD, emsize=256, nhid=256, nhidlast=256, nlayers=2, n_experts=1, dropout=0.3,
                    dropouth=0.2, dropouti=0.3, dropoute=0.05, dropoutl=0.0, wdrop=0.0,
                    alpha=0.0, beta=0.0)
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: a few dozen steps on the start of the corpus, evaluation on the first tokens
    "tiny": dict(_HEAD, emsize=32, nhid=32, nhidlast=32, nlayers=1, n_experts=1, dropout=0.0, dropouth=0.0,
                 dropouti=0.0, dropoute=0.0, dropoutl=0.0, wdrop=0.0, alpha=0.0, beta=0.0,
                 bptt=16, variable_bptt=False, max_seq_len_delta=0, batch_size=8, eval_batch_size=8,
                 test_batch_size=8, eval_tokens=4000, optimizer="adam", lr=3e-3, clip=1.0,
                 weight_decay=0.0, max_steps=40, eval_every=20),
    # minutes on 2 CPU cores: a 2-layer tied model, Adam, validation every 300 steps
    "small": dict(_SMALL_MODEL, bptt=35, variable_bptt=False, max_seq_len_delta=0, batch_size=20,
                  eval_batch_size=10, test_batch_size=10, eval_tokens=None, optimizer="adam", lr=2e-3,
                  clip=0.25, weight_decay=1.2e-6, max_steps=6000, eval_every=300,
                  lr_schedule="plateau", decay_factor=0.25, patience=1),
    # The published baseline this task is anchored to: Zaremba et al. (2014), "Recurrent
    # neural network regularization", the non-regularised "small" LSTM (valid 120.7, test
    # 114.5 on PTB): 2x200, untied softmax straight on the last layer, no dropout, every
    # weight U(-0.1, 0.1), SGD lr 1 for 4 epochs then halved every epoch, 13 epochs, BPTT 20,
    # batch 20, gradient norm clipped at 5.  Zaremba's loss is the sum over the 20 steps of
    # the batch-mean NLL; ours is the mean over tokens, 20x smaller, so lr 1 and clip 5 there
    # are lr 20 and clip 0.25 here (as in pytorch/examples' word_language_model).  Test as
    # in the authors' code: batch 1, the state carried through the whole split.
    "anchor": dict(head="linear", tie_weights=False, init_range=0.1, emsize=200, nhid=200, nhidlast=200,
                   nlayers=2, n_experts=1, dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0,
                   dropoutl=0.0, wdrop=0.0, alpha=0.0, beta=0.0, bptt=20, variable_bptt=False,
                   max_seq_len_delta=0, batch_size=20, eval_batch_size=20, test_batch_size=1,
                   eval_tokens=None, optimizer="sgd", lr=20.0, clip=0.25, weight_decay=0.0,
                   max_epochs=13, max_steps=None, eval_every=0, lr_schedule="epoch_decay",
                   decay_start_epoch=4, decay_factor=0.5),
}
#: the published numbers of the anchor preset's LSTM (Zaremba et al. 2014, Table 1, "small")
ANCHOR_PUBLISHED = {"ptb": {"valid ppl": 120.7, "test ppl": 114.5,
                            "source": "Zaremba et al. 2014, Recurrent neural network regularization, "
                                      "Table 1 (non-regularized LSTM, small)"}}
#: the LRN authors' settings (bzhangGo/lrn, lm/README.md; the rest are MoS's defaults):
#: 3 layers, NT-ASGD, 1000 epochs, validation every epoch, test with batch size 1.
_PAPER_COMMON = dict(_HEAD, nlayers=3, n_experts=15, dropout=0.4, dropoute=0.1, dropoutl=0.29, wdrop=0.5,
                     alpha=2.0, beta=1.0, bptt=70, variable_bptt=True, eval_batch_size=10,
                     test_batch_size=1, eval_tokens=None, optimizer="nt-asgd", nonmono=5, clip=0.25,
                     weight_decay=1.2e-6, max_epochs=1000, max_steps=None, eval_every=0)
PAPER: dict[str, dict[str, Any]] = {
    "ptb": dict(_PAPER_COMMON, emsize=280, nhid=960, nhidlast=620, dropouth=0.225, dropouti=0.4,
                batch_size=12, lr=10.0, max_seq_len_delta=40),
    "wikitext-2": dict(_PAPER_COMMON, emsize=300, nhid=1150, nhidlast=650, dropouth=0.2, dropouti=0.55,
                       batch_size=15, lr=15.0, max_seq_len_delta=20),
}


# ------------------------------------------------------------------ data
def find_split_files(data_dir: Path) -> tuple[str, dict[str, Path]]:
    """(dataset name, {split: path}) of the first layout whose training file exists."""
    for dataset, pattern in LAYOUTS:
        files = {s: Path(data_dir) / pattern.format(s) for s in SPLITS}
        if files["train"].is_file():
            for split, path in files.items():
                if not path.is_file():
                    raise DataError(f"missing {split} split", path)
            return dataset, files
    expected = ", ".join(p.format("{train,valid,test}") for _, p in LAYOUTS)
    raise DataError(f"no language-modelling data here: expected {expected}", data_dir)


def read_tokens(path: Path) -> list[str]:
    """Every word of ``path``, with ``<eos>`` after each line."""
    tokens: list[str] = []
    for number, line in text_lines(path):
        if "\x00" in line:
            raise DataError("NUL byte in a text line (binary file?)", path, number)
        tokens.extend(line.split())
        tokens.append(EOS)
    if not any(t != EOS for t in tokens):
        raise DataError("empty split: no words", path)
    return tokens


@dataclass
class LMData:
    dataset: str          # "ptb" | "wikitext-2" | "plain"; "" for vocabularies only
    vocab: Vocab
    train: torch.Tensor   # (N,) token ids of the whole split
    valid: torch.Tensor
    test: torch.Tensor


@dataclass
class LMBatch:
    inputs: torch.Tensor   # (T, B)
    targets: torch.Tensor  # (T, B): inputs shifted by one token
    lr_scale: float = 1.0  # the BPTT length relative to the configured one


def batchify(ids: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stream as ``batch_size`` contiguous columns: inputs and next-token targets, (L, B)."""
    columns = (ids.numel() - 1) // batch_size
    if columns < 1:
        raise DataError(f"split of {ids.numel()} tokens is too short for batch size {batch_size}")
    inputs = ids[:columns * batch_size].view(batch_size, columns).t().contiguous()
    targets = ids[1:columns * batch_size + 1].view(batch_size, columns).t().contiguous()
    return inputs, targets


# ----------------------------------------------------------------- model
def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout: one mask per sequence, shared over time.  x (T, B, H)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1.0 - p) / (1.0 - p)
    return x * mask


class RNNLM(nn.Module):
    """Embedding -> recurrent layers -> softmax head: the MoS head (a tanh projection per
    expert, tied to the embedding) or, with ``head="linear"``, a plain softmax layer on the
    last recurrent layer (Zaremba et al.)."""

    def __init__(self, cell: str, vocab_size: int, config: dict[str, Any], unigram: torch.Tensor | None):
        super().__init__()
        self.c = {k: config[k] for k in ("dropout", "dropouth", "dropouti", "dropoute", "dropoutl", "wdrop")}
        emsize, nlayers, self.n_experts = int(config["emsize"]), int(config["nlayers"]), int(config["n_experts"])
        sizes = [emsize] + [int(config["nhid"])] * (nlayers - 1) + [int(config["nhidlast"])]
        self.head = config["head"]
        if self.head not in ("mos", "linear"):
            raise ValueError(f"setting 'head' must be 'mos' or 'linear', got {self.head!r}")
        if self.head == "linear" and self.n_experts != 1:
            raise ValueError("setting 'head'='linear' has one softmax: set n_experts=1")
        self.embedding = nn.Embedding(vocab_size, emsize)
        self.rnns = nn.ModuleList(
            make_rnn_from_spec(cell, sizes[i], sizes[i + 1], layer_norm=bool(config["layer_norm"]))
            for i in range(nlayers))
        softmax_in = emsize if self.head == "mos" else sizes[-1]
        if self.head == "mos":
            self.latent = nn.Linear(sizes[-1], self.n_experts * emsize)
            self.prior = nn.Linear(sizes[-1], self.n_experts, bias=False) if self.n_experts > 1 else None
        self.decoder = nn.Linear(softmax_in, vocab_size)
        if config["tie_weights"]:
            if softmax_in != emsize:
                raise ValueError(f"tie_weights needs the softmax input ({softmax_in}) to equal emsize ({emsize})")
            self.decoder.weight = self.embedding.weight  # tied (Press & Wolf 2017; Inan et al. 2017)
        if config["init_range"]:  # Zaremba et al.: every parameter U(-r, r)
            r = float(config["init_range"])
            for p in self.parameters():
                nn.init.uniform_(p, -r, r)
        else:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        # The softmax starts at the unigram distribution.  From a zero bias, Adam's first
        # steps pull every context toward the unigram through the recurrent weights, which
        # saturates cells whose h_{t-1} enters through a matrix (nn.LSTM/nn.GRU stayed at
        # the unigram plateau); starting there removes that pull for every cell alike.
        if unigram is not None:  # None: a trained model about to load its checkpoint
            with torch.no_grad():
                self.decoder.bias.copy_(unigram)
        #: AR/TAR weights, read by the task's loss (which may only see a DDP wrapper)
        self.regularisation = {"alpha": float(config["alpha"]), "beta": float(config["beta"])}

    def _run_layer(self, layer: int, x: torch.Tensor, state):
        rnn = self.rnns[layer]
        if state is not None:  # under bf16 autocast the carried state and x may differ in dtype
            state = _cast(state, dtype=x.dtype)
        p = self.c["wdrop"]
        if not (self.training and p > 0):
            return rnn(x, state)
        # DropConnect on every weight matrix of the layer, as the authors' WeightDrop does.
        dropped = {name: F.dropout(w, p, training=True) for name, w in rnn.named_parameters() if w.dim() >= 2}
        return functional_call(rnn, dropped, (x, state), strict=False)

    def encode(self, inputs: torch.Tensor, hidden: list | None):
        """inputs (T, B) -> (output (T, B, nhidlast) after output dropout, last layer's raw
        output, new hidden state per layer)."""
        weight = self.embedding.weight
        if self.training and self.c["dropoute"] > 0:  # drop whole words of the vocabulary
            p = self.c["dropoute"]
            weight = weight * weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        x = locked_dropout(F.embedding(inputs, weight), self.c["dropouti"], self.training)  # (T, B, E)
        new_hidden = []
        for layer in range(len(self.rnns)):
            x, state = self._run_layer(layer, x, None if hidden is None else hidden[layer])
            new_hidden.append(state)
            raw = x
            if layer < len(self.rnns) - 1:
                x = locked_dropout(x, self.c["dropouth"], self.training)
        return locked_dropout(x, self.c["dropout"], self.training), raw, new_hidden

    def _expert_logits(self, output: torch.Tensor) -> torch.Tensor:
        """(T, B, H) -> each expert's logits (T, B, K, V); K = 1 for the linear head."""
        T, B, _ = output.shape
        if self.head == "linear":
            return self.decoder(output).float().unsqueeze(2)
        latent = torch.tanh(self.latent(output))  # (T, B, K*E)
        latent = locked_dropout(latent, self.c["dropoutl"], self.training)
        return self.decoder(latent.view(T, B, self.n_experts, -1)).float()

    def log_probs(self, output: torch.Tensor) -> torch.Tensor:
        """(T, B, H) -> next-word log-probabilities (T, B, V)."""
        logits = self._expert_logits(output)  # (T, B, K, V)
        if self.n_experts == 1:
            return F.log_softmax(logits.squeeze(2), -1)
        log_prior = F.log_softmax(self.prior(output).float(), -1)  # (T, B, K)
        return torch.logsumexp(F.log_softmax(logits, -1) + log_prior.unsqueeze(-1), dim=2)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, hidden: list | None):
        """Mean next-word NLL, the AR/TAR inputs (dropped and raw last-layer outputs), new state."""
        output, raw, new_hidden = self.encode(inputs, hidden)
        if self.n_experts == 1:  # one expert: cross-entropy straight from the logits
            nll = F.cross_entropy(self._expert_logits(output).squeeze(2).flatten(0, 1), targets.flatten())
        else:
            nll = F.nll_loss(self.log_probs(output).flatten(0, 1), targets.flatten())
        return nll, output, raw, new_hidden


# ------------------------------------------------------------------ task
@register
class LanguageModelTask(Task):
    name = "lm"
    metrics = ("ppl", "loss")
    primary_metric = "ppl"
    higher_is_better = False

    def __init__(self) -> None:
        self.hidden: list | None = None  # truncated-BPTT state carried across training batches

    def config(self, preset: str, data_dir: Path | None) -> dict[str, Any]:
        dataset = find_split_files(data_dir)[0] if data_dir is not None else "plain"
        if preset == "paper":
            base = PAPER["wikitext-2" if dataset == "wikitext-2" else "ptb"]
        elif preset == "small" and dataset == "wikitext-2":
            # A validation pass over WikiText-2 costs ~3x PTB's (vocabulary 33k, 217k words).
            base = dict(PRESETS["small"], eval_every=1000)
        elif preset == "anchor" and dataset != "ptb":
            raise ValueError(f"lm: no 'anchor' preset for {dataset}: its published baseline (Zaremba et al. "
                             "2014, small) is reported on PTB only")
        elif preset in PRESETS:
            base = PRESETS[preset]
        else:
            raise ValueError(f"unknown preset {preset!r} for lm")
        return dict(base, layer_norm=False)

    def load_data(self, data_dir: Path, config: dict[str, Any], vocab: dict | None = None) -> LMData:
        dataset, files = find_split_files(data_dir)
        tokens = {split: read_tokens(path) for split, path in files.items()}
        v = Vocab.from_state(vocab) if vocab else Vocab.build(tokens["train"], specials=(UNK, EOS))
        ids = {split: torch.tensor(v.encode(toks), dtype=torch.long) for split, toks in tokens.items()}
        return LMData(dataset, v, ids["train"], ids["valid"], ids["test"])

    def vocab_data(self, config: dict[str, Any], vocab: dict) -> LMData:
        empty = torch.zeros(0, dtype=torch.long)
        return LMData("", Vocab.from_state(vocab), empty, empty, empty)

    def vocab_state(self, data: LMData) -> dict:
        return data.vocab.state_dict()

    def build_model(self, config: dict[str, Any], data: LMData, cell: str) -> nn.Module:
        unigram = log_unigram(data.train, len(data.vocab)) if data.train.numel() else None
        return RNNLM(cell, len(data.vocab), config, unigram)

    def train_batches(self, data: LMData, config: dict[str, Any], *, epoch: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[LMBatch]:
        # Rank r trains on the r-th contiguous shard; equal shards give equal batch counts.
        shard = (data.train.numel() - 1) // world_size
        inputs, targets = batchify(data.train[rank * shard:(rank + 1) * shard + 1], int(config["batch_size"]))
        bptt = int(config["bptt"])
        rng = random.Random(int(config["seed"]) * 1_000_003 + epoch)  # same lengths on every rank
        self.hidden = None
        start = 0
        while start < inputs.shape[0]:
            length = bptt
            if config["variable_bptt"]:  # AWD-LSTM: mostly bptt, sometimes half, with noise
                base = bptt if rng.random() < 0.95 else bptt / 2
                length = min(max(5, int(rng.gauss(base, 5))), bptt + int(config["max_seq_len_delta"]))
            end = min(start + length, inputs.shape[0])
            yield LMBatch(inputs[start:end], targets[start:end], (end - start) / bptt)
            start = end

    def lr_scale(self, batch: LMBatch) -> float:
        return batch.lr_scale

    def loss(self, model: nn.Module, batch: LMBatch, device: torch.device) -> tuple[torch.Tensor, int]:
        inputs, targets = batch.inputs.to(device), batch.targets.to(device)
        hidden = None if self.hidden is None else [_cast(h, device=device) for h in self.hidden]
        nll, output, raw, new_hidden = model(inputs, targets, hidden)
        self.hidden = [detach_state(h) for h in new_hidden]
        weights = (model.module if hasattr(model, "module") else model).regularisation
        loss = nll
        if weights["alpha"]:  # activation regularisation (AR)
            loss = loss + weights["alpha"] * output.float().pow(2).mean()
        if weights["beta"] and raw.shape[0] > 1:  # temporal activation regularisation (TAR)
            loss = loss + weights["beta"] * (raw[1:] - raw[:-1]).float().pow(2).mean()
        return loss, targets.numel()

    def carry_state(self) -> dict[str, torch.Tensor]:
        """The carried state as "<layer>.<part>.<parts>" -> tensor (an LSTM layer has 2 parts)."""
        flat: dict[str, torch.Tensor] = {}
        for layer, state in enumerate(self.hidden or []):
            parts = state if isinstance(state, tuple) else (state,)
            for j, part in enumerate(parts):
                flat[f"{layer}.{j}.{len(parts)}"] = part.detach().cpu()
        return flat

    def load_carry_state(self, state: dict[str, torch.Tensor]) -> None:
        layers: dict[int, list[torch.Tensor]] = {}
        for key, tensor in state.items():
            layer, j, parts = (int(x) for x in key.split("."))
            layers.setdefault(layer, [None] * parts)[j] = tensor
        self.hidden = [tuple(parts) if len(parts) > 1 else parts[0]
                       for _, parts in sorted(layers.items())] or None

    def evaluate(self, model: nn.Module, data: LMData, split: str, config: dict[str, Any],
                 device: torch.device) -> dict[str, float]:
        ids = getattr(data, split)
        if config.get("eval_tokens"):
            ids = ids[: int(config["eval_tokens"]) + 1]
        batch_size = int(config["test_batch_size" if split == "test" else "eval_batch_size"])
        inputs, targets = batchify(ids, batch_size)
        model.eval()
        total, count, hidden = 0.0, 0, None
        with torch.no_grad():
            for start in self.progress(range(0, inputs.shape[0], int(config["bptt"])), f"{split} ppl"):
                x = inputs[start:start + int(config["bptt"])].to(device)
                y = targets[start:start + int(config["bptt"])].to(device)
                nll, _, _, hidden = model(x, y, hidden)
                total += float(nll) * y.numel()
                count += y.numel()
        loss = total / count
        return {"ppl": math.exp(min(loss, 700.0)), "loss": loss}


def _cast(state, **to):
    """A layer's state (a tensor, or an LSTM's (h, c)) moved with Tensor.to(**to)."""
    return tuple(s.to(**to) for s in state) if isinstance(state, tuple) else state.to(**to)


# -------------------------------------------------------------- generate
def generate(model: RNNLM, vocab: Vocab, words: int, *, temperature: float = 1.0, seed: int = 0,
             device: str | torch.device = "cpu") -> str:
    """``words`` words sampled from a trained LM, one line per ``<eos>``."""
    if words < 1:
        raise ValueError(f"--words must be at least 1, got {words}")
    if not temperature > 0:
        raise ValueError(f"--temperature must be positive, got {temperature}")
    generator = torch.Generator(device=device).manual_seed(seed)
    token = torch.tensor([[vocab.stoi[EOS]]], device=device)  # (1, 1): start a new sentence
    hidden, out = None, []
    with torch.no_grad():
        for _ in range(words):
            output, _, hidden = model.encode(token, hidden)
            probs = torch.softmax(model.log_probs(output)[0, 0] / temperature, -1)
            token = torch.multinomial(probs, 1, generator=generator).view(1, 1)
            out.append(vocab.itos[int(token)])
    return " ".join(out).replace(f" {EOS} ", "\n").replace(EOS, "\n").strip()
