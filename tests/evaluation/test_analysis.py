"""The paper's analyses: spatial and temporal metrics on inputs with known answers, the mirror
inspection, and the ``ablate`` / ``consistency`` / ``inspect-mirror`` commands end to end on tiny runs."""

from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import open_clip
import pytest
import torch

import clip2depth
from clip2depth.analysis.mirror import conditioning_maps, expand_checkpoints, nearest_tokens, prompt_similarities
from clip2depth.cli import ablate as ablate_cmd
from clip2depth.cli import consistency as consistency_cmd
from clip2depth.cli import inspect_mirror as inspect_cmd
from clip2depth.data import build_dataset
from clip2depth.evaluation.protocol import EvalSettings, evaluate, write_outputs
from clip2depth.evaluation.spatial import boundary_errors, depth_edges, patch_artifact, spatial_metrics
from clip2depth.evaluation.temporal import analyse_sequence, synthetic_sequence, temporal_metrics
from clip2depth.models.checkpoint import save_pretrained
from clip2depth.models.config import PAPER_PROMPT
from imagefiles import count_colour, png_rgb

BLUE = (31, 119, 180)  # matplotlib's C0
PURPLE = (148, 103, 189)  # C4



TINY_RUN = [
    "--set", "train.max_steps=2", "--set", "train.val_every=2", "--set", "train.batch_size=4",
    "--set", "train.num_workers=0", "--set", "data.kwargs.length=8", "--set", "data.val_kwargs.length=2",
    "--set", "data.kwargs.size=[64,96]", "--set", "data.val_kwargs.size=[64,96]",
    "--set", "augment.crop_size=[64,80]",
]


def run_command(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="command"))
    return module.run(parser.parse_args([module.NAME, *argv]))


def step_depth(edge_col: int, h: int = 64, w: int = 96) -> np.ndarray:
    depth = np.full((h, w), 2.0)
    depth[:, edge_col:] = 4.0
    return depth


# ------------------------------------------------------------------------------------------ spatial


def test_step_edge_recovered_exactly_has_zero_boundary_error():
    gt = step_depth(40)
    edges = depth_edges(gt)
    assert edges.sum() == gt.shape[0] and edges[:, 39].all()  # one-pixel line along the step
    metrics = spatial_metrics(gt.copy(), gt)
    assert metrics["dbe_acc"] == 0.0 and metrics["dbe_comp"] == 0.0


def test_shifted_edge_costs_its_shift_and_missing_edges_are_truncated():
    gt = step_depth(40)
    shifted = spatial_metrics(step_depth(43), gt)
    assert shifted["dbe_acc"] == pytest.approx(3.0) and shifted["dbe_comp"] == pytest.approx(3.0)
    flat = spatial_metrics(np.full_like(gt, 3.0), gt)
    assert flat["dbe_acc"] == 10.0 and flat["dbe_comp"] == 10.0  # no predicted edge: iBims-1's maximum
    assert all(math.isnan(v) for v in boundary_errors(depth_edges(gt), np.zeros_like(gt, dtype=bool)))


def test_holes_in_ground_truth_are_not_edges_and_scale_does_not_matter():
    gt = np.full((64, 96), 3.0)
    gt[20:30, 30:50] = 0.0  # a hole of missing measurements
    assert not depth_edges(gt, gt > 0).any()
    assert np.array_equal(depth_edges(step_depth(40)), depth_edges(5.0 * step_depth(40)))


def test_patch_artifact_high_for_block_pattern_near_zero_for_ramp():
    rng = np.random.default_rng(0)
    blocks = 3.0 * np.exp(rng.normal(0, 0.3, (6, 8))).repeat(16, 0).repeat(16, 1)
    ramp = np.tile(np.linspace(1.0, 5.0, 128), (96, 1))
    assert patch_artifact(blocks) > 0.85
    assert patch_artifact(ramp) < 1e-3
    assert patch_artifact(np.full((96, 128), 2.0)) == 0.0
    assert patch_artifact(blocks, period=12) < 0.3  # the score is about the given period only
    canvas = np.zeros((160, 200))
    canvas[32:128, 40:168] = blocks  # KITTI-style paste into a zero canvas: measured on the prediction only
    assert patch_artifact(canvas) == pytest.approx(patch_artifact(blocks))


