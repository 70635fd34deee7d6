"""Temporal consistency of per-frame depth on a video: flicker, and with ground truth, scale stability.

The model sees each frame alone, so nothing ties consecutive predictions together. The metrics here
say how much they still agree (definitions in :class:`TemporalAccumulator`; ``docs/analyses.md`` shows
how to read them). Frames come from a video, a folder of images or a rendered synthetic camera path, and
are processed as a stream: memory does not grow with the number of frames.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clip2depth.errors import DataError
from clip2depth.evaluation.metrics import compute_metrics
from clip2depth.io.depth import read_depth_file
from clip2depth.io.figures import figure, save_png
from clip2depth.io.images import load_image
from clip2depth.io.inputs import expand_inputs, is_image_path
from clip2depth.models.infer import image_tensor, predict_batch, size_batches

logger = logging.getLogger(__name__)

STATIC_TAU = 0.02
"""Largest per-channel colour change (RGB in [0, 1], about 5/255) of a pixel counted as static."""

Frame = tuple[str, np.ndarray]
"""A named frame: (name, H×W×3 RGB, uint8 or float in [0, 1])."""


# ------------------------------------------------------------------------------------------ sources


def synthetic_sequence(n_frames: int, *, size: tuple[int, int] = (240, 320), motion: float = 1.0,
                       seed: int = 0) -> tuple[list[Frame], list[np.ndarray]]:
    """A rendered camera path (:func:`clip2depth.data.render_sequence`) and its exact depth (H×W metres);
    ``motion=0`` gives ``n_frames`` identical frames."""
    from clip2depth.data import render_sequence

    images, depths = render_sequence(seed, n_frames, size, motion)
    frames = [(f"{i:06d}", im.permute(1, 2, 0).numpy()) for i, im in enumerate(images)]
    return frames, [d[0].numpy() for d in depths]


def video_frames(path: str | Path, *, max_frames: int | None = None, stride: int = 1) -> Iterator[Frame]:
    """Every ``stride``-th frame of a video (at most ``max_frames``), named by its 6-digit frame index."""
    from clip2depth.io.video import iter_video_frames

    frames = ((f"{i:06d}", f) for i, f in enumerate(iter_video_frames(path)) if i % stride == 0)
    return itertools.islice(frames, max_frames)


def folder_frames(folder: str | Path, *, max_frames: int | None = None, stride: int = 1) -> Iterator[Frame]:
    """The images of ``folder`` in sorted name order, named by file stem (checked now, read lazily)."""
    paths, problems = expand_inputs([str(folder)])
    paths = [p for p in paths if is_image_path(p)][::stride][:max_frames]
    if not paths:
        reason = problems[0][1] if problems else "no image files"
        raise DataError(f"{folder}: {reason}; --frames needs a folder of images (one per frame)")
    return ((p.stem, load_image(p)) for p in paths)


def depth_reader(depth_dir: str | Path, *, depth_scale: float = 1000.0) -> Callable[[str], np.ndarray]:
    """Ground truth by frame name from ``depth_dir``: ``<name>.npy`` (metres) or ``<name>.png`` (uint16 /
    ``depth_scale``), where ``<name>`` is the frame's name (file stem, or 6-digit index for a video)."""
    depth_dir = Path(depth_dir)
    if not depth_dir.is_dir():
        what = "is a file, not a folder" if depth_dir.exists() else "no such folder"
        raise DataError(f"--depth-dir {depth_dir}: {what}")

    def read(name: str) -> np.ndarray:
        for path in (depth_dir / f"{name}.npy", depth_dir / f"{name}.png"):
            if path.is_file():
                return read_depth_file(path, scale=depth_scale)
        raise DataError(f"no ground truth for frame {name}: expected {name}.npy or {name}.png in {depth_dir}")

    return read


# ------------------------------------------------------------------------------------------ metrics


def _mean_abs_log_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(np.abs(np.log(a[mask]) - np.log(b[mask])))) if mask.any() else math.nan


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nanstd(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite)) if len(finite) > 1 else math.nan


