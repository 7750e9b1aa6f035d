"""The training loop shared by every task.

The task supplies data, model, loss and metric (lrn/tasks/base.py); this module does
the rest: optimisation and LR schedule, gradient clipping, bf16 autocast on GPU,
periodic validation with a best checkpoint, atomic checkpoints and exact resumption,
SIGINT/SIGTERM handling, non-finite loss detection, DistributedDataParallel under
torchrun, the progress bar and RUN_DIR/results.json.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from lrn.modules import count_parameters, parse_cell_spec
from lrn.tasks import get_task
from lrn.tasks.base import DataError, Task
import lrn.train.distributed as distributed
from lrn.train.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from lrn.train.config import resolve_config
from lrn.train.optim import Optimization
from lrn.train.rng import rng_state, seed_everything, set_rng_state

#: steps left out of the time-per-batch median (allocator, JIT and cache warm-up)
WARMUP_STEPS = 5


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved.  ``signum`` is the signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def train(task: str | Task, data_dir: str | Path | None, cell: str, *, preset: str = "small",
          overrides: dict[str, Any] | None = None, out_dir: str | Path, device: str = "cpu",
          seed: int = 0, max_steps: int | None = None, max_minutes: float | None = None,
          resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``cell`` on ``task`` into ``out_dir``; returns the content of results.json.

    ``max_minutes`` budgets the time spent in training steps (validation excluded).  With
    ``resume``, everything but the step/time limits comes from the run's last checkpoint;
    ``overrides`` that differ from its settings are refused.
    """
    proc = distributed.setup(device)
    task = get_task(task) if isinstance(task, str) else task
    out_dir = Path(out_dir)
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {max_steps}")
    if max_minutes is not None and max_minutes < 0:
        raise ValueError(f"--max-minutes must be >= 0, got {max_minutes}")
    if resume:
        checkpoint = load_checkpoint(out_dir, "last")
        if checkpoint is None:
            raise ValueError(f"{out_dir}: no complete checkpoint to resume from (start the run again "
                             "without --resume)")
        meta = checkpoint.meta
        if data_dir is None and meta["data_dir"] is not None:
            data_dir = meta["data_dir"]
        data_dir = _check_data_dir(task, data_dir)
        if meta["task"] != task.name or (cell and cell != meta["cell"]):
            raise ValueError(f"{out_dir} holds a {meta['task']}/{meta['cell']} run, not {task.name}/{cell}")
        cell, preset, config = meta["cell"], meta["preset"], dict(meta["config"])
        # A resumed run keeps its settings; a --set that would change one is refused, not dropped.
        changed = [f"{k}: {config.get(k)!r} -> {v!r}" for k, v in (overrides or {}).items() if config.get(k) != v]
        if changed:
            raise ValueError(f"--resume continues {out_dir} with its own settings; these --set values differ: "
                             f"{'; '.join(changed)} (start a new run to change them)")
        if max_steps is not None:
            config["max_steps"] = max_steps
    else:
        checkpoint = None
        if _holds_a_run(out_dir):
            raise ValueError(f"{out_dir} already holds a run: pass --resume to continue it, "
                             "or choose another --out")
        parse_cell_spec(cell)  # a bad cell name fails before any data is read
        data_dir = _check_data_dir(task, data_dir)
        config = resolve_config(task, preset, data_dir, overrides, seed)
        if max_steps is not None:
            config["max_steps"] = max_steps
    if not (config.get("max_steps") is not None or config.get("max_epochs") or max_minutes is not None):
        raise ValueError("no stopping rule: set --max-steps, --max-minutes or the max_epochs setting")

    seed_everything(int(config["seed"]) + proc.rank)
    data = task.load_data(data_dir, config, checkpoint.vocab if checkpoint else None)
    model = task.build_model(config, data, cell).to(proc.device)
    trainer = Trainer(task, data, model, config, proc, out_dir=out_dir, cell=cell, preset=preset,
                      data_dir=data_dir, progress=progress)
    with run_lock(out_dir) if proc.is_main else contextlib.nullcontext():
        if checkpoint is None and proc.is_main and _holds_a_run(out_dir):
            raise ValueError(f"{out_dir} already holds a run (written while this one started): pass --resume "
                             "to continue it, or choose another --out")
        if checkpoint is not None:
            trainer.restore(checkpoint)
        if proc.is_main:
            (out_dir / "results.json").unlink(missing_ok=True)
        return trainer.fit(max_minutes)