def test_evaluate_extra_metrics_leave_standard_metrics_untouched(tiny_model, tmp_path):
    dataset = build_dataset("synthetic", split="val", size=(64, 96), length=2)
    settings = EvalSettings(crop=None)
    plain = evaluate(tiny_model, dataset, settings, progress=False)
    seen = []

    def extra(pred, gt):
        seen.append(pred.shape == gt.shape)
        return spatial_metrics(pred, gt)

    result = evaluate(tiny_model, dataset, settings, progress=False, extra_metrics=extra)
    assert result.metrics == plain.metrics and all(seen) and len(seen) == 2
    assert set(result.extra) == {"dbe_acc", "dbe_comp", "patch_artifact"}
    assert result.extra["patch_artifact"] == pytest.approx(np.mean([r["patch_artifact"] for r in result.per_image]))
    write_outputs(result, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["extra_metrics"]["dbe_acc"] == result.extra["dbe_acc"]
    header = (tmp_path / "per_image.csv").read_text().splitlines()[0]
    assert header.endswith("d3,dbe_acc,dbe_comp,patch_artifact")


# ------------------------------------------------------------------------------------------ temporal


def test_constant_sequence_has_zero_flicker():
    frames = [np.full((8, 8, 3), 0.5, dtype=np.float32)] * 4
    depth = np.linspace(1.0, 4.0, 64).reshape(8, 8)
    result = temporal_metrics([depth] * 4, frames, [depth] * 4)
    s = result["summary"]
    assert s["flicker"] == 0.0 and s["change_error"] == 0.0 and s["gt_flicker"] == 0.0
    assert s["abs_rel_mean"] == pytest.approx(0.0) and s["abs_rel_std"] == 0.0
    assert s["scale_mean"] == 1.0 and s["scale_drift"] == 0.0 and s["static_fraction"] == 1.0


def test_flicker_and_scale_drift_known_values():
    frames = [np.zeros((4, 4, 3), dtype=np.float32)] * 3
    gt = np.full((4, 4), 2.0)
    preds = [gt, gt, 2.0 * gt]  # the last frame doubles: |Δ log| = log 2 on one pair of two
    s = temporal_metrics(preds, frames, [gt] * 3)["summary"]
    assert s["flicker"] == pytest.approx(math.log(2) / 2)
    assert s["change_error"] == pytest.approx(math.log(2) / 2)
    assert s["scale_drift"] == pytest.approx(math.log(2) / 2)
    assert s["scale_std"] == pytest.approx(np.std([1, 1, 2]))
    moving = [np.zeros((4, 4, 3), dtype=np.float32), np.ones((4, 4, 3), dtype=np.float32)]
    no_static = temporal_metrics([gt, 2 * gt], moving)["summary"]  # every pixel changed colour
    assert math.isnan(no_static["flicker"]) and no_static["static_fraction"] == 0.0


def test_still_synthetic_camera_gives_identical_frames():
    frames, depths = synthetic_sequence(3, size=(32, 48), motion=0.0)
    assert [name for name, _ in frames] == ["000000", "000001", "000002"]
    assert all(np.array_equal(frames[0][1], f) for _, f in frames)
    assert all(np.array_equal(depths[0], d) for d in depths)


def test_analyse_sequence_streams_frames_and_rejects_size_changes(tiny_model):
    frames = ((f"{i:06d}", np.full((32, 48, 3), 128, dtype=np.uint8)) for i in range(5))  # a generator
    result = analyse_sequence(tiny_model, frames, batch_size=2)
    # batches of 2, 2, 1: identical frames give identical depth up to float rounding across batch sizes
    assert result["summary"]["frames"] == 5 and result["summary"]["flicker"] == pytest.approx(0.0, abs=1e-6)
    assert "abs_rel_mean" not in result["summary"]  # no ground truth, no ground-truth metrics
    mixed = [("a", np.zeros((32, 48, 3), dtype=np.uint8)), ("b", np.zeros((48, 32, 3), dtype=np.uint8))]
    with pytest.raises(clip2depth.DataError, match="b is 48×32"):
        analyse_sequence(tiny_model, mixed)


# ------------------------------------------------------------------------------------------ mirror


def test_nearest_tokens_find_planted_words(fresh_tiny):
    encoder = fresh_tiny.prompt_encoder
    ids = open_clip.get_tokenizer(fresh_tiny.config.clip_model)(["far", "window"])[:, 1].tolist()  # after SOT
    with torch.no_grad():
        encoder.mirror[:2] = 3.0 * encoder.token_embedding.weight[ids]
    rows = nearest_tokens(fresh_tiny, k=3)
    assert len(rows) == fresh_tiny.config.mirror_length
    for row, token_id in zip(rows[:2], ids, strict=True):
        assert row["tokens"][0]["id"] == token_id and row["tokens"][0]["cos"] == pytest.approx(1.0, abs=1e-5)
    assert [rows[0]["tokens"][0]["token"].strip(), rows[1]["tokens"][0]["token"].strip()] == ["far", "window"]


def test_language_model_query_is_the_paper_prompt_and_language_reference_changes_nothing():
    torch.manual_seed(0)
    model = clip2depth.create_model("tiny", prompt_mode="language")
    sims = prompt_similarities(model)
    assert sims[PAPER_PROMPT] == pytest.approx(1.0, abs=1e-5) and sims["a photo"] < 1.0
    assert nearest_tokens(model) == []
    image = np.random.default_rng(0).random((32, 48, 3)).astype(np.float32)
    (same,) = conditioning_maps(model, [image], reference="language")
    assert same["mean_delta"] == pytest.approx(0.0, abs=1e-6)
    (other,) = conditioning_maps(model, [image], reference="empty")
    assert other["delta"].shape == (32, 48) and other["mean_delta"] > 0


def test_unconditioned_model_is_refused():
    model = clip2depth.create_model("tiny", prompt_mode="none")
    with pytest.raises(clip2depth.ConfigError, match="no text conditioning"):
        prompt_similarities(model)


# ------------------------------------------------------------------------------------------ commands


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    argv = ["--recipe", "synthetic", "--variants", "prompt=mirror", "finetune=1", "--out", str(out),
            "--spatial", *TINY_RUN]
    assert run_command(ablate_cmd, argv) == 0
    return out, argv


def test_ablate_trains_evaluates_and_reports_each_variant(ablation_dir):
    out, _ = ablation_dir
    pixels = png_rgb(out / "ablation.png")
    assert pixels.shape == (round(100 * (0.45 * 2 + 1.2)), 900, 3) and count_colour(pixels, BLUE) > 0  # 2 bars
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["variant"] for r in rows] == ["prompt=mirror", "finetune=1"]
    assert all(r["step"] == "2" and r["complete"] == "True" and r["count"] == "2" for r in rows)
    mirror, finetune = rows
    assert int(finetune["trainable_params"]) > int(mirror["trainable_params"])  # one CLIP block trains too
    assert all(math.isfinite(float(r["abs_rel"])) and "patch_artifact" in r for r in rows)
    config = json.loads((out / "finetune=1" / "last" / "config.json").read_text())["model"]
    assert config["unfreeze_image_blocks"] == 1 and config["prompt_mode"] == "mirror"
    table = (out / "ablation.md").read_text()
    assert "| prompt=mirror |" in table and "| finetune=1 |" in table


