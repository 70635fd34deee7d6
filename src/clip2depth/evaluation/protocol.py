"""Evaluation on the community protocol (docs/method.md#evaluation-protocol), for any depth model and any dataset.

One path for every model (CLIP2Depth, the DepthCLIP baseline) and every caller (``clip2depth eval``,
validation during training, the ablation runner). Bad items never end an evaluation: malformed list
lines, unreadable files, size mismatches, images too large for memory and samples without valid ground
truth are reported and skipped; the rest is evaluated.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from clip2depth.data.transforms import paste_into_canvas
from clip2depth.errors import ConfigError, DataError, is_out_of_memory
from clip2depth.evaluation.metrics import METRIC_KEYS, MetricAverager, compute_metrics, crop_mask
from clip2depth.io.atomic import atomic_path, atomic_write_json
from clip2depth.io.depth import save_depth_png16
from clip2depth.io.outputs import writable_folder
from clip2depth.io.progress import progress as progress_bar
from clip2depth.models.infer import model_device, predict_depth

logger = logging.getLogger(__name__)

ExtraMetrics = Callable[[np.ndarray, np.ndarray], dict[str, float]]
"""``(pred, gt) -> {name: value}`` for one image: pred H×W metres at the ground truth's size, gt H×W
metres with 0 wherever a pixel is invalid or outside the crop. A nan value leaves that image out of
that name's mean."""


@dataclass
class EvalSettings:
    """Everything that changes the numbers; written into ``metrics.json``."""

    min_depth: float = 1e-3
    max_depth: float = 10.0
    crop: str | None = "nyu_eigen"
    flip_tta: bool = False
    input_size: tuple[int, int] | None = None  # None: the image's own size rounded to the patch size
    input_box: tuple[int, int, int, int] | None = None  # (top, left, h, w): predict inside it only
    png_scale: float = 1000.0  # 1000 for NYU-style PNGs, 256 for KITTI-style
    max_side: int | None = None  # inputs longer than this are predicted shrunk, depth resized back
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast; see models.infer.precision_context)

    def scale(self) -> dict[str, Any]:
        """The ``predict_depth`` arguments that fix the network size: ``input_size``, else ``max_side``, else the
        image's own size (``native``), never the model's own scale, so the protocol's sizes do not depend on
        the model."""
        if self.input_size is not None:
            return {"size": self.input_size}
        if self.max_side is not None:
            return {"max_side": self.max_side}
        return {"native": True}


@dataclass
class EvalResult:
    metrics: dict[str, float]
    count: int
    skipped: list[dict[str, str]] = field(default_factory=list)  # no valid ground-truth pixel
    # unreadable / inconsistent / out of memory ({"name", "reason", "out_of_memory": True})
    failed: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[dict[str, Any]] = field(default_factory=list)  # malformed list-file lines (not evaluated)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    averager_state: dict[str, float] = field(default_factory=dict)  # for reducing over ranks
    examples: list[tuple[dict[str, Any], np.ndarray]] = field(default_factory=list)  # (sample, prediction)
    extra: dict[str, float] = field(default_factory=dict)  # means of the ``extra_metrics`` values

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "count": self.count,
            "skipped_count": len(self.skipped),
            "failed_count": len(self.failed),
            "bad_line_count": len(self.bad_lines),
            "skipped": self.skipped,
            "failed": self.failed,
            "bad_lines": self.bad_lines,
            "settings": self.settings,
            "seconds": round(self.seconds, 2),
            **({"extra_metrics": self.extra} if self.extra else {}),
        }


