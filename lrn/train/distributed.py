"""Multi-process training under ``torchrun``: process group, agreement between ranks.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them training is single-process.
gloo is used on CPU, nccl on CUDA.  Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Process:
    """This process's place in the training group (one process without torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Process:
    """Join the torchrun process group if there is one (idempotent)."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Process(device=torch.device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Process(dist.get_rank(), dist.get_world_size(), torch_device)


def sum_across(values: list[float], proc: Process) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (identity when single-process)."""
    if not proc.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=proc.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_values(values: list[float], proc: Process) -> list[float]:
    """Rank 0's ``values`` on every rank."""
    if not proc.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=proc.device)
    dist.broadcast(t, 0)
    return t.tolist()


def gather_tensors(tensors: dict[str, torch.Tensor], proc: Process) -> list[dict[str, torch.Tensor]]:
    """Every rank's ``tensors`` (same keys and shapes on each rank), in rank order."""
    if not proc.enabled:
        return [tensors]
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(proc.world_size)]
    for key in sorted(tensors):
        local = tensors[key].to(proc.device)
        parts = [torch.empty_like(local) for _ in range(proc.world_size)]
        dist.all_gather(parts, local)
        for r, part in enumerate(parts):
            out[r][key] = part.cpu()
    return out


def barrier(proc: Process) -> None:
    if proc.enabled:
        dist.barrier()