def test_ablate_rerun_does_not_retrain(ablation_dir, monkeypatch):
    out, argv = ablation_dir
    before = (out / "prompt=mirror" / "last" / "model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished variant was trained again")

    monkeypatch.setattr("clip2depth.training.trainer.train", no_training)
    assert run_command(ablate_cmd, [*argv, "--resume"]) == 0
    assert (out / "prompt=mirror" / "last" / "model.safetensors").stat().st_mtime_ns == before


def test_ablate_rebuilds_a_damaged_cached_evaluation(ablation_dir, monkeypatch):
    out, argv = ablation_dir
    cached = out / "prompt=mirror" / "eval" / "metrics.json"
    good = json.loads(cached.read_text())
    cached.write_text(cached.read_text()[:100])  # e.g. a disk that filled up under another tool

    def no_training(*args, **kwargs):
        raise AssertionError("a finished variant was trained again")

    monkeypatch.setattr("clip2depth.training.trainer.train", no_training)
    assert run_command(ablate_cmd, [*argv, "--resume"]) == 0
    again = json.loads(cached.read_text())
    assert again["count"] == good["count"] and again["metrics"] == pytest.approx(good["metrics"])


def test_ablate_refuses_a_run_dir_trained_with_other_settings(ablation_dir):
    out, argv = ablation_dir
    with pytest.raises(clip2depth.ConfigError, match="other settings"):
        run_command(ablate_cmd, [*argv, "--resume", "--set", "train.lr=0.5"])


