"""Process layout of a run: one process, or one per GPU under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run and the device it trains on."""

    world: int
    rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run folder."""
        return self.rank == 0


def setup_ranks() -> Ranks:
    """Join the process group when started by ``torchrun`` (NCCL on CUDA, gloo on CPU) and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return Ranks(world=world, rank=rank, device=device)


def all_reduce_sum(values: list[float], ranks: Ranks) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64); ``values`` itself for one process."""
    if ranks.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ranks.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def amp_settings(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a gradient scaler)`` for ``train.amp`` on ``device`` (CUDA only)."""
    if device.type != "cuda" or mode == "fp32":
        return None, False
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16, True
    return torch.bfloat16, False