class TemporalAccumulator:
    """Per-frame and summary temporal metrics of a predicted depth sequence, fed one frame at a time.

    For consecutive frames t−1, t, with ``S_t`` the *static* pixels (every RGB channel changes by less
    than ``tau``) and predictions clamped to ``[min_depth, max_depth]``:

    - ``flicker_t = mean over S_t of |log p_t − log p_{t−1}|`` (no ground truth needed). A still
      camera on a still scene should give 0; camera motion moves depth under static-looking pixels
      too, so compare with ``gt_flicker`` when ground truth exists.
    - ``static_fraction_t`` = share of pixels in ``S_t``.

    With ground truth (``V`` = pixels with valid ground truth, ``min < g < max``):

    - ``gt_flicker_t`` = the same flicker of the ground truth on ``S_t ∩ V_t ∩ V_{t−1}``: what a
      perfectly consistent predictor would score on these pixels.
    - ``change_error_t = mean over V_t ∩ V_{t−1} of |(log p_t − log p_{t−1}) − (log g_t − log g_{t−1})|``:
      how wrong the predicted frame-to-frame change is, everywhere (0 when the prediction changes exactly
      like the truth, whatever its constant error).
    - ``abs_rel_t`` (:func:`clip2depth.evaluation.metrics.compute_metrics`, no crop) and
      ``scale_t = median over V_t of p_t / g_t`` (1 = metric scale right).

    Summary (:meth:`result`): means over pairs of ``flicker``, ``gt_flicker``, ``change_error``,
    ``static_fraction``; ``abs_rel_mean`` and ``abs_rel_std`` (standard deviation over frames),
    ``scale_mean``, ``scale_std``, and ``scale_drift = mean over pairs of |log scale_t − log scale_{t−1}|``.
    nan where undefined (no static pixel, a single frame). Ground-truth keys appear only when every frame
    had ground truth.
    """

    def __init__(self, *, tau: float = STATIC_TAU, min_depth: float = 1e-3, max_depth: float = 10.0) -> None:
        self.tau, self.min_depth, self.max_depth = tau, min_depth, max_depth
        self.per_frame: list[dict[str, Any]] = []
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
        self._all_gt = True

    def add(self, frame: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None, *, name: str = "") -> None:
        """Add the next frame (H×W×3 RGB, uint8 or [0, 1]), its prediction and optional ground truth (H×W m)."""
        rgb = image_tensor(frame).permute(1, 2, 0).numpy()  # the pixels the model saw
        pred = np.clip(np.nan_to_num(np.asarray(pred, dtype=np.float64), nan=self.min_depth, posinf=self.max_depth),
                       self.min_depth, self.max_depth)
        label = name or f"frame {len(self.per_frame)}"
        if pred.shape != rgb.shape[:2] or (gt is not None and gt.shape != pred.shape):
            raise DataError(f"{label}: frame {rgb.shape[:2]}, prediction {pred.shape} and ground truth "
                            f"{None if gt is None else gt.shape} must have the same size")
        row: dict[str, Any] = {"frame": len(self.per_frame), "name": name or f"{len(self.per_frame):06d}"}
        valid = None
        if gt is not None:
            gt = np.asarray(gt, dtype=np.float64)
            valid = np.isfinite(gt) & (gt > self.min_depth) & (gt < self.max_depth)
            metrics = compute_metrics(pred, gt, min_depth=self.min_depth, max_depth=self.max_depth)
            row["abs_rel"] = metrics["abs_rel"] if metrics else math.nan
            row["scale"] = float(np.median(pred[valid] / gt[valid])) if valid.any() else math.nan
        self._all_gt &= gt is not None
        if self._previous is not None:
            rgb0, pred0, gt0 = self._previous
            if rgb0.shape != rgb.shape:
                raise DataError(f"{label} is {rgb.shape[0]}×{rgb.shape[1]}, the frame before it "
                                f"{rgb0.shape[0]}×{rgb0.shape[1]}: a sequence needs frames of one size")
            static = np.max(np.abs(rgb - rgb0), axis=-1) < self.tau
            row["static_fraction"] = float(static.mean())
            row["flicker"] = _mean_abs_log_change(pred, pred0, static)
            if gt is not None and gt0 is not None:
                both = valid & np.isfinite(gt0) & (gt0 > self.min_depth) & (gt0 < self.max_depth)
                row["gt_flicker"] = _mean_abs_log_change(gt, np.where(both, gt0, 1.0), static & both)
                if both.any():
                    change = np.log(pred[both] / pred0[both]) - np.log(gt[both] / gt0[both])
                    row["change_error"] = float(np.mean(np.abs(change)))
                else:
                    row["change_error"] = math.nan
        self._previous = (rgb, pred, gt)
        self.per_frame.append(row)

    def result(self) -> dict[str, Any]:
        """``{"summary": {...}, "per_frame": [...]}``; frame t's pair values refer to frames t−1, t."""

        def column(key: str) -> list[float]:
            return [r[key] for r in self.per_frame if key in r]

        summary: dict[str, Any] = {
            "frames": len(self.per_frame),
            "flicker": _nanmean(column("flicker")),
            "static_fraction": _nanmean(column("static_fraction")),
        }
        if self.per_frame and self._all_gt:
            scales = column("scale")
            log_scales = [math.log(s) if s > 0 else math.nan for s in scales]
            drift = [abs(b - a) for a, b in zip(log_scales[:-1], log_scales[1:], strict=True)]
            summary.update({
                "gt_flicker": _nanmean(column("gt_flicker")),
                "change_error": _nanmean(column("change_error")),
                "abs_rel_mean": _nanmean(column("abs_rel")),
                "abs_rel_std": _nanstd(column("abs_rel")),
                "scale_mean": _nanmean(scales),
                "scale_std": _nanstd(scales),
                "scale_drift": _nanmean(drift),
            })
        return {"summary": summary, "per_frame": self.per_frame}


