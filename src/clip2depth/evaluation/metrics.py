"""Depth metrics, evaluation crops and the one place where per-image metrics are averaged.

The protocol is the community standard of BTS ``eval_with_pngs.py`` (docs/method.md#evaluation-protocol):
every metric is computed per image on its valid pixels (:func:`compute_metrics`, which lists the formulas), then
averaged over images (:class:`MetricAverager`). Crops are named boolean masks (:data:`CROPS`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from clip2depth.errors import ConfigError

logger = logging.getLogger(__name__)

METRIC_KEYS: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
"""The metric names, in the order results are reported."""

_HIGHER_IS_BETTER = frozenset({"d1", "d2", "d3"})

ArrayLike = np.ndarray | torch.Tensor


def lower_is_better(key: str) -> bool:
    """Whether a smaller value of metric ``key`` is better (False only for the δ accuracies)."""
    if key not in METRIC_KEYS:
        raise ConfigError(f"unknown metric {key!r}; choose one of {', '.join(METRIC_KEYS)}")
    return key not in _HIGHER_IS_BETTER


# --------------------------------------------------------------------------------------------------
# Crops: boolean masks (H, W), True where a pixel takes part in the evaluation.


def nyu_eigen_crop_mask(h: int, w: int) -> np.ndarray:
    """Eigen crop for NYU: rows 45:471, cols 41:601 of the 480×640 ground truth."""
    _require_nyu_size("nyu_eigen", h, w)
    mask = np.zeros((h, w), dtype=bool)
    mask[45:471, 41:601] = True
    return mask


def nyu_depthclip_crop_mask(h: int, w: int) -> np.ndarray:
    """DepthCLIP's variant of the NYU crop: rows 45:471, cols 46:601 of 480×640 (its own table only)."""
    _require_nyu_size("nyu_depthclip", h, w)
    mask = np.zeros((h, w), dtype=bool)
    mask[45:471, 46:601] = True
    return mask