def test_consistency_synthetic_writes_json_and_plot(tiny_model, tmp_path):
    model_dir = tmp_path / "model"
    save_pretrained(tiny_model, model_dir)
    out = tmp_path / "still"
    argv = ["--model", str(model_dir), "--synthetic", "3", "--synthetic-size", "32", "48", "--device", "cpu"]
    assert run_command(consistency_cmd, [*argv, "--motion", "0", "--out", str(out)]) == 0
    still = json.loads((out / "consistency.json").read_text())
    assert still["summary"]["flicker"] == 0.0 and still["summary"]["scale_drift"] == 0.0
    pixels = png_rgb(out / "consistency.png")
    assert pixels.shape == (550, 700, 3)  # three panels: flicker, AbsRel and scale against the ground truth
    assert count_colour(pixels, BLUE) > 0 and count_colour(pixels, PURPLE) > 0
    assert run_command(consistency_cmd, [*argv, "--out", str(tmp_path / "moving")]) == 0
    moving = json.loads((tmp_path / "moving" / "consistency.json").read_text())
    assert len(moving["per_frame"]) == 3 and moving["summary"]["gt_flicker"] > 0


def test_inspect_mirror_writes_reports_and_convergence(ablation_dir, tmp_path):
    out, _ = ablation_dir
    run = out / "prompt=mirror"
    torch.manual_seed(0)
    train_size = json.loads((run / "last" / "config.json").read_text())["model"]["train_size"]  # the run's scale
    save_pretrained(clip2depth.create_model("tiny", prompt_mode="mirror", train_size=train_size),
                    run / "steps" / "step-000000", extra={"step": 0})
    assert [p.name for p in expand_checkpoints([run])] == ["step-000000", "best"]  # best and last: one step
    report_dir = tmp_path / "mirror"
    argv = ["--model", str(run / "last"), "--checkpoints", str(run), "--synthetic", "2", "--synthetic-size", "32", "48",
            "--out", str(report_dir), "--device", "cpu", "--prompts", "a chair"]
    assert run_command(inspect_cmd, argv) == 0
    assert png_rgb(report_dir / "overlays.png").shape == (round(80 * (2.6 * 2 + 0.4)), 960, 3)  # a row per image
    convergence = png_rgb(report_dir / "convergence.png")
    assert convergence.shape == (700, 1100, 3) and count_colour(convergence, BLUE) > 0
    report = json.loads((report_dir / "mirror.json").read_text())
    assert len(report["tokens"]) == 8 and "a chair" in report["prompt_similarity"]
    steps = [r["step"] for r in report["convergence"]]
    assert steps == [0, 2] and report["convergence"][-1]["q_cos_final"] == pytest.approx(1.0, abs=1e-5)
    assert "Nearest vocabulary tokens" in (report_dir / "tokens.md").read_text()