@contextlib.contextmanager
def run_lock(out_dir: Path):
    """Hold ``out_dir/.lock`` (fcntl) while a run writes there: a second run on the same
    directory fails at once, naming the process that holds it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ValueError(f"{out_dir} is in use by another run (pid {f.read().strip() or 'unknown'})") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def compact_log(log: dict[str, Any]) -> dict[str, Any]:
    """log.json's per-step lists rounded (losses to 1e-4 nats, times to 0.1 ms), which with
    the file's unindented form keeps a 70k-step run's log under 1 MB; the checkpoint keeps
    the exact values for resumption."""
    return {**log, "train_loss": [round(x, 4) for x in log["train_loss"]],
            "step_seconds": [round(x, 4) for x in log["step_seconds"]]}


def _holds_a_run(out_dir: Path) -> bool:
    """A finished run or a complete checkpoint; a first checkpoint killed half-written
    (checkpoints/.tmp-*, no pointer) does not count, so the run simply starts again."""
    return (out_dir / "results.json").exists() or any(
        (out_dir / "checkpoints" / f"{slot}.json").exists() for slot in ("last", "best"))


def _check_data_dir(task: Task, data_dir: str | Path | None) -> Path | None:
    if not task.needs_data:
        return None if data_dir is None else Path(data_dir)
    if data_dir is None:
        raise ValueError(f"task {task.name} needs --data DIR")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"--data {data_dir}: not a directory")
    return data_dir


class Trainer:
    """One run's mutable state; ``fit`` runs it to a stopping rule."""

    def __init__(self, task: Task, data: Any, model: nn.Module, config: dict[str, Any],
                 proc: distributed.Process, *, out_dir: Path, cell: str, preset: str,
                 data_dir: Path | None, progress: bool):
        self.task, self.data, self.model, self.config, self.proc = task, data, model, config, proc
        self.out_dir, self.cell, self.preset, self.data_dir = out_dir, cell, preset, data_dir
        self.progress = progress
        task.show_progress = progress and proc.is_main  # validation and testing show their own bars
        self.opt = Optimization(model, config)
        self.ddp_model = (DistributedDataParallel(model, device_ids=[proc.device.index] if proc.device.type == "cuda"
                                                  else None) if proc.enabled else model)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0          # batches of ``epoch`` already trained on
        self.train_seconds = 0.0         # time in training steps, summed over resumptions
        self.losses: list[float] = []    # mean training loss of every step
        self.step_seconds: list[float] = []
        self.items = 0                   # tokens / examples trained on (all ranks)
        self.evals: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"step", "metrics"} of the best checkpoint
        self.pending_carry: dict[str, torch.Tensor] | None = None
        self.signal: int | None = None
        self.last_saved_step: int | None = None
        self.wall_before = 0.0           # wall time of earlier sessions of this run
        self.wall_start = time.perf_counter()

    # ------------------------------------------------------------------ fit
    def fit(self, max_minutes: float | None) -> dict[str, Any]:
        self.max_minutes = max_minutes
        max_steps = self.config.get("max_steps")
        max_epochs = self.config.get("max_epochs")
        budget_s = None if max_minutes is None else 60.0 * max_minutes
        show = self.progress and self.proc.is_main
        if budget_s is None:
            bar = tqdm(total=max_steps, initial=self.step, desc=f"{self.task.name} {self.cell}", unit="step",
                       disable=not show, dynamic_ncols=True)
        else:  # a time limit: the bar counts seconds of training steps, the budget it is held to
            bar = tqdm(total=budget_s, desc=f"{self.task.name} {self.cell}", unit="s", disable=not show,
                       dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of training steps "
                                                      "[{elapsed} in all{postfix}]")
            bar.update(min(self.train_seconds, budget_s))
        recent: deque[float] = deque(maxlen=50)
        with self._signals_caught(), bar:
            stop = False
            while not stop and not (max_epochs and self.epoch >= max_epochs):
                batches = self._epoch_batches()
                while True:
                    started = time.perf_counter()
                    batch = next(batches, None)
                    over_time = budget_s is not None and self.train_seconds >= budget_s
                    over_steps = max_steps is not None and self.step >= max_steps
                    ended, halted, interrupted = distributed.sum_across(
                        [float(batch is None), float(over_time or over_steps), float(self.signal is not None)],
                        self.proc)
                    if interrupted:
                        self._interrupt(bar)
                    if halted:
                        stop = True
                        break
                    if ended:
                        if self.batch_in_epoch == 0:
                            raise DataError(f"task {self.task.name} made no training batches "
                                            "(is the training split smaller than one batch?)")
                        self.epoch += 1
                        self.batch_in_epoch = 0
                        if not self.config.get("eval_every"):
                            self._validate()
                        break
                    loss = self.train_step(batch)
                    self.train_seconds += time.perf_counter() - started
                    recent.append(loss)
                    if budget_s is None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{statistics.fmean(recent):.4f}", **self._bar_metric(), refresh=False)
                    else:
                        bar.update(min(self.train_seconds, budget_s) - bar.n)
                        bar.set_postfix(step=self.step, loss=f"{statistics.fmean(recent):.4f}", **self._bar_metric(),
                                        refresh=False)
                    every = self.config.get("eval_every")
                    if every and self.step % every == 0:
                        self._validate()
            if not self.evals or self.evals[-1]["step"] != self.step:
                self._validate()
            if self.last_saved_step != self.step:
                self._save_last()
        return self._finish()

    def _epoch_batches(self):
        it = iter(self.task.train_batches(self.data, self.config, epoch=self.epoch,
                                          rank=self.proc.rank, world_size=self.proc.world_size))
        for _ in range(self.batch_in_epoch):  # resuming inside an epoch
            if next(it, None) is None:
                raise TrainingError("cannot resume: the epoch has fewer batches than the checkpoint "
                                    "had already trained on (did the data change?)")
        if self.pending_carry is not None:
            self.task.load_carry_state(self.pending_carry)
            self.pending_carry = None
        return it

    def _autocast(self):
        if self.proc.device.type == "cuda" and self.config.get("amp", True):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: Any) -> float:
        """One optimiser step on ``batch``; returns its mean training loss."""
        started = time.perf_counter()
        self.opt.set_lr(self.opt.lr_at(self.step, self.epoch) * self.task.lr_scale(batch))
        self.ddp_model.train()
        with self._autocast():
            loss, items = self.task.loss(self.ddp_model, batch, self.proc.device)
        value = float(loss.detach())
        loss_sum, item_sum, bad = distributed.sum_across(
            [value * items, float(items), float(not math.isfinite(value))], self.proc)
        if bad:
            self._fail(f"training loss is {value} at step {self.step + 1}")
        self.opt.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = float(self.config.get("clip") or 0.0)
        if clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
            if not math.isfinite(norm):
                self._fail(f"gradient norm is {norm} at step {self.step + 1}")
        self.opt.optimizer.step()
        if self.proc.device.type == "cuda":
            torch.cuda.synchronize(self.proc.device)
        self.step += 1
        self.batch_in_epoch += 1
        self.items += int(item_sum)
        mean_loss = loss_sum / max(item_sum, 1.0)
        self.losses.append(mean_loss)
        self.step_seconds.append(time.perf_counter() - started)
        return mean_loss

    def _fail(self, what: str) -> None:
        kept = (f"the last good checkpoint (step {self.last_saved_step}) is kept in "
                f"{self.out_dir / 'checkpoints'}" if self.last_saved_step is not None
                else "no checkpoint had been written yet")
        raise TrainingError(f"{what}: training stopped; {kept}")

    # ----------------------------------------------------------- validation
    def _metric_sign(self) -> float:
        return -1.0 if self.task.higher_is_better else 1.0

    def _bar_metric(self) -> dict[str, str]:
        if not self.evals:
            return {}
        name = self.task.primary_metric
        return {f"valid_{name}": f"{self.evals[-1]['metrics'][name]:.4g}"}

    def evaluate(self, split: str) -> dict[str, float | str]:
        """``split``'s metrics, computed on rank 0.  The task's declared metrics are shared
        with every rank (they pick the best checkpoint); anything more the task reports (other
        test sets, a BLEU signature) stays on rank 0, the only rank that writes results."""
        self.model.eval()
        extras: dict[str, float | str] = {}
        if self.proc.is_main:
            with torch.no_grad(), self._autocast():
                metrics = self.task.evaluate(self.model, self.data, split, self.config, self.proc.device)
            missing = set(self.task.metrics) - set(metrics)
            if missing:
                raise TrainingError(f"task {self.task.name} did not report metrics {sorted(missing)}")
            values = [float(metrics[m]) for m in self.task.metrics]
            extras = {k: v if isinstance(v, str) else float(v)
                      for k, v in metrics.items() if k not in self.task.metrics}
        else:
            values = [0.0] * len(self.task.metrics)
        self.model.train()
        return dict(zip(self.task.metrics, distributed.broadcast_values(values, self.proc))) | extras

    def _validate(self) -> None:
        primary = self.task.primary_metric
        with self.opt.averaged_weights():
            metrics = self.evaluate("valid")
            score = self._metric_sign() * metrics[primary]
            if self.best is None or score < self._metric_sign() * self.best["metrics"][primary]:
                self.best = {"step": self.step, "metrics": metrics}
                if self.proc.is_main:
                    save_checkpoint(self.out_dir, "best", model_state=self.model.state_dict(),
                                    meta=self._meta(metrics), vocab=self.task.vocab_state(self.data),
                                    trainer_state=None)
        self.evals.append({"step": self.step, "metrics": metrics})
        self.opt.on_validation(score)
        self._save_last()

    # ---------------------------------------------------------- checkpoints
    def _meta(self, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        return {"task": self.task.name, "cell": self.cell, "preset": self.preset,
                "config": self.config, "step": self.step, "epoch": self.epoch,
                "data_dir": None if self.data_dir is None else str(self.data_dir),
                "valid": metrics}

    def _save_last(self) -> None:
        # Every rank's RNG and carried state, so that each rank resumes exactly.
        per_rank = distributed.gather_tensors(
            {"rng": torch.get_rng_state(), **{f"carry.{k}": v for k, v in self.task.carry_state().items()}},
            self.proc)
        if self.proc.is_main:
            state = {
                "optimization": self.opt.state_dict(),
                "rng": rng_state(),
                "rank_rng": [r["rng"] for r in per_rank],
                "rank_carry": [{k[6:]: v for k, v in r.items() if k.startswith("carry.")} for r in per_rank],
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "train_seconds": self.train_seconds, "wall_seconds": self._wall_seconds(),
                "items": self.items,
                "losses": torch.tensor(self.losses, dtype=torch.float64),
                "step_seconds": torch.tensor(self.step_seconds, dtype=torch.float64),
                "evals": self.evals, "best": self.best,
            }
            save_checkpoint(self.out_dir, "last", model_state=self.model.state_dict(), meta=self._meta(),
                            vocab=self.task.vocab_state(self.data), trainer_state=state)
        self.last_saved_step = self.step
        distributed.barrier(self.proc)

    def restore(self, checkpoint) -> None:
        self.model.load_state_dict(checkpoint.model_state())
        state = checkpoint.trainer_state()
        self.opt.load_state_dict(state["optimization"])
        set_rng_state(state["rng"])
        rank = self.proc.rank if self.proc.rank < len(state["rank_rng"]) else 0
        torch.set_rng_state(state["rank_rng"][rank])
        self.pending_carry = state["rank_carry"][rank] or None
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.train_seconds, self.items = float(state["train_seconds"]), int(state["items"])
        self.wall_before = float(state["wall_seconds"])
        self.losses = state["losses"].tolist()
        self.step_seconds = state["step_seconds"].tolist()
        self.evals, self.best = list(state["evals"]), state["best"]
        self.last_saved_step = self.step

    # -------------------------------------------------------------- signals
    @contextlib.contextmanager
    def _signals_caught(self):
        def note(signum, _frame):
            self.signal = signum

        previous = {}
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, note)
        except ValueError:  # not the main thread: leave signals alone
            pass
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _interrupt(self, bar) -> None:
        self._save_last()
        bar.close()
        name = signal.Signals(self.signal or signal.SIGINT).name
        raise Interrupted(self.signal or signal.SIGINT,
                          f"{name} at step {self.step}: checkpoint saved in {self.out_dir}; "
                          "continue with the same command and --resume")

    # --------------------------------------------------------------- finish
    def _finish(self) -> dict[str, Any]:
        best = load_checkpoint(self.out_dir, "best") if self.proc.is_main else None
        if best is not None:
            self.model.load_state_dict(best.model_state())
        test = self.evaluate("test")
        timed = self.step_seconds[min(WARMUP_STEPS, len(self.step_seconds) // 2):]
        results = {
            "task": self.task.name,
            "cell": self.cell,
            "params": count_parameters(self.model),
            "preset": self.preset,
            "config": self.config,
            "steps": self.step,
            "epochs_completed": self.epoch,
            "wall_s": round(self._wall_seconds(), 3),
            "train_s": round(self.train_seconds, 3),
            "time_per_batch_s": statistics.median(timed) if timed else None,
            "tokens_per_s": self.items / sum(self.step_seconds) if self.step_seconds else None,
            "max_minutes": self.max_minutes,
            "world_size": self.proc.world_size,
            "device": str(self.proc.device),
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "best_step": self.best["step"] if self.best else None,
            "metrics": {"valid": self.best["metrics"] if self.best else None, "test": test},
        }
        if self.proc.is_main:
            log = compact_log({"train_loss": self.losses, "step_seconds": self.step_seconds, "evals": self.evals})
            atomic_write_json(self.out_dir / "log.json", log, compact=True)
            atomic_write_json(self.out_dir / "results.json", results)
        distributed.barrier(self.proc)
        return results

    def _wall_seconds(self) -> float:
        """Wall-clock time of the run so far, validation included, over all resumptions."""
        return self.wall_before + time.perf_counter() - self.wall_start
