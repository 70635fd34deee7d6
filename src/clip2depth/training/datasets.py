"""The data side of a run: the recipe's datasets, deterministic batch order and seeded augmentation.

The data order is a pure function of (seed, epoch): a seeded permutation split into global batches,
each rank taking its slice. Augmentation draws from a generator seeded by (seed, epoch, index). So the
data position is just (epoch, batch), and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, Subset

from clip2depth.data import build_dataset
from clip2depth.data.transforms import TrainAugment
from clip2depth.errors import DataError
from clip2depth.training.config import AugmentSection, DataSection

logger = logging.getLogger(__name__)


def build_datasets(data: DataSection, *, seed: int) -> tuple[Dataset, Dataset]:
    """``(train, validation)`` datasets of the recipe's ``data`` section (un-augmented samples).

    For ``folder``: ``train_list`` (or ``<root>/<train_split>.txt``) trains; ``val_list`` validates, else
    ``val_fraction`` of the train list is held out (a permutation seeded by ``seed``), else
    ``<root>/<val_split>.txt``.

    Raises:
        DataError: a missing root or list file, or a split too small to hold anything.
    """
    if data.dataset != "folder":
        train = build_dataset(data.dataset, split=data.train_split, root=data.root, **data.kwargs)
        val = build_dataset(data.dataset, split=data.val_split, root=data.root, **data.val_kwargs)
        return train, val
    if data.train_list is None and data.root is None:
        raise DataError("the folder dataset needs data.train_list=PATH (a list file of 'rgb depth [focal]' "
                        f"lines) or --data-root holding {data.train_split}.txt")
    if data.val_list is None and not data.val_fraction and data.root is None:
        raise DataError("the folder dataset needs validation images: set data.val_list=PATH, or "
                        "data.val_fraction (e.g. 0.1) to hold out part of the train list")
    for key, path in (("train_list", data.train_list), ("val_list", data.val_list)):
        if path is not None and not Path(path).expanduser().is_file():
            raise DataError(f"data.{key}={path}: no such list file; pass the path of a file of 'rgb depth [focal]' "
                            "lines")
    common = {"depth_scale": data.depth_scale}
    train = build_dataset("folder", split=data.train_split, root=data.root, list_file=data.train_list,
                          **common, **data.kwargs)
    if data.val_list is not None or not data.val_fraction:
        val = build_dataset("folder", split=data.val_split, root=data.root, list_file=data.val_list,
                            **common, **data.val_kwargs)
        return train, val
    n = len(train)
    n_val = max(1, round(n * data.val_fraction))
    if n_val >= n:
        raise DataError(f"{train.list_file}: {n} samples cannot give {data.val_fraction:g} of them to validation "
                        "and keep some for training; add samples or lower data.val_fraction")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    logger.info("holding out %d of %d samples of %s for validation", n_val, n, train.list_file)
    return Subset(train, sorted(perm[n_val:])), Subset(train, sorted(perm[:n_val]))


def build_augment(a: AugmentSection) -> TrainAugment:
    return TrainAugment(crop_size=a.crop_size, rotate_deg=a.rotate_deg, flip_p=a.flip_p, gamma=a.gamma,
                        brightness=a.brightness, color=a.color, kb_crop=a.kb_crop)


class EpochBatchSampler(Sampler):
    """Yields ``(epoch, index)`` of this rank's micro-batches, from global batch ``start_batch`` on."""

    def __init__(self, n: int, *, seed: int, epoch: int, global_batch: int, rank: int, world: int,
                 start_batch: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch
        self.global_batch, self.rank, self.world = global_batch, rank, world
        self.start_batch = start_batch
        self.local = global_batch // world

    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = perm[b * self.global_batch : (b + 1) * self.global_batch]
            for index in chunk[self.rank * self.local : (self.rank + 1) * self.local].tolist():
                yield self.epoch, index

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.local


class AugmentedDataset(Dataset):
    """Applies :class:`TrainAugment` with a generator seeded by (seed, epoch, index); a bad sample becomes
    ``{"error": message}`` (skipped and counted by the trainer)."""

    def __init__(self, base: Dataset, augment: TrainAugment, seed: int) -> None:
        self.base, self.augment, self.seed = base, augment, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor] | dict[str, str]:
        epoch, index = key
        try:
            sample = self.base[index]
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
            sample = self.augment(sample, gen)
        except DataError as exc:
            return {"error": str(exc)}
        return {"image": sample["image"], "depth": sample["depth"]}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples (``image`` B×3×H×W, ``depth`` B×1×H×W metres); list the errors of the others."""
    good = [it for it in items if "error" not in it]
    errors = [it["error"] for it in items if "error" in it]
    if not good:
        return {"errors": errors}
    return {
        "image": torch.stack([it["image"] for it in good]),
        "depth": torch.stack([it["depth"] for it in good]),
        "errors": errors,
    }
