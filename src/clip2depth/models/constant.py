"""The trivial baseline: one depth everywhere (the mean depth of the training set)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from clip2depth.models.base import DepthModel


class ConstantDepth(DepthModel):
    """Predicts ``depth`` metres at every pixel; goes through the same evaluation path as real models."""

    @property
    def patch_size(self) -> int:
        return 1

    @property
    def processing_size(self) -> None:
        """None: one depth everywhere needs no scale, so images are predicted at their own size."""
        return None

    def __init__(self, depth: float) -> None:
        super().__init__()
        self.register_buffer("depth", torch.tensor(float(depth)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        return self.depth.expand(b, 1, h, w).clone()


def mean_training_depth(dataset: Dataset, *, limit: int | None = None) -> float:
    """Mean of all valid ground-truth depths (metres) over the first ``limit`` samples."""
    total, count = 0.0, 0
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        depth = dataset[i]["depth"]
        valid = depth[depth > 0]
        total += float(valid.sum())
        count += valid.numel()
    return total / max(count, 1)