def kitti_garg_crop_mask(h: int, w: int) -> np.ndarray:
    """Garg crop for KITTI, as fractions of the ground-truth size (H×W, any KITTI resolution).

    Rows ``int(0.40810811·H):int(0.99189189·H)``, cols ``int(0.03594771·W):int(0.96405229·W)``.
    """
    mask = np.zeros((h, w), dtype=bool)
    mask[int(0.40810811 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True
    return mask


def kitti_eigen_crop_mask(h: int, w: int) -> np.ndarray:
    """Eigen crop for KITTI: rows ``int(0.3324324·H):int(0.91351351·H)``, Garg's columns."""
    mask = np.zeros((h, w), dtype=bool)
    mask[int(0.3324324 * h) : int(0.91351351 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True
    return mask


def _require_nyu_size(name: str, h: int, w: int) -> None:
    # The NYU crops are fixed pixel ranges of the 480×640 Kinect frame; on another size they are meaningless.
    if (h, w) != (480, 640):
        raise ConfigError(
            f"crop {name!r} is defined for 480×640 NYU ground truth, got {h}×{w}; use no crop (--crop none)"
        )


CROPS: dict[str, Callable[[int, int], np.ndarray]] = {
    "nyu_eigen": nyu_eigen_crop_mask,
    "nyu_depthclip": nyu_depthclip_crop_mask,
    "kitti_garg": kitti_garg_crop_mask,
    "kitti_eigen": kitti_eigen_crop_mask,
}
"""Crop name → function ``(H, W) -> bool mask (H, W)``."""


def crop_mask(crop: str | None, h: int, w: int) -> np.ndarray | None:
    """The evaluation mask of the named crop for an H×W ground truth; None for no crop."""
    if crop is None:
        return None
    if crop not in CROPS:
        raise ConfigError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)} or none")
    return CROPS[crop](h, w)


# --------------------------------------------------------------------------------------------------
# Per-image metrics.


def _to_2d_numpy(x: ArrayLike, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be H×W (leading singleton dims allowed), got shape {arr.shape}")
    return arr


def _resize_bilinear(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(pred)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def compute_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    min_depth: float,
    max_depth: float,
    crop: str | np.ndarray | None = None,
) -> dict[str, float] | None:
    """All metrics of :data:`METRIC_KEYS` for one image.

    With ``p`` the predictions and ``g`` the ground truths of the valid pixels (metres) and
    ``e = log(p) - log(g)``, means taken over the valid pixels:

    ========  ==========================================================
    abs_rel   ``mean(|g - p| / g)``
    sq_rel    ``mean((g - p)^2 / g)``
    rmse      ``sqrt(mean((g - p)^2))``  (metres)
    rmse_log  ``sqrt(mean(e^2))``
    log10     ``mean(|log10(p) - log10(g)|)``
    silog     ``100 * sqrt(mean(e^2) - mean(e)^2)``
    d1/d2/d3  ``mean(max(g / p, p / g) < 1.25^k)`` for k = 1, 2, 3 (a fraction in [0, 1])
    ========  ==========================================================

    Args:
        pred: predicted depth, H'×W' metres (numpy or torch; leading singleton dims allowed). It is
            resized bilinearly to the ground-truth size when the sizes differ, then ``nan → min_depth``,
            ``inf → max_depth`` and clamped to ``[min_depth, max_depth]``.
        gt: ground-truth depth, H×W metres; 0, inf and nan mean "no measurement".
        min_depth, max_depth: valid ground truth is ``min_depth < gt < max_depth`` (strict).
        crop: a name from :data:`CROPS`, a boolean H×W mask, or None for the whole image.

    Returns:
        ``{key: float}`` for every key of :data:`METRIC_KEYS`, or **None** when the image has no valid
        pixel (it must then be skipped and counted, see :class:`MetricAverager`).
    """
    gt_np = _to_2d_numpy(gt, "gt").copy()
    pred_np = _to_2d_numpy(pred, "pred")
    h, w = gt_np.shape
    if pred_np.shape != (h, w):
        pred_np = _resize_bilinear(pred_np, (h, w))
    else:
        pred_np = pred_np.copy()

    # Same order as BTS: clamp first, then inf/nan (nan survives np.clip, +inf becomes max_depth anyway).
    pred_np = np.clip(pred_np, min_depth, max_depth)
    pred_np[np.isinf(pred_np)] = max_depth
    pred_np[np.isnan(pred_np)] = min_depth
    gt_np[~np.isfinite(gt_np)] = 0.0

    valid = (gt_np > min_depth) & (gt_np < max_depth)
    if isinstance(crop, np.ndarray):
        if crop.shape != (h, w):
            raise ValueError(f"crop mask shape {crop.shape} does not match ground truth {(h, w)}")
        valid &= crop.astype(bool)
    elif crop is not None:
        valid &= crop_mask(crop, h, w)
    if not valid.any():
        return None

    p = pred_np[valid]
    g = gt_np[valid]
    return _errors(p, g)


def _errors(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """The formulas of :func:`compute_metrics` on 1-D arrays of valid ``p`` and ``g`` (metres)."""
    ratio = np.maximum(g / p, p / g)
    diff = g - p
    e = np.log(p) - np.log(g)
    # mean(e²) − mean(e)² is a variance: rounding can make it a hair below 0 for a perfect prediction.
    si_var = max(float(np.mean(e**2) - np.mean(e) ** 2), 0.0)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(e**2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "silog": 100.0 * math.sqrt(si_var),
        "d1": float(np.mean(ratio < 1.25)),
        "d2": float(np.mean(ratio < 1.25**2)),
        "d3": float(np.mean(ratio < 1.25**3)),
    }


# --------------------------------------------------------------------------------------------------
# Averaging.


class MetricAverager:
    """Averages per-image metrics over images; the only place where averaging happens.

    ``update(None, name)`` records an image without any valid pixel as *skipped* (it never enters
    the means). For distributed evaluation every rank calls :meth:`state`, the states are summed
    element-wise (e.g. ``all_reduce`` of ``torch.tensor(list(state.values()))``), and
    :meth:`from_state` / :meth:`merge` rebuild the global averager.
    """

    def __init__(self) -> None:
        self._sums: dict[str, float] = dict.fromkeys(METRIC_KEYS, 0.0)
        self.count = 0
        self.skipped = 0
        self.skipped_names: list[str] = []

    def update(self, metrics: Mapping[str, float] | None, name: str | None = None) -> None:
        """Add one image's metrics (from :func:`compute_metrics`), or None for a skipped image."""
        if metrics is None:
            self.skipped += 1
            if name is not None:
                self.skipped_names.append(name)
            logger.debug("skipped %s: no valid ground-truth pixel", name or "an image")
            return
        missing = [k for k in METRIC_KEYS if k not in metrics]
        if missing:
            raise ValueError(f"metrics for {name or 'an image'} lack {missing}")
        for key in METRIC_KEYS:
            self._sums[key] += float(metrics[key])
        self.count += 1

    def result(self) -> dict[str, float]:
        """Means of every metric plus ``count`` (images averaged) and ``skipped`` (images without
        valid pixels). With no image averaged at all the means are nan (and a warning is logged)."""
        if self.count == 0:
            logger.warning("no image with valid ground truth was evaluated (%d skipped)", self.skipped)
        out = {k: (self._sums[k] / self.count if self.count else math.nan) for k in METRIC_KEYS}
        out["count"] = float(self.count)
        out["skipped"] = float(self.skipped)
        return out

    def state(self) -> dict[str, float]:
        """Plain-float sums and counts, keys ``sum_<metric>`` (METRIC_KEYS order), ``count``, ``skipped``.

        The key order is fixed, so ranks can reduce the values as one vector.
        """
        state = {f"sum_{k}": self._sums[k] for k in METRIC_KEYS}
        state["count"] = float(self.count)
        state["skipped"] = float(self.skipped)
        return state

    def merge(self, state: Mapping[str, float]) -> None:
        """Add another averager's :meth:`state` (e.g. another rank's) into this one."""
        for key in METRIC_KEYS:
            self._sums[key] += float(state[f"sum_{key}"])
        self.count += int(round(state["count"]))
        self.skipped += int(round(state["skipped"]))

    @classmethod
    def from_state(cls, state: Mapping[str, float]) -> MetricAverager:
        """An averager holding exactly ``state`` (e.g. the all-reduced sum of every rank's state)."""
        averager = cls()
        averager.merge(state)
        return averager