def temporal_metrics(
    preds: Iterable[np.ndarray],
    frames: Iterable[np.ndarray],
    gts: Iterable[np.ndarray] | None = None,
    *,
    tau: float = STATIC_TAU,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
) -> dict[str, Any]:
    """:class:`TemporalAccumulator` over whole sequences (per frame: H×W metres, H×W×3 RGB, H×W metres)."""
    acc = TemporalAccumulator(tau=tau, min_depth=min_depth, max_depth=max_depth)
    pairs = zip(preds, frames, strict=True)
    if gts is None:
        for pred, frame in pairs:
            acc.add(frame, pred)
    else:
        for (pred, frame), gt in zip(pairs, gts, strict=True):
            acc.add(frame, pred, gt)
    return acc.result()


# ------------------------------------------------------------------------------------------ running


@torch.no_grad()
def predict_frames(model: nn.Module, frames: Iterable[Frame], *, batch_size: int = 8, max_side: int | None = None,
                   size: tuple[int, int] | None = None, native: bool = False,
                   precision: str = "fp32") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, frame, depth)`` per frame in order, depth H×W float32 metres at the frame's size; frames are
    predicted independently (at the model's own scale unless ``max_side``, ``size`` or ``native`` is given;
    see :func:`clip2depth.models.infer.network_size`), up to ``batch_size`` consecutive same-size frames at a
    time, and read only as needed."""
    model.eval()
    batches = size_batches(frames, size=lambda item: item[1].shape, batch_size=batch_size, in_order=True)
    for batch in batches:
        depths = predict_batch(model, [image_tensor(f) for _, f in batch], max_side=max_side, size=size,
                               native=native, precision=precision)
        for (name, frame), depth in zip(batch, depths, strict=True):
            yield name, frame, depth


def analyse_sequence(
    model: nn.Module,
    frames: Iterable[Frame],
    ground_truth: Callable[[str], np.ndarray] | None = None,
    *,
    batch_size: int = 8,
    max_side: int | None = None,
    size: tuple[int, int] | None = None,
    native: bool = False,
    precision: str = "fp32",
    tau: float = STATIC_TAU,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
) -> dict[str, Any]:
    """Predict every frame and measure the sequence (:class:`TemporalAccumulator`), as a stream.

    Args:
        frames: ``(name, H×W×3 RGB)`` in order, e.g. :func:`video_frames` or :func:`folder_frames`.
        ground_truth: frame name → H×W metres (0 = invalid), e.g. :func:`depth_reader`; None for none.
        max_side, size, native, precision: as in :func:`clip2depth.models.infer.predict_depth` (none of the
            first three: the model's own scale).
    """
    acc = TemporalAccumulator(tau=tau, min_depth=min_depth, max_depth=max_depth)
    for name, frame, depth in predict_frames(model, frames, batch_size=batch_size, max_side=max_side, size=size,
                                             native=native, precision=precision):
        acc.add(frame, depth, None if ground_truth is None else ground_truth(name), name=name)
    if len(acc.per_frame) < 2:  # a single frame has no change to measure: every metric would be NaN
        raise DataError(f"the sequence has {len(acc.per_frame)} frame(s); temporal metrics compare consecutive "
                        "frames and need at least 2 (a video, or a folder of 2 or more images)")
    return acc.result()


def plot_temporal(result: dict[str, Any], path: str | Path, *, title: str = "") -> None:
    """Per-frame metrics as a PNG: flicker (and the ground truth's), then AbsRel and scale when known."""
    from matplotlib.ticker import MaxNLocator

    rows = result["per_frame"]
    has_gt = any("abs_rel" in r for r in rows)
    fig = figure(7, 5.5 if has_gt else 3)
    axes = fig.subplots(3 if has_gt else 1, 1, sharex=True, squeeze=False)[:, 0]
    pairs = [r for r in rows if "flicker" in r]
    axes[0].plot([r["frame"] for r in pairs], [r["flicker"] for r in pairs], marker=".", label="prediction flicker")
    if has_gt:
        axes[0].plot([r["frame"] for r in pairs], [r.get("gt_flicker", math.nan) for r in pairs], marker=".",
                     label="ground-truth flicker (same pixels)")
        axes[0].plot([r["frame"] for r in pairs], [r.get("change_error", math.nan) for r in pairs], marker=".",
                     label="change error")
        axes[1].plot([r["frame"] for r in rows], [r.get("abs_rel", math.nan) for r in rows], marker=".", color="C3")
        axes[1].set_ylabel("AbsRel")
        axes[2].plot([r["frame"] for r in rows], [r.get("scale", math.nan) for r in rows], marker=".", color="C4")
        axes[2].axhline(1.0, color="0.6", lw=0.8, ls="--")
        axes[2].set_ylabel("median pred/gt")
    axes[0].set_ylabel("|Δ log depth|")
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("frame")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        axes[0].set_title(title, fontsize=8)
    save_png(fig, path)
