"""``clip2depth reproduce``: download → train → evaluate → results.md on the tiny preset, and resuming."""

from __future__ import annotations

import json

import pytest

from clip2depth.analysis import reproduce as reproduce_module
from clip2depth.training.trainer import TrainState, TrainSummary
from clirun import assert_user_error, run_cli

TINY = ["--model", "tiny", "--depthclip", "none",
        "--set", "pretrained=null", "--set", "augment.crop_size=[64, 96]", "--set", "train.batch_size=4",
        "--set", "train.max_steps=2", "--set", "train.val_every=2", "--set", "train.num_workers=0",
        "--set", "train.log_every=1", "--set", "eval.limit=1"]


def test_reproduce_end_to_end_then_resumes(nyu_host, tmp_path, monkeypatch):
    server, lists = nyu_host
    out, root = tmp_path / "repro", tmp_path / "data"
    args = ["-q", "reproduce", "nyu", "--out", out, "--data-root", root, "--download", "--mirror", server.url,
            *lists, *TINY]
    result = run_cli(*args)
    assert result.code == 0, result.err
    assert "AbsRel" in result.out and "results.md" in result.out
    assert (root / "official_splits" / "test").is_dir() and (root / "sync").is_dir()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["count"] == 2 and metrics["model"] == "CLIP2Depth (this run)"
    finished = json.loads((out / "train" / "finished.json").read_text())
    assert finished["state"]["step"] == 2 and finished["gpu"]
    table = (out / "results.md").read_text()
    assert f"| {metrics['metrics']['abs_rel']:.3f} |" in table
    for peer in ("DepthCLIP", "Auty", "SPACE-CLIP", "AdaBins", "BTS", "NeWCRFs", "0.104 | 0.385 | 0.896"):
        assert peer in table
    assert "SPEC" not in table

    # A second run changes nothing: every stage is found finished.
    requests = len(server.requests)
    stamp = (out / "eval" / "metrics.json").stat().st_mtime_ns
    monkeypatch.setattr(reproduce_module, "train", lambda *a, **k: pytest.fail("trained again"))
    assert run_cli(*args).code == 0
    assert len(server.requests) == requests and (out / "eval" / "metrics.json").stat().st_mtime_ns == stamp
    monkeypatch.undo()

    # Training that stopped before it finished is resumed from last/, not started again.
    (out / "train" / "finished.json").unlink()
    (out / "eval" / "metrics.json").unlink()
    seen = {}
    real_train = reproduce_module.train

    def spy(recipe, run_dir, *, resume, progress):
        seen["resume"] = resume
        return real_train(recipe, run_dir, resume=resume, progress=progress)

    monkeypatch.setattr(reproduce_module, "train", spy)
    assert run_cli(*args).code == 0
    assert seen == {"resume": True} and (out / "eval" / "metrics.json").is_file()


def test_reproduce_without_data_asks_for_download(tmp_path):
    result = run_cli("-q", "reproduce", "nyu", "--out", tmp_path / "o", "--data-root", tmp_path / "none", *TINY)
    assert_user_error(result, "incomplete", "--download")
    assert not (tmp_path / "o" / "train").exists()


def test_interrupted_training_exits_130_and_says_how_to_continue(nyu_host, tmp_path, monkeypatch):
    server, lists = nyu_host
    stopped = TrainSummary(run_dir=tmp_path / "o" / "train", state=TrainState(step=1), total_steps=2, stopped="SIGINT")
    monkeypatch.setattr(reproduce_module, "train", lambda *a, **k: stopped)
    result = run_cli("-q", "reproduce", "nyu", "--out", tmp_path / "o", "--data-root", tmp_path / "d",
                     "--download", "--mirror", server.url, *lists, *TINY)
    assert result.code == 130 and "run the same command again" in result.out
    assert not (tmp_path / "o" / "results.md").exists()


def test_dry_run_prints_plan_sizes_and_estimate(tmp_path):
    result = run_cli("reproduce", "nyu", "--out", tmp_path / "o", "--data-root", tmp_path / "d", "--download",
                     "--dry-run", *TINY)
    assert result.code == 0, result.err
    assert "download 2 files, about 34.8 GB" in result.out
    assert "GPU hours" in result.out and "TFLOP/s" in result.out and "2 steps of batch 4" in result.out
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


def test_kitti_recipe_points_at_the_unpacked_annotations(tmp_path):
    opts = reproduce_module.ReproduceOptions(dataset="kitti", out=tmp_path / "o", data_root=tmp_path / "k",
                                             test_list="my_test.txt", overrides=["train.max_steps=5"])
    recipe = reproduce_module.recipe_for(opts)
    gt = str(tmp_path / "k" / "data_depth_annotated")
    assert recipe.data.root == str(tmp_path / "k") and recipe.train.max_steps == 5
    assert recipe.data.kwargs["gt_root"] == gt and recipe.data.val_kwargs["gt_root"] == gt
    assert recipe.data.val_kwargs["list_file"].endswith("my_test.txt")
    assert "list_file" not in recipe.data.kwargs and recipe.data.kwargs["kb_crop"] is True
