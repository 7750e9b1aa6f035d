"""The ``lrn`` command: one argparse parser with every subcommand.

The parser is built without importing torch or any task (``lrn --help`` answers at once):
each command imports what it needs when it runs.  Errors from bad input (DataError,
ValueError from argument checks, OSError such as an unwritable --out) print one line
``lrn: error: ...`` and exit with status 2 (``--debug`` or LRN_DEBUG=1 show the traceback
instead); a training failure exits 1; SIGINT/SIGTERM during training saves a checkpoint
and exits 128 + the signal number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lrn import __version__
from lrn.analysis.cli import add_cli as add_analysis_cli
from lrn.bench.cli import add_cli as add_bench_cli

class HelpFormatter(argparse.HelpFormatter):
    """An option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "%(default)" in text
                or action.default in (None, False, [], argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)".lstrip()


CELL_HELP = "cell spec: lstm, gru, atr, sru, lrn or olrn, with options as name:key=value,... " \
            "(e.g. lrn:activation=identity)"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``compare``."""
    p.add_argument("task", help="lm, ner, nli, doc, mt, rc or adding")
    p.add_argument("--data", help="dataset directory (not needed by the generated adding task)")
    p.add_argument("--preset", default="small", metavar="{tiny,small,anchor,paper}",
                   help="tiny: seconds (CI); small: minutes on 2 CPU cores; anchor: a published "
                        "baseline's configuration (lm on PTB: Zaremba et al. 2014); paper: the authors' settings. "
                        "`lrn presets TASK --preset P` lists every setting")
    p.add_argument("--layer-norm", action="store_true", help="layer normalisation in the recurrent cells")
    p.add_argument("--embeddings", metavar="FILE",
                   help="GloVe-format text file to initialise word embeddings (ner, nli, doc, rc)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting of the preset (repeatable), e.g. --set lr=0.5; "
                        "`lrn presets TASK` lists the keys")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> dict:
    from lrn.train.config import parse_override

    overrides = dict(parse_override(item) for item in args.set)
    if args.layer_norm:
        overrides["layer_norm"] = True
    if args.embeddings:
        overrides["embeddings"] = args.embeddings
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from lrn.train import train

    if not args.cell and not args.resume:
        raise ValueError("--cell is required (except with --resume)")
    results = train(args.task, args.data, args.cell, preset=args.preset, overrides=_overrides(args),
                    out_dir=args.out, device=args.device, seed=args.seed, max_steps=args.max_steps,
                    max_minutes=args.max_minutes, resume=args.resume, progress=not args.no_progress)
    _print_summary(results)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from lrn.compare import compare, markdown_tables

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    summary = compare(args.task, args.data, cells, out_dir=args.out, preset=args.preset,
                      overrides=_overrides(args), device=args.device, seeds=seeds,
                      max_steps=args.max_steps, speed_steps=args.speed_steps, progress=not args.no_progress)
    if _main_process():
        print(markdown_tables(summary), end="")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lrn.predict import evaluate_run

    if not args.no_progress and sys.stderr.isatty():  # a status line, not part of any output
        print(f"lrn eval: reading the checkpoint of {args.run_dir} and the dataset, then scoring {args.split}",
              file=sys.stderr, flush=True)
    metrics = evaluate_run(args.run_dir, args.split, device=args.device, data_dir=args.data,
                           progress=not args.no_progress)
    print(json.dumps({args.split: metrics}, indent=1))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lrn.predict import generate

    print(generate(args.run_dir, args.words, temperature=args.temperature, seed=args.seed, device=args.device))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lrn.predict import translate
    from lrn.tasks.text import text_lines

    lines = ([" ".join(line.split()) for _, line in text_lines(Path(args.input))] if args.input
             else [" ".join(line.split()) for line in sys.stdin])
    text = "".join(t + "\n" for t in translate(args.run_dir, lines, beam_size=args.beam, device=args.device,
                                               progress=not args.no_progress))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lrn.predict import predict_file

    for line in predict_file(args.run_dir, args.input, task=args.predict_task, device=args.device, progress=True):
        print(line)
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    from lrn.predict import answer

    text, start, end = answer(args.run_dir, args.context, args.question, device=args.device)
    print(json.dumps({"answer": text, "start": start, "end": end}, ensure_ascii=False) if args.json else text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lrn.demo import run_demo

    run_demo(out_dir=args.out, steps=args.steps, plot=args.plot, threads=args.threads, progress=not args.no_progress)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lrn.tasks import get_task
    from lrn.train.config import ENGINE_KEYS, resolve_config

    task = get_task(args.task)
    data = None if args.data is None else Path(args.data)
    config = resolve_config(task, args.preset, data, None, 0)
    print(f"# {task.name}, preset {args.preset}: every setting --set KEY=VALUE accepts, with its value here")
    for key in sorted(config):
        print(f"{key} = {json.dumps(config[key])}")
    unset = sorted(ENGINE_KEYS - set(config))
    if unset:
        print(f"# also accepted, unset in this preset: {', '.join(unset)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import lrn
    from lrn.functional import available_backends
    from lrn.paths import shared_data_dir

    print(f"lrn-torch {lrn.__version__}")
    print(f"python    {platform.python_version()}")
    for package in ("torch", "numpy", "numba", "triton"):
        print(f"{package:<9} {_version(package)}")
    import torch

    print(f"cuda      {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
    from lrn.ops.cpu import thread_count

    print(f"threads   {torch.get_num_threads()} (torch), {thread_count()} (LRN CPU kernels: torch's setting, "
          "at most NUMBA_NUM_THREADS)")
    print(f"backends  {', '.join(available_backends())}")
    print(f"data      {shared_data_dir() or 'not found (set LRN_DATA)'}")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _main_process() -> bool:
    """False on the other ranks under torchrun: rank 0 speaks for all."""
    return os.environ.get("RANK", "0") == "0"


def _print_summary(results: dict) -> None:
    if not _main_process():
        return
    shown = {k: results[k] for k in ("task", "cell", "params", "steps", "time_per_batch_s", "metrics")}
    print(json.dumps(shown, indent=1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrn", description="Lightweight Recurrent Network: layers, "
                                     "the paper's experiments, benchmarks.  Start with `lrn demo`.")
    parser.add_argument("--version", action="version", version=f"lrn-torch {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also LRN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", formatter_class=HelpFormatter, help="train one cell on one task")
    _add_run_options(p)
    p.add_argument("--cell", help=CELL_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data order")
    p.add_argument("--max-minutes", type=float,
                   help="stop after this many minutes spent in training steps; start-up, validation and the "
                        "final test come on top (the progress bar counts the training seconds)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (checkpoints, results.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", formatter_class=HelpFormatter, help="several cells and seeds at equal steps, speed measured apart, "
                                       "time-to-quality; tables and plots")
    _add_run_options(p)
    p.add_argument("--cells", required=True, help="comma-separated cell specs, e.g. lstm,gru,atr,sru,lrn")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--speed-steps", type=int, default=30,
                   help="training steps timed per cell, interleaved, after training (0: none)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="OUT/seed<S>/<cell>/ run directories; compare.md/.json, speed.json, PNG plots")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", formatter_class=HelpFormatter, help="evaluate a run's best checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=("valid", "test"))
    p.add_argument("--data", help="dataset directory (default: the one the run was trained on)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("generate", formatter_class=HelpFormatter, help="sample text from a trained language model")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--words", type=int, default=100, help="number of words to sample")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the sampling")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", formatter_class=HelpFormatter,
                       help="LRN vs LSTM vs GRU on the adding problem: equal steps, then speed (~2 minutes)")
    p.add_argument("--out", metavar="DIR", help="also write runs, results.json and the plot here")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of every cell (default: the adding task's small preset)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (one keeps the demo quick on a busy machine)")
    p.add_argument("--plot", help="where to write the learning-curve PNG "
                                  "(default DIR/learning_curves.png, or ./lrn-demo.png without --out)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("presets", formatter_class=HelpFormatter, help="every setting of a task's preset (what --set accepts), with its value")
    p.add_argument("task", help="lm, ner, nli, doc, mt, rc or adding")
    p.add_argument("--preset", default="small", metavar="{tiny,small,anchor,paper}", help="the preset")
    p.add_argument("--data", help="dataset directory, for presets that depend on the data (lm: PTB or WikiText-2)")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("info", formatter_class=HelpFormatter, help="versions and available LRN backends")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("translate", formatter_class=HelpFormatter, help="translate sentences with a trained mt run",
                       description="Translate one sentence per line from --input (default: stdin) with the "
                                   "run's best checkpoint; writes one detokenised translation per line.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory of an `lrn train mt` run")
    p.add_argument("--input", help="source sentences, one per line (default: stdin)")
    p.add_argument("--output", help="where to write translations (default: stdout)")
    p.add_argument("--beam", type=int, help="beam size (default: the run's beam_size; 1: greedy)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_translate)

    predict = sub.add_parser("predict", formatter_class=HelpFormatter, help="run a trained model on raw input")
    predict_sub = predict.add_subparsers(dest="predict_task", metavar="TASK", required=True)
    for task, (help_, input_help) in PREDICT_FROM_FILE.items():
        p = predict_sub.add_parser(task, formatter_class=HelpFormatter, help=help_)
        p.add_argument("run_dir", metavar="RUN_DIR", help=f"a run directory of `lrn train {task}`")
        p.add_argument("--input", required=True, metavar="FILE", help=input_help)
        p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
        p.set_defaults(func=cmd_predict)
    p = predict_sub.add_parser("rc", formatter_class=HelpFormatter, help="answer a question about a text (extractive span)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `lrn train rc`")
    p.add_argument("--context", required=True, metavar="FILE", help="UTF-8 text file to read")
    p.add_argument("--question", required=True, help="the question, in quotes")
    p.add_argument("--json", action="store_true",
                   help='print {"answer", "start", "end"}: the character offsets into FILE')
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
    p.set_defaults(func=cmd_answer)

    add_bench_cli(sub)
    add_analysis_cli(sub)  # lrn analyze, lrn report
    return parser


#: ``lrn predict TASK RUN_DIR --input FILE``: task -> (help, what FILE holds)
PREDICT_FROM_FILE = {
    "ner": ("tag raw text (one whitespace-tokenised sentence per line)", "text file, one sentence per line"),
    "nli": ("label premise<TAB>hypothesis lines", "text file, one premise<TAB>hypothesis per line"),
    "doc": ("classify documents, one per line", "text file, one document per line"),
}

#: what the `tasks` extra installs (pyproject.toml); the bare layer needs none of it
TASKS_EXTRA = frozenset({"tqdm", "matplotlib", "safetensors", "sacrebleu", "tokenizers", "seqeval", "markdown", "PIL"})


def main(argv: list[str] | None = None) -> int:
    from lrn.allocator import keep_freed_memory

    args = build_parser().parse_args(argv)
    keep_freed_memory()  # large activations are reused, not page-faulted in every step
    status = 1
    try:
        status = _run(args)
        return status
    finally:
        _leave_process_group(wait_for_peers=status == 0)


def _run(args: argparse.Namespace) -> int:
    from lrn.tasks.base import DataError  # torch only: the core install has it

    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in TASKS_EXTRA:
            raise
        print(f"lrn: error: `lrn {args.command}` needs the 'tasks' extra ({missing} is not installed): "
              "pip install 'lrn-torch[tasks]'", file=sys.stderr)
        return 2
    except (DataError, ValueError, OSError) as e:
        if args.debug or os.environ.get("LRN_DEBUG") == "1":
            raise
        print(f"lrn: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lrn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # Only the training engine raises these, so they are looked up only once it is loaded
        # (importing it needs the 'tasks' extra, which `lrn info` or `lrn bench` do not).
        engine = sys.modules.get("lrn.train.engine")
        if engine is not None and isinstance(e, engine.TrainingError):
            print(f"lrn: error: {_one_line(e)}", file=sys.stderr)
            return 1
        if engine is not None and isinstance(e, engine.Interrupted):
            print(f"lrn: {e}", file=sys.stderr)
            return 128 + e.signum
        raise


def _leave_process_group(wait_for_peers: bool) -> None:
    """Tear the torchrun process group down while the interpreter is still whole: gloo's worker
    threads must not outlive it, or a rank can abort at exit ("terminate called without an
    active exception").  After a success the ranks first wait for each other, so none leaves
    while another still talks to it; a rank that failed does not wait (its peers then fail on
    their next collective instead of hanging)."""
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_peers:
        dist.barrier()
    gc.collect()  # drop DDP reducers and pending work that still hold the group
    dist.destroy_process_group()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    raise SystemExit(main())
