"""The ``lrn`` command: one argparse parser, subcommands registered by the modules that own them.

Errors from bad input (DataError, ValueError from argument checks, OSError such as an
unwritable --out) print one line ``lrn: error: ...`` and exit with status 2 (``--debug`` or
LRN_DEBUG=1 show the traceback instead); a training failure exits 1; SIGINT/SIGTERM
during training saves a checkpoint and exits 128 + the signal number.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

#: (module, where) of every optional subcommand provider: "top" modules add top-level
#: subcommands with ``add_cli(subparsers)``; "predict" modules add ``lrn predict <task>``.
#: A module that is not installed is simply absent from the command.
PLUGINS: tuple[tuple[str, str], ...] = (
    ("lrn.bench", "top"),
    ("lrn.analysis.cli", "top"),    # lrn analyze, lrn report
    ("lrn.tasks.mt", "top"),        # lrn translate
    ("lrn.tasks.ner", "predict"),
    ("lrn.tasks.nli", "predict"),
    ("lrn.tasks.doc", "predict"),
    ("lrn.tasks.rc", "predict"),
)

CELL_HELP = "cell spec: lstm, gru, atr, sru, lrn or olrn, with options as name:key=value,... " \
            "(e.g. lrn:activation=identity)"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``compare``."""
    from lrn.train import PRESETS

    p.add_argument("task", help="lm, ner, nli, doc, mt, rc or adding")
    p.add_argument("--data", help="dataset directory (not needed by the generated adding task)")
    p.add_argument("--preset", default="small", choices=PRESETS,
                   help="tiny: seconds (CI); small: minutes on 2 CPU cores (the default); anchor: a published "
                        "baseline's configuration (lm on PTB: Zaremba et al. 2014); paper: the authors' settings. "
                        "`lrn presets TASK --preset P` lists every setting")
    p.add_argument("--layer-norm", action="store_true", help="layer normalisation in the recurrent cells")
    p.add_argument("--embeddings", metavar="FILE",
                   help="GloVe-format text file to initialise word embeddings (ner, nli, doc, rc)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
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
    from lrn.train import evaluate_run

    metrics = evaluate_run(args.run_dir, args.split, device=args.device, data_dir=args.data)
    print(json.dumps({args.split: metrics}, indent=1))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lrn.tasks.lm import generate_from_run

    print(generate_from_run(args.run_dir, args.words, temperature=args.temperature, seed=args.seed,
                            device=args.device))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lrn.demo import run_demo

    run_demo(out_dir=args.out, seconds=args.seconds, plot=args.plot, progress=not args.no_progress)
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
    import lrn

    parser = argparse.ArgumentParser(prog="lrn", description="Lightweight Recurrent Network: layers, "
                                     "the paper's experiments, benchmarks.  Start with `lrn demo`.")
    parser.add_argument("--version", action="version", version=f"lrn-torch {lrn.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also LRN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train one cell on one task")
    _add_run_options(p)
    p.add_argument("--cell", help=CELL_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float,
                   help="stop after this much time in training steps (validation not counted)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (checkpoints, results.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="several cells and seeds at equal steps, speed measured apart, "
                                       "time-to-quality; tables and plots")
    _add_run_options(p)
    p.add_argument("--cells", required=True, help="comma-separated cell specs, e.g. lstm,gru,atr,sru,lrn")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--speed-steps", type=int, default=30,
                   help="training steps timed per cell, interleaved, after training (0: none; default 30)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="OUT/seed<S>/<cell>/ run directories; compare.md/.json, speed.json, PNG plots")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", help="evaluate a run's best checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=("valid", "test"))
    p.add_argument("--data", help="dataset directory (default: the one the run was trained on)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("generate", help="sample text from a trained language model")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--words", type=int, default=100, help="number of words to sample (default 100)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="LRN vs LSTM vs GRU on the adding problem, in under 3 minutes")
    p.add_argument("--out", metavar="DIR", help="also write runs, results.json and the plot here")
    p.add_argument("--seconds", type=float, default=None,
                   help="training time per cell (default: fits the whole demo in 3 minutes)")
    p.add_argument("--plot", help="where to write the learning-curve PNG "
                                  "(default DIR/learning_curves.png, or ./lrn-demo.png without --out)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    from lrn.train import PRESETS

    p = sub.add_parser("presets", help="every setting of a task's preset (what --set accepts), with its value")
    p.add_argument("task", help="lm, ner, nli, doc, mt, rc or adding")
    p.add_argument("--preset", default="small", choices=PRESETS, help="(default: small)")
    p.add_argument("--data", help="dataset directory, for presets that depend on the data (lm: PTB or WikiText-2)")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("info", help="versions and available LRN backends")
    p.set_defaults(func=cmd_info)

    predict = sub.add_parser("predict", help="run a trained model on raw input")
    predict_sub = predict.add_subparsers(dest="predict_task", metavar="TASK", required=True)
    for module_name, where in PLUGINS:
        module = _optional_module(module_name)
        if module is not None and hasattr(module, "add_cli"):
            module.add_cli(sub if where == "top" else predict_sub)
    if not predict_sub.choices:
        sub._name_parser_map.pop("predict")  # no task offers prediction in this installation
        sub._choices_actions[:] = [a for a in sub._choices_actions if a.dest != "predict"]
    return parser


def _optional_module(name: str):
    """``name`` imported, or None if it is not part of this installation.  A module that
    exists but fails to import is reported on stderr, and the rest of the CLI still works."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name.startswith(e.name):
            return None
        print(f"lrn: warning: {name} could not be imported ({e}); its subcommands are unavailable",
              file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - a broken plugin must not take the CLI down
        print(f"lrn: warning: {name} could not be imported ({type(e).__name__}: {e}); "
              "its subcommands are unavailable", file=sys.stderr)
    return None


#: what the `tasks` extra installs (pyproject.toml); the bare layer needs none of it
TASKS_EXTRA = frozenset({"tqdm", "matplotlib", "safetensors", "sacrebleu", "tokenizers", "seqeval", "markdown", "PIL"})


def main(argv: list[str] | None = None) -> int:
    from lrn.allocator import keep_freed_memory

    try:
        parser = build_parser()
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in TASKS_EXTRA:
            raise
        print(f"lrn: error: the lrn command needs the 'tasks' extra ({missing} is not installed): "
              "pip install 'lrn-torch[tasks]'", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    keep_freed_memory()  # large activations are reused, not page-faulted in every step
    status = 1
    try:
        status = _run(args)
        return status
    finally:
        _leave_process_group(wait_for_peers=status == 0)


def _run(args: argparse.Namespace) -> int:
    from lrn.tasks.base import DataError
    from lrn.train import Interrupted, TrainingError

    try:
        return int(args.func(args) or 0)
    except (DataError, ValueError, OSError) as e:
        if args.debug or os.environ.get("LRN_DEBUG") == "1":
            raise
        print(f"lrn: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"lrn: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"lrn: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("lrn: interrupted", file=sys.stderr)
        return 130


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
