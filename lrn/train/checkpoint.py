"""Checkpoints that survive a kill at any moment and never unpickle arbitrary objects.

Layout inside a run directory::

    checkpoints/<slot>-<step>-<stamp>/   one complete checkpoint
        model.safetensors                the weights
        trainer.pt                       optimizer, schedule, RNG states, step, history
                                         (tensors and plain containers only:
                                         read back with torch.load(weights_only=True))
        meta.json                        task, cell, preset, config, step, metrics, and
                                         the sha256 of model.safetensors (checked on load)
        vocab.json                       the task's vocabularies
    checkpoints/<slot>.json              pointer: {"dir": ..., "step": ...}

``slot`` is "last" (for --resume) or "best" (the best validation metric, used by
eval/generate).  A checkpoint directory is first written under a temporary name and
renamed when complete; then the pointer file is replaced atomically (os.replace).
Whatever is killed when, the pointer names a complete checkpoint.  Anything unreadable
(a truncated or altered file, a pointer outside the run directory) raises ValueError
naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

SLOTS = ("last", "best")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any, *, compact: bool = False) -> None:
    """``obj`` as JSON, indented for people to read, or on one line (``compact``) for large logs."""
    text = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj, indent=2)
    atomic_write_text(path, text + "\n")


@dataclass
class Checkpoint:
    directory: Path
    meta: dict[str, Any]
    vocab: dict

    def model_state(self) -> dict[str, torch.Tensor]:
        path = self.directory / "model.safetensors"
        expected = self.meta.get("weights_sha256")
        if expected is not None and _sha256(path) != expected:
            raise ValueError(f"{path}: the weights do not match the sha256 in meta.json (altered or damaged)")
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error type for a damaged file
            raise ValueError(f"{path}: not readable weights ({e})") from e

    def trainer_state(self) -> dict[str, Any]:
        path = self.directory / "trainer.pt"
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise ValueError(f"{path}: not a readable trainer state; only tensors and plain containers "
                             f"are loaded ({' '.join(str(e).split())[:200]})") from e


def _sha256(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def save_checkpoint(run_dir: Path, slot: str, *, model_state: dict[str, torch.Tensor],
                    meta: dict[str, Any], vocab: dict, trainer_state: dict[str, Any] | None) -> Path:
    """Write one complete checkpoint into ``slot`` and drop the slot's older ones."""
    if slot not in SLOTS:
        raise ValueError(f"checkpoint slot must be one of {SLOTS}, got {slot!r}")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"{slot}-{meta['step']:08d}-{time.time_ns()}"
    tmp = root / f".tmp-{name}"
    tmp.mkdir()
    # safetensors refuses shared or non-contiguous storage (tied embeddings share it).
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model_state.items()}
    save_file(tensors, str(tmp / "model.safetensors"))
    if trainer_state is not None:
        torch.save(trainer_state, tmp / "trainer.pt")
    meta = {**meta, "weights_sha256": _sha256(tmp / "model.safetensors")}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (tmp / "vocab.json").write_text(json.dumps(vocab) + "\n", encoding="utf-8")
    for file in tmp.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    os.rename(tmp, root / name)
    atomic_write_json(root / f"{slot}.json", {"dir": name, "step": meta["step"]})
    _remove_stale(root, slot, keep=name)
    return root / name


def _remove_stale(root: Path, slot: str, keep: str) -> None:
    for entry in root.iterdir():
        stale_slot = entry.name.startswith(f"{slot}-") and entry.name != keep
        if entry.is_dir() and (stale_slot or entry.name.startswith(f".tmp-{slot}-")):
            shutil.rmtree(entry, ignore_errors=True)


def load_checkpoint(run_dir: Path, slot: str) -> Checkpoint | None:
    """The checkpoint in ``slot``, or None if the run has none there."""
    pointer = Path(run_dir) / "checkpoints" / f"{slot}.json"
    if not pointer.is_file():
        return None
    target = _read_json(pointer)
    name = target.get("dir") if isinstance(target, dict) else None
    # the pointer names a checkpoint directory beside it, never a path elsewhere
    if not isinstance(name, str) or not name.startswith(f"{slot}-") or Path(name).name != name:
        raise ValueError(f"{pointer}: not a checkpoint pointer of this run (dir {name!r})")
    directory = pointer.parent / name
    meta, vocab = _read_json(directory / "meta.json"), _read_json(directory / "vocab.json")
    return Checkpoint(directory, meta, vocab)
