"""Spatial continuity of a depth map: depth-boundary errors and a patch-grid artefact score.

Two questions the paper's "spatial continuity" claim raises, each answered by one number per image:

- **Are depth discontinuities where they should be?** Edges are detected the same way in the
  prediction and in the ground truth (:func:`depth_edges`, a Canny detector on log depth), then
  compared with truncated chamfer distances as in the iBims-1 benchmark (:func:`boundary_errors`):
  ``dbe_acc`` (are predicted edges near true ones?) and ``dbe_comp`` (are true edges found?), in pixels.
- **Does the 16-px patch grid of the ViT show through?** :func:`patch_artifact` measures the share of
  the prediction's log-depth gradient energy that repeats with the patch period.

All functions take H×W numpy arrays of metres; nothing here needs torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

SPATIAL_KEYS: tuple[str, ...] = ("dbe_acc", "dbe_comp", "patch_artifact")
"""The names :func:`spatial_metrics` returns (``clip2depth eval --spatial``)."""

EDGE_SIGMA = math.sqrt(2.0)
"""Gaussian smoothing of the edge detector, pixels (iBims-1 uses √2 too)."""

EDGE_LOW, EDGE_HIGH = 0.025, 0.05
"""Hysteresis thresholds on the smoothed log-depth gradient, per pixel. With σ = √2 a step in depth by a
factor r peaks at about 0.28·ln r, so ``EDGE_HIGH`` starts edges at depth jumps of about 20 %."""

DBE_MAX_DIST = 10.0
"""Truncation of the boundary distances, pixels (iBims-1's θ)."""


def _log_depth(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """log depth with every invalid pixel filled by its nearest valid neighbour (no fake edges at holes)."""
    log = np.zeros(depth.shape, dtype=np.float64)
    log[valid] = np.log(depth[valid])
    if not valid.all():
        _, (rows, cols) = ndimage.distance_transform_edt(~valid, return_indices=True)
        log = log[rows, cols]
    return log


def depth_edges(
    depth: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    sigma: float = EDGE_SIGMA,
    low: float = EDGE_LOW,
    high: float = EDGE_HIGH,
) -> np.ndarray:
    """Depth discontinuities: Canny's detector on ``log(depth)``, H×W bool.

    Steps: Gaussian derivatives (``sigma``) of log depth; non-maximum suppression across the gradient
    direction (4 directions; of two equal neighbours the first in scan order wins, so a step gives a
    one-pixel line); hysteresis (pixels above ``low`` kept where 8-connected to one above ``high``).
    Log depth makes the detector scale-free: a jump from 1 to 2 m is as strong as one from 4 to 8 m.

    Args:
        depth: H×W metres.
        valid: H×W bool, pixels with a depth to trust (default: finite and > 0). Edges are reported only
            where the smoothing window lies inside the valid region (its borders are no depth edges).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if valid is None:
        valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros(depth.shape, dtype=bool)
    log = _log_depth(depth, valid)
    gy = ndimage.gaussian_filter(log, sigma, order=(1, 0))
    gx = ndimage.gaussian_filter(log, sigma, order=(0, 1))
    magnitude = np.hypot(gx, gy)

    # Non-maximum suppression: compare with the two neighbours along the quantised gradient direction.
    angle = np.mod(np.degrees(np.arctan2(gy, gx)), 180.0)
    sector = (np.floor((angle + 22.5) / 45.0).astype(int)) % 4  # 0: along x, 1: 45°, 2: along y, 3: 135°
    padded = np.pad(magnitude, 1)
    h, w = magnitude.shape
    keep = np.zeros((h, w), dtype=bool)
    for s, (dy, dx) in enumerate([(0, 1), (1, 1), (1, 0), (1, -1)]):
        forward = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        backward = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (sector == s) & (magnitude >= forward) & (magnitude > backward)
    weak = keep & (magnitude >= low)
    strong = keep & (magnitude >= high)

    labels, _ = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))
    edges = np.isin(labels, np.unique(labels[strong & (labels > 0)]))
    margin = int(math.ceil(2 * sigma)) + 1
    inside = ndimage.binary_erosion(valid, iterations=margin, border_value=1)
    return edges & inside


def boundary_errors(
    pred_edges: np.ndarray, gt_edges: np.ndarray, *, max_dist: float = DBE_MAX_DIST
) -> tuple[float, float]:
    """Depth-boundary accuracy and completeness, pixels (lower is better, 0 = exact).

    With ``dist(x, E)`` the Euclidean distance from pixel ``x`` to the nearest pixel of edge map ``E``,
    truncated at ``max_dist``:

    - ``acc  = mean over predicted edge pixels x of dist(x, GT edges)``
    - ``comp = mean over ground-truth edge pixels x of dist(x, predicted edges)``

    (iBims-1 averages ``acc`` only over predicted edges within ``max_dist`` and makes ``comp``
    symmetric; the directed, truncated form here keeps the two questions apart: ``acc`` punishes
    spurious edges, ``comp`` missed ones.)

    Returns:
        ``(acc, comp)``; ``(nan, nan)`` when there is no ground-truth edge (the image says nothing about
        boundaries), ``(max_dist, max_dist)`` when the prediction has no edge at all (iBims-1's rule).
    """
    if not gt_edges.any():
        return math.nan, math.nan
    if not pred_edges.any():
        return max_dist, max_dist
    to_gt = ndimage.distance_transform_edt(~gt_edges)
    to_pred = ndimage.distance_transform_edt(~pred_edges)
    acc = float(np.minimum(to_gt[pred_edges], max_dist).mean())
    comp = float(np.minimum(to_pred[gt_edges], max_dist).mean())
    return acc, comp


def patch_artifact(depth: np.ndarray, *, period: int = 16) -> float:
    """Share of the log-depth gradient energy that repeats with the patch period, in [0, 1].

    Per axis (x shown): ``p(j) = mean over rows of |log d(i, j+1) − log d(i, j)|`` is the gradient
    profile across columns. Slow variation is removed with a box filter of length ``period``
    (``r = p − box(p)``; a box of exactly one period passes every period-``P`` pattern untouched), ``r``
    is folded modulo ``P`` (``m(φ)`` = mean of ``r(j)`` over ``j ≡ φ mod P``, whole periods only) and
    centred. The score is ``P/(P−1) · mean_φ m(φ)² / mean_j p(j)²``: 1 when all gradient sits on one
    phase of the grid (a block pattern), 0 for a profile without period-``P`` structure (a smooth ramp).
    A profile of ``n`` periods of unstructured content scores about ``1/n`` or less (the noise floor).
    The two axes are averaged.

    Only the bounding box of the valid pixels (finite, > 0) is used, so a prediction pasted into a zero
    canvas (KITTI) is measured on itself. nan when the box spans fewer than two periods on both axes.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return math.nan
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    box = depth[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    log = _log_depth(box, valid[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    scores = [
        _periodic_share(np.abs(np.diff(log, axis=1)).mean(axis=0), period),
        _periodic_share(np.abs(np.diff(log, axis=0)).mean(axis=1), period),
    ]
    finite = [s for s in scores if math.isfinite(s)]
    return float(np.mean(finite)) if finite else math.nan


def _periodic_share(profile: np.ndarray, period: int) -> float:
    n = profile.size // period
    if n < 2:
        return math.nan
    used = slice(0, n * period)  # whole periods only, for the fold and its reference energy alike
    energy = float(np.mean(profile[used] ** 2))
    if energy <= 0:
        return 0.0
    residual = profile - ndimage.uniform_filter1d(profile, size=period, mode="nearest")
    folded = residual[used].reshape(n, period).mean(axis=0)
    folded -= folded.mean()
    return float(period / (period - 1) * np.mean(folded**2) / energy)


def spatial_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    period: int = 16,
    min_depth: float = 1e-3,
    max_dist: float = DBE_MAX_DIST,
) -> dict[str, float]:
    """``dbe_acc``, ``dbe_comp`` (pixels, see :func:`boundary_errors`) and ``patch_artifact`` for one image.

    Args:
        pred: H×W predicted metres at the ground truth's size (clamped below at ``min_depth``).
        gt: H×W ground-truth metres, 0 (or nan/inf) where invalid or outside the evaluation crop.
            Edges are looked for in both maps only inside the valid ground-truth region.
        period: the patch size in prediction pixels (16 for ViT-B/16 run at the ground truth's size).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must have the same size")
    artifact = patch_artifact(pred, period=period)  # before clamping: a zero canvas is no prediction
    finite_max = float(np.max(pred[np.isfinite(pred)], initial=min_depth))
    pred = np.maximum(np.nan_to_num(pred, nan=min_depth, posinf=finite_max, neginf=min_depth), min_depth)
    valid = np.isfinite(gt) & (gt > min_depth)
    acc, comp = boundary_errors(depth_edges(pred, valid), depth_edges(gt, valid), max_dist=max_dist)
    return {"dbe_acc": acc, "dbe_comp": comp, "patch_artifact": artifact}
