"""Training on a user's own RGB + depth PNGs with the ``folder`` recipe, as README "Train on your own data"
shows: list file -> train -> eval -> predict, on generated files with the tiny preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clirun import assert_user_error, run_cli

TINY = ["--model", "tiny", "--pretrained", "none",
        "--set", "augment.crop_size=[48, 64]", "--set", "train.batch_size=4", "--set", "train.num_workers=0",
        "--set", "train.max_steps=3", "--set", "train.val_every=3", "--set", "train.log_every=1"]


def make_folder(root: Path, n: int = 10) -> Path:
    """``root/rgb/NNN.jpg`` and ``root/depth/NNN.png`` (uint16 millimetres), plus ``root/all.txt`` as the
    README builds it; returns the list file."""
    rng = np.random.default_rng(0)
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    lines = []
    for i in range(n):
        depth_m = np.linspace(1.0, 6.0, 80)[None, :].repeat(64, 0) + rng.uniform(0, 0.5)
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / "rgb" / f"{i:03d}.jpg")
        Image.fromarray((depth_m * 1000).astype(np.uint16)).save(root / "depth" / f"{i:03d}.png")
        lines.append(f"rgb/{i:03d}.jpg depth/{i:03d}.png")
    (root / "all.txt").write_text("\n".join(lines) + "\n")
    return root / "all.txt"


def test_folder_recipe_trains_evaluates_and_predicts(tmp_path):
    list_file = make_folder(tmp_path / "mydata")
    run = tmp_path / "runs" / "mine"
    result = run_cli("-q", "train", "--recipe", "folder", "--set", f"data.train_list={list_file}",
                     "--set", "data.val_fraction=0.2", "--out", run, *TINY)
    assert result.code == 0, result.err
    assert "done: 3 steps" in result.out
    val = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if "val_count" in line]
    assert val[-1]["val_count"] == 2  # 20 % of the 10 listed samples were held out
    config = (run / "config.yaml").read_text()
    assert "dataset: folder" in config and "val_fraction: 0.2" in config

    evaluated = run_cli("-q", "eval", "--model", run / "best", "--dataset", "folder", "--list-file", list_file,
                        "--depth-scale", "1000", "--out", tmp_path / "eval", "--device", "cpu", "--num-workers", "0")
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["count"] == 10 and np.isfinite(metrics["metrics"]["abs_rel"])

    predicted = run_cli("-q", "predict", tmp_path / "mydata" / "rgb", "--model", run / "best",
                        "--out", tmp_path / "depth", "--format", "npy", "--device", "cpu")
    assert predicted.code == 0, predicted.err
    depth = np.load(next((tmp_path / "depth").rglob("*.npy")))
    assert depth.shape == (64, 80) and np.isfinite(depth).all() and depth.min() > 0


def test_separate_validation_list_and_depth_scale(tmp_path):
    list_file = make_folder(tmp_path / "mydata")
    lines = list_file.read_text().splitlines()
    (tmp_path / "mydata" / "train.txt").write_text("\n".join(lines[:8]) + "\n")
    (tmp_path / "mydata" / "val.txt").write_text("\n".join(lines[8:]) + "\n")
    result = run_cli("-q", "train", "--recipe", "folder", "--data-root", tmp_path / "mydata",
                     "--set", "data.val_fraction=0", "--out", tmp_path / "run", *TINY)
    assert result.code == 0, result.err
    val = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
           if "val_count" in line]
    assert val[-1]["val_count"] == 2


@pytest.mark.parametrize(("sets", "fragments"), [
    ([], ["data.train_list"]),
    (["data.train_list=nowhere/train.txt"], ["nowhere/train.txt"]),
    (["data.train_list=LIST", "data.val_fraction=1.5"], ["data.val_fraction=1.5", "[0, 1)"]),
    (["data.train_list=LIST", "data.depth_scale=0"], ["data.depth_scale=0"]),
])
def test_folder_mistakes_fail_before_any_model(tmp_path, monkeypatch, sets, fragments):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the data was checked")

    monkeypatch.setattr("clip2depth.models.model.Clip2Depth.from_spec", refuse)
    list_file = make_folder(tmp_path / "mydata")
    argv = [arg for item in sets for arg in ("--set", item.replace("LIST", str(list_file)))]
    assert_user_error(run_cli("train", "--recipe", "folder", "--out", tmp_path / "run", *argv), *fragments)
