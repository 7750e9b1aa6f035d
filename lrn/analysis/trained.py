"""Analyses of trained runs: find a model's recurrent layers, capture what they read, measure them.

Nothing here knows a task's model: every task builds its recurrent layers with
``lrn.make_rnn`` (a ``Recurrent``), so a forward pre-hook on those modules captures the
exact (x, hx, lengths) each one receives while the task's own code runs the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from lrn.analysis.gradients import GradientFlow, measure_gradient_flow
from lrn.modules import ATR, LRN, SRU, Recurrent, make_rnn
from lrn.predict import load_run


@dataclass
class RecurrentCall:
    module: Recurrent
    x: Tensor  # (T, B, in), time-major
    hx: object
    lengths: Tensor | None


def capture_recurrent_calls(model: nn.Module, run: Callable[[], object]) -> list[RecurrentCall]:
    """Every call of a ``Recurrent`` inside ``model`` while ``run()`` executes, in order."""
    calls: list[RecurrentCall] = []

    def hook(module, args, kwargs):
        bound = dict(zip(("x", "hx", "lengths"), args)) | kwargs
        x = bound["x"].detach()
        calls.append(RecurrentCall(module, x.transpose(0, 1) if module.batch_first else x,
                                   bound.get("hx"), bound.get("lengths")))

    recurrent = [m for m in model.modules() if isinstance(m, Recurrent)]
    if not recurrent:
        raise ValueError(f"{type(model).__name__} has no recurrent layer made by lrn.make_rnn")
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in recurrent]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return calls


def first_layer_forward(rnn: Recurrent, *, trained: bool = True) -> Recurrent:
    """A one-layer, forward-only copy of ``rnn``'s first layer, the same cell and options, with
    its trained weights (or freshly initialised ones), the reverse direction and deeper layers
    dropped, so that h_T and s_t are well defined."""
    inner = rnn.rnn
    kwargs: dict = {}
    if isinstance(inner, (LRN, ATR, SRU)):
        kwargs["layer_norm"] = inner.layer_norm
    if isinstance(inner, LRN):
        kwargs |= {"activation": inner.activation, "recurrent_gates": inner.recurrent_gates}
    copy = make_rnn(rnn.cell, inner.input_size, inner.hidden_size, **kwargs)
    if not trained:
        return copy.to(next(rnn.parameters()).device)
    weights = rnn.state_dict()
    copy.load_state_dict({k: weights[k] for k in copy.state_dict()})
    return copy.to(next(rnn.parameters()).device)


def crop_common_length(x: Tensor, lengths: Tensor | None, sequences: int, max_length: int) -> Tensor:
    """(T', N, in): the ``sequences`` longest sequences of x (T, B, in), cut to the shortest of
    them (at most ``max_length``), so that every step is a real token."""
    T, B, _ = x.shape
    lengths = torch.full((B,), T) if lengths is None else lengths.cpu()
    order = torch.argsort(lengths, descending=True)[:sequences]
    common = min(int(lengths[order].min()), max_length)
    if common < 3:
        raise ValueError(f"the captured batch has no {sequences} sequences of 3+ steps")
    return x[:common, order.to(x.device)]


def trained_flows(run_dir: str | Path, *, sequences: int, max_length: int,
                  seed: int = 0) -> tuple[str, list[GradientFlow]]:
    """Gradient flow of a run's first recurrent layer (forward direction), trained and freshly
    initialised, on the inputs that layer receives from one real training batch."""
    task, config, data, model = load_run(run_dir, with_data=True)
    batches = task.train_batches(data, config, epoch=0)
    batch = next(iter(batches))
    calls = capture_recurrent_calls(model, lambda: task.loss(model, batch, torch.device("cpu")))
    call = calls[0]
    x = crop_common_length(call.x, call.lengths, sequences, max_length).double()
    trained = first_layer_forward(call.module).double().eval()
    torch.manual_seed(seed)
    fresh = first_layer_forward(call.module, trained=False).double().eval()
    H = trained.rnn.hidden_size
    label = f"{task.name} {call.module.cell}"
    title = f"{label}: first layer on a real batch (T={x.shape[0]}, N={x.shape[1]}, H={H})"
    return title, [measure_gradient_flow(trained, x, H, f"{label} trained"),
                   measure_gradient_flow(fresh, x, H, f"{label} at init")]


def _ner_runner(task, config, data, model, text: str):
    from lrn.tasks.ner import Sentence

    tokens = text.split()
    sentence = Sentence(tokens, ["O"] * len(tokens))
    return [tokens], lambda: task.predict(model, data, [sentence], config, torch.device("cpu"))


def _nli_runner(task, config, data, model, text: str):
    from lrn.tasks.nli import Pair
    from lrn.tasks.text import tokenize

    premise, sep, hypothesis = text.partition("|||")
    if not sep:
        raise ValueError("--text: for nli give 'premise ||| hypothesis'")
    pair = Pair(tokenize(premise), tokenize(hypothesis), 0)
    batch = task.make_batch(data, [pair], config)
    return [pair.premise, pair.hypothesis], lambda: model(*batch.premise, *batch.hypothesis)


def _doc_runner(task, config, data, model, text: str):
    from lrn.tasks.doc import Document, clean_text
    from lrn.tasks.text import tokenize

    tokens = tokenize(clean_text(text))[:config["max_tokens"]]  # as the task reads its CSV
    batch = task.make_batch(data, [Document(tokens, 0)], config)
    return [tokens], lambda: model(batch.words, batch.chars, batch.lengths)


#: task name -> (task, config, data, model, text) -> (token segments, run): how each task reads
#: raw text; the model's LRN layer reads the segments as one batch, one sequence per segment.
TEXT_RUNNERS: dict[str, Callable] = {"doc": _doc_runner, "ner": _ner_runner, "nli": _nli_runner}


def _reads_segments(call: RecurrentCall, sizes: list[int]) -> bool:
    if not isinstance(call.module.rnn, LRN) or call.x.shape[1] != len(sizes):
        return False
    lengths = [call.x.shape[0]] * len(sizes) if call.lengths is None else call.lengths.tolist()
    return lengths == sizes


def text_token_weights(run_dir: str | Path, text: str, *, layer: int = 0) -> dict:
    """Per-token weights of the final state(s) of a run's LRN layer on ``text``, for each
    segment (sentence) the task reads: the forward direction's state after the segment's
    last token and, if bidirectional, the backward direction's state after its first.
    Also the relative error of the gate-only (tanh-ignoring) unfolding on this text."""
    from lrn.analysis.weights import layer_token_weights

    task, config, data, model = load_run(run_dir)
    if task.name not in TEXT_RUNNERS:
        raise ValueError(f"analyze weights reads raw text for {', '.join(sorted(TEXT_RUNNERS))} runs, "
                         f"not {task.name}")
    segments, run = TEXT_RUNNERS[task.name](task, config, data, model, text)
    if not all(segments):
        raise ValueError("--text: no tokens in (a part of) the text")
    calls = capture_recurrent_calls(model, run)
    call = next((c for c in calls if _reads_segments(c, [len(s) for s in segments])), None)
    if call is None:
        cells = sorted({c.module.cell for c in calls})
        raise ValueError(f"{run_dir}: no LRN layer reads one step per token (cells: {', '.join(cells)}); "
                         "token weights exist for lrn and olrn runs")
    x = call.x.transpose(0, 1) if call.module.batch_first else call.x
    exact = layer_token_weights(call.module, x, call.hx, call.lengths, layer=layer)
    loose = layer_token_weights(call.module, x, call.hx, call.lengths, layer=layer, fold_activation=False)
    h = exact.reconstruct()  # the layer's output (exact by construction, see the tests)
    gap = float((loose.reconstruct() - h).norm() / h.norm().clamp_min(1e-300))
    parts, exact_final, loose_final = [], [], []
    for b, tokens in enumerate(segments):
        n = len(tokens)
        finals = [(0, n - 1)] + ([(1, 0)] if exact.summary.shape[0] == 2 else [])  # (direction, t)
        rows = {}
        for (d, t), name in zip(finals, ("forward state after the last token",
                                         "backward state after the first token")):
            rows[name] = exact.summary[d, b, t, :n].tolist()
            exact_final.append(exact.summary[d, b, t, :n])
            loose_final.append(loose.summary[d, b, t, :n])
        parts.append({"tokens": tokens, "rows": rows})
    # how well the paper's gate-only weights order the tokens like the exact ones
    agreement = float(torch.corrcoef(torch.stack([torch.cat(exact_final), torch.cat(loose_final)]))[0, 1])
    return {"task": task.name, "cell": call.module.cell, "segments": parts, "unfolding_gap": gap,
            "gate_only_correlation": agreement, "layer": layer}
