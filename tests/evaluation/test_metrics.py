"""Metrics, crops and averaging against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from clip2depth.errors import ConfigError
from clip2depth.evaluation.metrics import (
    CROPS,
    METRIC_KEYS,
    MetricAverager,
    compute_metrics,
    kitti_eigen_crop_mask,
    kitti_garg_crop_mask,
    lower_is_better,
    nyu_depthclip_crop_mask,
    nyu_eigen_crop_mask,
)

NYU = {"min_depth": 1e-3, "max_depth": 10.0}


def test_constant_factor_two():
    m = compute_metrics(np.full((3, 4), 2.0), np.ones((3, 4)), **NYU)
    assert set(m) == set(METRIC_KEYS)
    assert m["abs_rel"] == pytest.approx(1.0)
    assert m["sq_rel"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(1.0)
    assert m["rmse_log"] == pytest.approx(math.log(2))
    assert m["log10"] == pytest.approx(math.log10(2))
    assert m["silog"] == pytest.approx(0.0, abs=1e-6)  # a global scale error is scale-invariant
    # ratio 2 is above 1.25, 1.5625 and 1.953125
    assert (m["d1"], m["d2"], m["d3"]) == (0.0, 0.0, 0.0)


def test_two_pixels_by_hand():
    # gt (1, 2), pred (2, 2): errors (1, 0), e = (log 2, 0)
    m = compute_metrics(np.array([[2.0, 2.0]]), np.array([[1.0, 2.0]]), **NYU)
    ln2 = math.log(2)
    assert m["abs_rel"] == pytest.approx(0.5)
    assert m["sq_rel"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["rmse_log"] == pytest.approx(math.sqrt(ln2**2 / 2))
    assert m["log10"] == pytest.approx(math.log10(2) / 2)
    assert m["silog"] == pytest.approx(100 * math.sqrt(ln2**2 / 2 - ln2**2 / 4))
    assert m["d1"] == pytest.approx(0.5)


def test_delta_thresholds_are_strict():
    gt = np.ones((1, 3))
    pred = np.array([[1.2, 1.5, 1.9]])
    m = compute_metrics(pred, gt, **NYU)
    assert m["d1"] == pytest.approx(1 / 3)
    assert m["d2"] == pytest.approx(2 / 3)
    assert m["d3"] == pytest.approx(1.0)


def test_prediction_clamped_and_inf_nan_replaced():
    gt = np.full((1, 1), 5.0)
    assert compute_metrics(np.full((1, 1), 20.0), gt, **NYU)["abs_rel"] == pytest.approx(1.0)  # → 10
    assert compute_metrics(np.full((1, 1), np.inf), gt, **NYU)["abs_rel"] == pytest.approx(1.0)  # → 10
    assert compute_metrics(np.full((1, 1), -3.0), gt, **NYU)["abs_rel"] == pytest.approx(1 - 1e-3 / 5)
    assert compute_metrics(np.full((1, 1), np.nan), gt, **NYU)["abs_rel"] == pytest.approx(1 - 1e-3 / 5)


def test_valid_mask_is_strict_and_ignores_bad_gt():
    gt = np.array([[1e-3, 10.0, 5.0, np.inf, np.nan, 0.0]])
    pred = np.full_like(gt, 5.0)
    m = compute_metrics(pred, gt, **NYU)
    assert m["abs_rel"] == 0.0 and m["rmse"] == 0.0  # only the 5 m pixel counts


def test_no_valid_pixel_returns_none():
    assert compute_metrics(np.ones((2, 2)), np.zeros((2, 2)), **NYU) is None
    assert compute_metrics(np.ones((2, 2)), np.full((2, 2), 10.0), **NYU) is None


def test_torch_input_and_resize_to_gt():
    gt = torch.full((1, 8, 8), 4.0)
    pred = torch.full((1, 1, 4, 4), 2.0)  # bilinear upsampling of a constant stays constant
    m = compute_metrics(pred, gt, **NYU)
    assert m["abs_rel"] == pytest.approx(0.5)


def test_nyu_crops_bounds():
    mask = nyu_eigen_crop_mask(480, 640)
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600]
    assert not mask[44, 41] and not mask[45, 40] and not mask[471, 600] and not mask[470, 601]
    dc = nyu_depthclip_crop_mask(480, 640)
    assert dc.sum() == (471 - 45) * (601 - 46)
    assert dc[45, 46] and not dc[45, 45]
    with pytest.raises(ConfigError):
        nyu_eigen_crop_mask(240, 320)


def test_kitti_crops_bounds():
    # 375×1242: Garg rows int(153.04)=153 : int(371.96)=371, cols int(44.65)=44 : int(1197.35)=1197
    garg = kitti_garg_crop_mask(375, 1242)
    rows, cols = np.flatnonzero(garg.any(1)), np.flatnonzero(garg.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    assert garg.sum() == (371 - 153) * (1197 - 44)
    # Eigen rows int(124.66)=124 : int(342.57)=342, same columns
    eigen = kitti_eigen_crop_mask(375, 1242)
    rows, cols = np.flatnonzero(eigen.any(1)), np.flatnonzero(eigen.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (124, 342, 44, 1197)
    assert set(CROPS) == {"nyu_eigen", "nyu_depthclip", "kitti_garg", "kitti_eigen"}


def test_crop_restricts_evaluation():
    gt = np.full((480, 640), 2.0)
    pred = gt.copy()
    pred[:45] = 4.0  # wrong only outside the Eigen crop
    assert compute_metrics(pred, gt, **NYU)["abs_rel"] > 0
    assert compute_metrics(pred, gt, **NYU, crop="nyu_eigen")["abs_rel"] == 0.0
    mask = np.zeros((480, 640), dtype=bool)
    mask[:45] = True
    assert compute_metrics(pred, gt, **NYU, crop=mask)["abs_rel"] == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        compute_metrics(pred, gt, **NYU, crop="garg")


def test_averager_means_and_skipped():
    avg = MetricAverager()
    avg.update(compute_metrics(np.full((2, 2), 2.0), np.ones((2, 2)), **NYU), "a")  # abs_rel 1
    avg.update(compute_metrics(np.ones((2, 2)), np.ones((2, 2)), **NYU), "b")  # abs_rel 0
    avg.update(compute_metrics(np.ones((2, 2)), np.zeros((2, 2)), **NYU), "empty")
    res = avg.result()
    assert res["abs_rel"] == pytest.approx(0.5)
    assert res["d1"] == pytest.approx(0.5)
    assert res["count"] == 2 and res["skipped"] == 1
    assert avg.skipped_names == ["empty"]
    assert all(not math.isnan(res[k]) for k in METRIC_KEYS)


def test_averager_merge_equals_single_pass():
    rng = np.random.default_rng(0)
    items = [compute_metrics(rng.uniform(1, 9, (4, 4)), rng.uniform(1, 9, (4, 4)), **NYU) for _ in range(5)]
    whole = MetricAverager()
    for m in items:
        whole.update(m)
    whole.update(None)
    rank0, rank1 = MetricAverager(), MetricAverager()
    for m in items[:2]:
        rank0.update(m)
    for m in items[2:]:
        rank1.update(m)
    rank1.update(None)
    # what an all_reduce would do: element-wise sum of the plain-float state vectors
    s0, s1 = rank0.state(), rank1.state()
    assert list(s0) == list(s1)
    reduced = MetricAverager.from_state({k: s0[k] + s1[k] for k in s0})
    for key, value in whole.result().items():
        assert reduced.result()[key] == pytest.approx(value)
    rank0.merge(s1)
    assert rank0.result() == pytest.approx(whole.result())


def test_averager_empty_gives_nan_not_error():
    res = MetricAverager().result()
    assert res["count"] == 0 and math.isnan(res["abs_rel"])


def test_lower_is_better():
    assert lower_is_better("abs_rel") and lower_is_better("rmse") and lower_is_better("silog")
    assert not lower_is_better("d1") and not lower_is_better("d3")
    with pytest.raises(ConfigError):
        lower_is_better("accuracy")


def test_prediction_is_resized_bilinearly_to_the_ground_truth():
    pred = np.array([[1.0, 3.0]])  # 1×2 prediction of a 2×4 ground truth
    # bilinear, align_corners=False: output column i samples input x = (i + 0.5) / 2 − 0.5, clamped at the edges
    bilinear = np.tile([1.0, 1.5, 2.5, 3.0], (2, 1))
    m = compute_metrics(pred, bilinear, **NYU)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12) and m["rmse"] == pytest.approx(0.0, abs=1e-12)
    nearest = np.tile([1.0, 1.0, 3.0, 3.0], (2, 1))  # what nearest-neighbour upsampling would give
    m = compute_metrics(pred, nearest, **NYU)
    assert m["abs_rel"] == pytest.approx((0.5 / 1.0 + 0.5 / 3.0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0.25) / 4))
