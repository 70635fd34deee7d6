"""``predict`` under torchrun: each process predicts its shard of one plan, rank 0 reports for all.

``torchrun --nproc_per_node N [--nnodes M ...] -m clip2depth predict ...`` starts N processes per node
with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set. Every process plans the same inputs (sorted as
``predict`` always finds them); before anything is written the processes check that they found the
same plan (:func:`agree`), so a folder that changes under them is an error, not overlapping work.
Process ``r`` then predicts jobs ``r, r + N·M, ...`` of the plan (:func:`shard_plan`: a video is one
job, so it stays whole) on device ``cuda:LOCAL_RANK`` (or the CPU), writing exactly the files one
process would. At the end rank 0 gathers every record (:func:`gather_records`) and prints one summary.

The processes talk over a gloo process group (CPU tensors, whatever the device), and only twice:
after planning and at the end. Records travel as JSON, never as pickles.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist

from clip2depth.errors import ConfigError
from clip2depth.inference.manifest import record_row, row_record
from clip2depth.inference.plan import InputRecord, PredictionPlan

logger = logging.getLogger(__name__)

WAIT_TIMEOUT = datetime.timedelta(days=7)
"""How long a process waits for the others at the end: ranks finish at different times, and torchrun
stops them all when one fails, so only a hung process would make one wait this long."""


@dataclass(frozen=True)
class Shard:
    """This process's place among torchrun's processes."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0 prints the summary and writes the manifest."""
        return self.rank == 0


def current_shard() -> Shard | None:
    """The shard torchrun (or any launcher setting ``WORLD_SIZE`` and ``RANK``) gave this process; else None.

    Raises:
        ConfigError: the variables are not whole numbers, or ``RANK`` is not below ``WORLD_SIZE``.
    """
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun sets them); got "
                          f"{os.environ.get('WORLD_SIZE')!r}, {os.environ.get('RANK')!r}, "
                          f"{os.environ.get('LOCAL_RANK')!r}") from None  # fmt: skip
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} must lie in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return Shard(rank, world, local_rank)


def shard_device(device: str, shard: Shard) -> str:
    """``--device`` for this process: ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` (when CUDA is there);
    a device with an index (``cuda:1``) or ``cpu`` is taken as given."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"cuda:{shard.local_rank}"
    return device


@contextlib.contextmanager
def process_group(shard: Shard | None) -> Iterator[None]:
    """Join torchrun's processes for the block (gloo; left again afterwards if this block joined)."""
    if shard is None or shard.world == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group(backend="gloo", timeout=WAIT_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _gather_json(value: Any, shard: Shard, *, to_all: bool) -> list[Any] | None:
    """Every rank's ``value`` (JSON-encodable), in rank order: on every rank, or (``to_all=False``) on rank 0."""
    if shard.world == 1:
        return [value]
    data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(shard.world)]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: data.numel()] = data
    if to_all:
        parts = [torch.empty(longest, dtype=torch.uint8) for _ in range(shard.world)]
        dist.all_gather(parts, padded)
    else:
        parts = [torch.empty(longest, dtype=torch.uint8) for _ in range(shard.world)] if shard.is_main else None
        dist.gather(padded, parts, dst=0)
        if not shard.is_main:
            return None
    return [json.loads(p[: int(n)].numpy().tobytes()) for p, n in zip(parts, sizes, strict=True)]


def plan_digest(plan: PredictionPlan) -> str:
    """A fingerprint of what a plan does (inputs, outputs, skips, refusals), to compare plans across ranks."""
    text = json.dumps([[(j.index, str(j.path), str(j.base)) for j in plan.jobs],
                       [j.index for j in plan.skipped], [(r.index, r.input) for r in plan.refused]])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


def agree(shard: Shard, plan: PredictionPlan | None, problem: str | None) -> str | None:
    """Compare the ranks' plans before anyone writes; the problem to report, the same on every rank.

    Args:
        plan: this rank's plan (None when planning failed).
        problem: why this rank cannot go on (an error message), else None.

    Returns:
        Rank 0's problem if it has one, else any rank's, else a message when the plans differ, else None.
    """
    states = _gather_json([plan_digest(plan) if plan is not None else None, problem], shard, to_all=True)
    assert states is not None
    problems = [p for _, p in states if p]
    if problems:
        return problems[0]
    if len({digest for digest, _ in states}) > 1:
        return ("the torchrun processes found different inputs or outputs (files changed while they were listed?); "
                "run the command again once the inputs stay as they are")  # fmt: skip
    return None


def shard_plan(plan: PredictionPlan, shard: Shard) -> PredictionPlan:
    """The part of ``plan`` this process runs: every ``world``-th job from ``rank`` on; rank 0 also reports
    the skipped and refused inputs (so that each is counted once)."""
    return replace(plan, jobs=plan.jobs[shard.rank :: shard.world],
                   skipped=plan.skipped if shard.is_main else (), refused=plan.refused if shard.is_main else (),
                   existing=())  # fmt: skip


def gather_records(records: Sequence[InputRecord], shard: Shard) -> list[InputRecord] | None:
    """Every rank's records on rank 0, in input order (None on the other ranks)."""
    rows = [{**record_row(r), "index": r.index} for r in records]
    gathered = _gather_json(rows, shard, to_all=False)
    if gathered is None:
        return None
    merged = [row_record(row, row["index"]) for part in gathered for row in part]
    return sorted(merged, key=lambda r: r.index)