class _SafeItems(Dataset):
    """Wraps a dataset so a bad item becomes a report instead of an exception in a worker."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        try:
            sample = self.dataset[index]
        except DataError as exc:
            return {"error": str(exc), "index": index}
        image, depth = sample["image"], sample["depth"]
        if "crop_box" not in sample and tuple(image.shape[-2:]) != tuple(depth.shape[-2:]):
            return {
                "error": f"{sample.get('path', index)}: image {tuple(image.shape[-2:])} and depth "
                f"{tuple(depth.shape[-2:])} differ in size; fix the pair or the list file",
                "index": index,
            }
        return sample


def _first(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


def predict_sample(
    model: nn.Module, sample: dict[str, Any], settings: EvalSettings
) -> tuple[np.ndarray, np.ndarray | None]:
    """Prediction at the ground truth's size, and the mask of pixels the prediction covers (None: all).

    KITTI inputs carry ``crop_box`` (the KB crop inside the ground truth): the prediction is pasted
    into a zero canvas of the ground-truth size, as the BTS protocol does. With ``settings.input_box``
    only that window of the image is predicted (DepthCLIP's protocol) and only it is evaluated.
    """
    device = model_device(model)
    image = sample["image"].unsqueeze(0).to(device)
    gt_size = tuple(sample["depth"].shape[-2:])
    box = sample.get("crop_box")
    if settings.input_box is not None:
        top, left, h, w = settings.input_box
        if top + h > image.shape[-2] or left + w > image.shape[-1]:
            raise DataError(f"{sample.get('path')}: input_box={settings.input_box} exceeds the image "
                            f"{tuple(image.shape[-2:])}; give a box inside it")
        image = image[..., top : top + h, left : left + w]
        box = (top + (box[0] if box else 0), left + (box[1] if box else 0), h, w)
    depth = predict_depth(model, image, **settings.scale(), flip_tta=settings.flip_tta,
                          precision=settings.precision)[0, 0].float().cpu()
    if box is None:
        return depth.numpy(), None
    canvas = paste_into_canvas(depth, box, gt_size).numpy()
    if settings.input_box is None:
        return canvas, None
    covered = paste_into_canvas(torch.ones_like(depth, dtype=torch.bool), box, gt_size).numpy()
    return canvas, covered


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    settings: EvalSettings,
    *,
    save_png: str | Path | None = None,
    limit: int | None = None,
    num_workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    keep_predictions: int = 0,
    extra_metrics: ExtraMetrics | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` with the protocol in ``settings``.

    Args:
        save_png: directory for 16-bit prediction PNGs named ``<sample name>.png`` (×``png_scale``),
            as the BTS evaluator expects. Each PNG has the ground truth's full size (for KITTI the
            KB-crop prediction sits on a zero canvas, so BTS's evaluator runs without
            ``--do_kb_crop``); images skipped for having no valid ground truth get none.
        limit: evaluate only the first ``limit`` items (at least 1).
        shard: (rank, world_size): this process evaluates every world_size-th item from rank.
        keep_predictions: keep the first N (sample, prediction) pairs in ``result.examples`` for figures.
        extra_metrics: more per-image metrics (see :data:`ExtraMetrics`), computed on the images the
            standard metrics keep, added to ``per_image`` and averaged into ``result.extra``. The
            standard metrics are not affected.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit} must be at least 1 (or None for every item)", params=("limit",))
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    rank, world = shard
    items = _SafeItems(dataset, list(range(rank, n, world)))
    loader = DataLoader(items, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_first)
    averager = MetricAverager()
    result = EvalResult(metrics={}, count=0, settings=asdict(settings),
                        bad_lines=list(getattr(dataset, "bad_lines", [])))
    extra_values: dict[str, list[float]] = {}
    png_dir = writable_folder(save_png, "PNG folder") if save_png else None

    for sample in progress_bar(loader, enabled=progress, desc="eval", unit="img"):
        if "error" in sample:
            logger.warning("skipping item %d: %s", sample["index"], sample["error"])
            result.failed.append({"index": str(sample["index"]), "reason": sample["error"]})
            continue
        name = str(sample.get("name", sample.get("path", "")))
        try:
            pred, covered = predict_sample(model, sample, settings)
        except DataError as exc:
            logger.warning("skipping %s: %s", name, exc)
            result.failed.append({"name": name, "reason": str(exc)})
            continue
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            pred = None
        if pred is None:
            # Outside the except clause: the traceback (and the tensors its frames hold) is gone by now.
            _release_memory(model_device(model))
            h, w = sample["image"].shape[-2:]
            reason = f"{sample.get('path', name)}: out of memory predicting {h}×{w} (max_side={settings.max_side})"
            logger.warning("skipping %s", reason)
            result.failed.append({"name": name, "reason": reason, "out_of_memory": True})
            continue
        gt = sample["depth"][0].numpy()
        if covered is not None:
            gt = np.where(covered, gt, 0.0)
        metrics = compute_metrics(pred, gt, min_depth=settings.min_depth, max_depth=settings.max_depth,
                                  crop=settings.crop)
        averager.update(metrics, name)
        if metrics is None:
            result.skipped.append({"name": name, "reason": "no valid ground-truth pixel"})
            continue
        extra = {}
        if extra_metrics is not None:
            mask = crop_mask(settings.crop, *gt.shape)
            extra = extra_metrics(pred, gt if mask is None else np.where(mask, gt, 0.0))
            for key, value in extra.items():
                extra_values.setdefault(key, []).append(float(value))
        result.per_image.append({"name": name, **metrics, **extra})
        if png_dir:
            save_depth_png16(pred, png_dir / f"{name}.png", scale=settings.png_scale)
        if len(result.examples) < keep_predictions:
            result.examples.append((sample, pred))

    summary = averager.result()
    result.metrics = {k: summary[k] for k in METRIC_KEYS}
    result.count = averager.count
    result.seconds = time.perf_counter() - start
    result.averager_state = averager.state()
    # nan marks "undefined for this image" (e.g. no ground-truth edge): left out of that mean only.
    result.extra = {k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for k, v in extra_values.items()}
    model.train(was_training)
    return result


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """Rows of metrics as a markdown table (one row per named result)."""
    head = "| | " + " | ".join(METRIC_KEYS) + " |"
    sep = "|---|" + "---:|" * len(METRIC_KEYS)
    lines = [head, sep]
    for label, metrics in rows.items():
        cells = ["nan" if math.isnan(metrics[k]) else f"{metrics[k]:.4f}" for k in METRIC_KEYS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(result: EvalResult, out_dir: str | Path, extra: dict[str, Any] | None = None) -> None:
    """``metrics.json`` (summary, settings, skipped and failed items) and ``per_image.csv``."""
    out_dir = writable_folder(out_dir, "output folder")
    data = result.to_json()
    if extra:
        data.update(extra)
    atomic_write_json(out_dir / "metrics.json", data)
    columns = ["name", *METRIC_KEYS, *result.extra]
    with atomic_path(out_dir / "per_image.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in result.per_image:
            writer.writerow({k: row.get(k, math.nan) for k in columns})
