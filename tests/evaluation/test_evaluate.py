"""``clip2depth eval`` end to end: outputs, PNG agreement with metrics.json, bad items, baselines."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import clip2depth
from clip2depth.cli import main
from clip2depth.evaluation.metrics import METRIC_KEYS, MetricAverager, compute_metrics
from clip2depth.evaluation.protocol import EvalSettings, evaluate, predict_sample
from clip2depth.io.depth import load_depth_png16
from clip2depth.models.constant import ConstantDepth


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny")
    clip2depth.create_model("tiny").save_pretrained(str(out))
    return out


def test_eval_cli_on_synthetic_writes_outputs_that_agree_with_pngs(tiny_dir, tmp_path, capsys):
    out, pngs = tmp_path / "eval", tmp_path / "pngs"
    rc = main(["-q", "eval", "--model", str(tiny_dir), "--dataset", "synthetic", "--synthetic", "5",
               "--synthetic-size", "96", "128", "--out", str(out), "--save-png", str(pngs), "--num-workers", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| abs_rel |" in printed and "5 images evaluated, 0 skipped" in printed
    data = json.loads((out / "metrics.json").read_text())
    assert data["count"] == 5 and data["skipped_count"] == 0 and data["failed_count"] == 0
    assert data["settings"]["crop"] is None and data["settings"]["flip_tta"] is False
    assert set(data["metrics"]) == set(METRIC_KEYS)
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 5

    # recompute every metric from the 16-bit PNGs and the ground truth
    dataset = clip2depth.data.build_dataset("synthetic", split="test", size=(96, 128), length=5)
    averager = MetricAverager()
    for i in range(5):
        sample = dataset[i]
        pred = load_depth_png16(pngs / f"{sample['name']}.png", scale=1000.0)
        averager.update(compute_metrics(pred, sample["depth"][0].numpy(), min_depth=1e-3, max_depth=10.0))
    recomputed = averager.result()
    for key in METRIC_KEYS:  # PNGs are quantised to 1 mm
        assert recomputed[key] == pytest.approx(data["metrics"][key], rel=2e-3, abs=2e-3), key


def _folder_dataset(tmp_path, n=4, corrupt_index=2):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        rgb, depth = tmp_path / f"rgb_{i}.png", tmp_path / f"depth_{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(rgb)
        Image.fromarray(rng.integers(500, 5000, (64, 96), dtype=np.uint16)).save(depth)
        lines.append(f"{rgb.name} {depth.name} 500.0")
    (tmp_path / f"rgb_{corrupt_index}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    list_file = tmp_path / "list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    return list_file


def test_corrupt_file_in_the_middle_is_reported_and_skipped(tiny_dir, tmp_path, capsys):
    list_file = _folder_dataset(tmp_path)
    out = tmp_path / "eval"
    rc = main(["-q", "eval", "--model", str(tiny_dir), "--dataset", "folder", "--list-file", str(list_file),
               "--out", str(out), "--num-workers", "0"])
    assert rc == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["count"] == 3 and data["failed_count"] == 1
    assert "rgb_2.png" in data["failed"][0]["reason"]
    assert "rgb_2.png" in capsys.readouterr().out


def test_size_mismatch_and_empty_ground_truth_are_reported(tmp_path):
    list_file = _folder_dataset(tmp_path, n=3, corrupt_index=99)
    Image.fromarray(np.zeros((32, 48), dtype=np.uint16)).save(tmp_path / "depth_0.png")  # wrong size
    Image.fromarray(np.zeros((64, 96), dtype=np.uint16)).save(tmp_path / "depth_1.png")  # all invalid
    dataset = clip2depth.data.build_dataset("folder", split="test", list_file=str(list_file))
    result = evaluate(ConstantDepth(2.0), dataset, EvalSettings(crop=None), progress=False)
    assert result.count == 1
    assert len(result.failed) == 1 and "differ in size" in result.failed[0]["reason"]
    assert len(result.skipped) == 1 and result.skipped[0]["reason"] == "no valid ground-truth pixel"


def test_constant_baseline_metrics_by_hand():
    class Two(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            depth = torch.full((1, 4, 4), 4.0)
            return {"image": torch.zeros(3, 4, 4), "depth": depth, "name": "x", "path": "x"}

    result = evaluate(ConstantDepth(2.0), Two(), EvalSettings(crop=None), progress=False)
    assert result.metrics["abs_rel"] == pytest.approx(0.5)
    assert result.metrics["rmse"] == pytest.approx(2.0)
    assert result.metrics["d1"] == 0.0


def test_input_box_prediction_is_pasted_and_only_the_box_is_covered():
    model = ConstantDepth(3.0)
    sample = {"image": torch.rand(3, 480, 640), "depth": torch.ones(1, 480, 640), "path": "p"}
    pred, covered = predict_sample(model, sample, EvalSettings(input_box=(56, 60, 416, 544)))
    assert pred.shape == (480, 640)
    assert np.all(pred[56:472, 60:604] == 3.0) and pred[:56].max() == 0 and pred[:, 604:].max() == 0
    assert covered.sum() == 416 * 544 and covered[56:472, 60:604].all()


def test_depthclip_baseline_runs_through_the_same_harness(tmp_path, capsys):
    out = tmp_path / "dc"
    rc = main(["-q", "eval", "--model", "depthclip-rn50", "--dataset", "synthetic", "--synthetic", "2",
               "--synthetic-size", "96", "128", "--out", str(out), "--num-workers", "0", "--flip-tta"])
    assert rc == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["count"] == 2 and data["settings"]["flip_tta"] is True
    assert data["model"] == "depthclip-rn50"


def test_missing_data_root_is_one_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("CLIP2DEPTH_NYU_ROOT", raising=False)
    assert main(["-q", "eval", "--model", "tiny", "--dataset", "nyu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "CLIP2DEPTH_NYU_ROOT" in err


def test_kitti_pngs_have_full_ground_truth_size_and_none_for_images_without_ground_truth(tmp_path):
    from clip2depth.data import KITTIDataset

    root, gt_root, drive = tmp_path / "raw", tmp_path / "gt", "2011_09_26_drive_0002_sync"
    lines = []
    for frame, has_gt in (("0000000069", True), ("0000000070", False)):
        rgb = root / "2011_09_26" / drive / "image_02/data" / f"{frame}.png"
        gt_path = gt_root / drive / "proj_depth/groundtruth/image_02" / f"{frame}.png"
        rgb.parent.mkdir(parents=True, exist_ok=True)
        gt_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((375, 1242, 3), 100, dtype=np.uint8)).save(rgb)
        gt = np.zeros((375, 1242), dtype=np.uint16)
        if has_gt:
            gt[200:, :] = 2560  # 10 m
        Image.fromarray(gt).save(gt_path)
        lines.append(f"{rgb.relative_to(root)} {gt_path.relative_to(gt_root)} 721.5377")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    dataset = KITTIDataset(root, gt_root=gt_root, split="test", list_file=tmp_path / "list.txt")
    pngs = tmp_path / "pngs"
    result = evaluate(ConstantDepth(5.0), dataset, EvalSettings(crop="kitti_garg", max_depth=80.0, png_scale=256.0),
                      save_png=pngs, progress=False)
    assert result.count == 1 and len(result.skipped) == 1
    assert sorted(p.name for p in pngs.iterdir()) == [f"{drive}_0000000069.png"]
    pred = load_depth_png16(pngs / f"{drive}_0000000069.png", scale=256.0)
    assert pred.shape == (375, 1242)  # the ground truth's size: BTS's evaluator runs without --do_kb_crop
    top, left = 375 - 352, (1242 - 1216) // 2
    assert np.all(pred[top:, left : left + 1216] == 5.0)
    assert pred[:top].max() == 0.0 and pred[:, :left].max() == 0.0 and pred[:, left + 1216 :].max() == 0.0


def test_eval_records_precision_and_max_side(tiny_dir, tmp_path):
    out = tmp_path / "eval"
    rc = main(["-q", "eval", "--model", str(tiny_dir), "--synthetic", "2", "--synthetic-size", "96", "128",
               "--out", str(out), "--num-workers", "0", "--precision", "bf16", "--max-side", "64"])
    assert rc == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["precision"] == "bf16" and settings["max_side"] == 64
