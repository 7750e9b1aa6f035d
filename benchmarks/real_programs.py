"""LRN as a drop-in for nn.GRU / nn.GRUCell in three realistic programs, time per step.

    python benchmarks/real_programs.py --out benchmarks/cpu_real_programs.json --markdown benchmarks/cpu_real_programs.md

Each program is written here for this benchmark, in the shape such programs have in the
wild; the only difference between the two variants is the recurrent class:

- seq2seq: a chatbot-style encoder-decoder.  A 2-layer bidirectional encoder over a
  PackedSequence, a 2-layer decoder called one step at a time (T=1, as step-wise decoders
  call nn.GRU) with dot attention and a tanh read-out over a 5000-word vocabulary.  Timed: a
  training iteration (batch 64, teacher forcing over 10 target steps, Adam) and greedy
  decoding of one sentence (batch 1, 10 steps, no grad).
- classifier: a packed bidirectional text classifier.  Embedding 128, 2 layers of 256
  per direction, dropout 0.5, the final states of the last layer into 4 classes; one Adam
  step on a batch of 32 texts of 20-100 words.
- refinement: slot-attention-style iterative refinement.  7 slots of 64 attend over 256
  inputs for 3 iterations, each updated by a cell (GRUCell / LRNCell) on 32 x 7 rows and a
  residual MLP; one Adam step.

Every program and variant is timed interleaved (lrn.bench.interleaved), idle and then beside
``--hogs`` CPU-bound processes, at each torch thread count.  Run it on an otherwise idle
machine.  ``lrn report --readme README.md`` states the committed report's range in the README.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lrn
from lrn.bench.interleaved import busy_cores, interleaved_medians
from lrn.bench.machine import machine_info
from lrn.bench.report import REAL_PROGRAMS_KIND, emit, format_real_programs

IMPLS = ("gru", "lrn")


def layer_class(impl: str) -> type[nn.Module]:
    return nn.GRU if impl == "gru" else lrn.LRN


def cell_class(impl: str) -> type[nn.Module]:
    return nn.GRUCell if impl == "gru" else lrn.LRNCell


# ---------------------------------------------------------------- seq2seq
class Seq2Seq(nn.Module):
    def __init__(self, impl: str, vocab: int = 5000, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        rnn = layer_class(impl)
        self.embedding = nn.Embedding(vocab, hidden)
        self.encoder = rnn(hidden, hidden, layers, dropout=0.1, bidirectional=True)
        self.decoder = rnn(hidden, hidden, layers, dropout=0.1)
        self.concat = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, vocab)
        self.layers = layers

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (S, B) -> memory (S, B, H) (directions summed), decoder state (L, B, H)."""
        packed = pack_padded_sequence(self.embedding(src), lengths, enforce_sorted=False)
        memory, h_n = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(memory)
        H = memory.shape[-1] // 2
        return memory[..., :H] + memory[..., H:], h_n[: self.layers]

    def step(self, token: torch.Tensor, state: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step: token (B,) -> logits (B, V), new state (L, B, H)."""
        out, state = self.decoder(self.embedding(token).unsqueeze(0), state)  # (1, B, H)
        scores = torch.einsum("bh,sbh->bs", out[0], memory)  # (B, S)
        context = torch.einsum("bs,sbh->bh", scores.softmax(-1), memory)  # (B, H)
        return self.out(torch.tanh(self.concat(torch.cat([out[0], context], -1)))), state


def seq2seq_train(impl: str) -> Callable[[], None]:
    model = Seq2Seq(impl)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    src = torch.randint(1, 5000, (10, 64))
    lengths = torch.randint(5, 11, (64,))
    tgt = torch.randint(1, 5000, (10, 64))

    def run() -> None:
        optimiser.zero_grad(set_to_none=True)
        memory, state = model.encode(src, lengths)
        token, loss = torch.zeros(64, dtype=torch.long), 0.0
        for t in range(tgt.shape[0]):  # teacher forcing
            logits, state = model.step(token, state, memory)
            loss = loss + F.cross_entropy(logits, tgt[t])
            token = tgt[t]
        loss.backward()
        optimiser.step()
    return run


def seq2seq_decode(impl: str) -> Callable[[], None]:
    model = Seq2Seq(impl).eval()
    src, lengths = torch.randint(1, 5000, (10, 1)), torch.tensor([10])

    def run() -> None:
        with torch.no_grad():
            memory, state = model.encode(src, lengths)
            token = torch.zeros(1, dtype=torch.long)
            for _ in range(10):
                logits, state = model.step(token, state, memory)
                token = logits.argmax(-1)
    return run


# ------------------------------------------------------------- classifier
class Classifier(nn.Module):
    def __init__(self, impl: str, vocab: int = 20000, embed: int = 128, hidden: int = 256, classes: int = 4) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = layer_class(impl)(embed, hidden, 2, dropout=0.5, bidirectional=True)
        self.dropout = nn.Dropout(0.5)
        self.out = nn.Linear(2 * hidden, classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.dropout(self.embedding(tokens)), lengths, enforce_sorted=False)
        _, h_n = self.rnn(packed)  # (2*2, B, H)
        return self.out(self.dropout(torch.cat([h_n[-2], h_n[-1]], -1)))


def classifier_train(impl: str) -> Callable[[], None]:
    model = Classifier(impl)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    lengths = torch.randint(20, 101, (32,))
    tokens = torch.randint(1, 20000, (int(lengths.max()), 32))
    labels = torch.randint(0, 4, (32,))

    def run() -> None:
        optimiser.zero_grad(set_to_none=True)
        F.cross_entropy(model(tokens, lengths), labels).backward()
        optimiser.step()
    return run


# ------------------------------------------------------------- refinement
class SlotRefinement(nn.Module):
    def __init__(self, impl: str, slots: int = 7, dim: int = 64, iterations: int = 3) -> None:
        super().__init__()
        self.slots, self.iterations = slots, iterations
        self.init = nn.Parameter(torch.randn(1, slots, dim) * dim ** -0.5)
        self.norm_inputs, self.norm_slots, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.cell = cell_class(impl)(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, dim))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (B, N, D) -> slots (B, K, D)."""
        B, _, D = inputs.shape
        inputs = self.norm_inputs(inputs)
        k, v = self.k(inputs), self.v(inputs)  # (B, N, D)
        slots = self.init.expand(B, -1, -1)
        for _ in range(self.iterations):
            q = self.q(self.norm_slots(slots))  # (B, K, D)
            attn = torch.einsum("bkd,bnd->bkn", q, k).mul(D ** -0.5).softmax(1) + 1e-8  # slots compete
            updates = torch.einsum("bkn,bnd->bkd", attn / attn.sum(-1, keepdim=True), v)
            slots = self.cell(updates.reshape(-1, D), slots.reshape(-1, D)).view(B, self.slots, D)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots


def refinement_train(impl: str) -> Callable[[], None]:
    model = SlotRefinement(impl)
    optimiser = torch.optim.Adam(model.parameters(), 4e-4)
    inputs, target = torch.randn(32, 256, 64), torch.randn(32, 7, 64)

    def run() -> None:
        optimiser.zero_grad(set_to_none=True)
        F.mse_loss(model(inputs), target).backward()
        optimiser.step()
    return run


PROGRAMS: dict[str, Callable[[str], Callable[[], None]]] = {
    "seq2seq train (B=64, 10 steps)": seq2seq_train,
    "seq2seq greedy decode (B=1, 10 steps)": seq2seq_decode,
    "classifier train (B=32, T=20-100)": classifier_train,
    "refinement train (B=32, 7 slots, 3 iterations)": refinement_train,
}


def run(threads_list: list[int], hogs: int, rounds: int, seconds_per_sample: float) -> dict:
    machine = machine_info(torch.device("cpu"))  # before: the load average then is the idle machine's
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        for name, build in PROGRAMS.items():
            torch.manual_seed(0)
            fns = {impl: build(impl) for impl in IMPLS}
            idle = interleaved_medians(fns, rounds, seconds_per_sample)
            with busy_cores(hogs):
                busy = interleaved_medians(fns, rounds, seconds_per_sample)
            rows.append({"program": name, "threads": threads, "idle_s": idle, "busy_s": busy,
                         "lrn_over_gru_idle": idle["lrn"] / idle["gru"],
                         "lrn_over_gru_busy": busy["lrn"] / busy["gru"]})
    return {"kind": REAL_PROGRAMS_KIND, "machine": machine, "hogs": hogs, "rounds": rounds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="torch thread counts (default %(default)s)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count(), help="busy processes (default: one per CPU)")
    parser.add_argument("--rounds", type=int, default=7, help="samples per variant (default %(default)s)")
    parser.add_argument("--seconds-per-sample", type=float, default=0.2, help="(default %(default)s)")
    parser.add_argument("--out", help="JSON report")
    parser.add_argument("--markdown", help="markdown table")
    args = parser.parse_args()
    report = run([int(t) for t in args.threads.split(",")], args.hogs, args.rounds, args.seconds_per_sample)
    emit(report, format_real_programs(report), args.out, args.markdown)


if __name__ == "__main__":
    main()
