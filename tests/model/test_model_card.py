"""The model card (README.md beside config.json): Hub metadata, base CLIP, the run's recipe and metrics."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import open_clip
import pytest
import yaml

import clip2depth
from clip2depth.models.card import CARD_NAME, Validation, base_model, model_card
from clip2depth.models.config import load_preset
from clip2depth.training.config import apply_overrides, load_recipe
from clip2depth.training.trainer import train

ROOT = Path(__file__).resolve().parents[2]


def _parse(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    front, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def _recipe_in(body: str) -> dict:
    return yaml.safe_load(body.split("```yaml\n", 1)[1].split("\n```", 1)[0])


def test_saved_model_has_a_card_with_hub_metadata(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    front, body = _parse((tmp_path / "m" / CARD_NAME).read_text())

    licence = re.search(r'^license = "(\w+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert front["library_name"] == "clip2depth" and front["pipeline_tag"] == "depth-estimation"
    assert front["license"] == licence.lower() == "mit"
    assert {"clip2depth", "depth-estimation"} <= set(front["tags"])
    assert "base_model" not in front  # random CLIP weights come from no repository
    assert "model-index" not in front  # nothing was measured
    trainable = sum(p.numel() for p in tiny_model.parameters() if p.requires_grad)
    assert front["clip2depth"] == {
        "preset": "tiny", "clip_model": "clip2depth-tiny-vit", "clip_weights": None, "prompt_mode": "mirror",
        "trainable_parameters": trainable, "max_depth_m": 10.0,
    }
    assert f"{trainable:,} parameters" in body and "8-row mirror" in body
    assert "own scale, the pixel count of 192×256 (H×W)" in body  # the tiny preset's train_size
    assert "Not recorded" in body and "None recorded" in body and "random (seeded) weights" in body
    assert 'create_model("path/to/this/folder")' in body
    assert 'torch.hub.load("path/to/clip2depth", "clip2depth", "path/to/this/folder", source="local")' in body


@pytest.mark.parametrize(
    ("clip_model", "weights", "expected"),
    [
        ("ViT-B-16", "openai", "timm/vit_base_patch16_clip_224.openai"),
        ("ViT-B-16-SigLIP2", "webli", "timm/ViT-B-16-SigLIP2"),
        ("ViT-B-16", "hf-hub:org/clip@v2", "org/clip"),
        ("ViT-B-16", "/data/clip/ViT-B-16.safetensors", None),
        ("ViT-B-16", None, None),
    ],
)
def test_base_model_is_the_hub_repository_of_the_clip_weights(clip_model, weights, expected):
    assert base_model(clip_model, weights) == expected


def test_every_preset_tag_names_the_repository_open_clip_downloads_from():
    for name in clip2depth.list_models():
        config = load_preset(name)
        if config.clip_pretrained is None:
            continue
        hub = open_clip.get_pretrained_cfg(config.clip_model, config.clip_pretrained)["hf_hub"]
        card = model_card(config, clip_weights=config.clip_pretrained, trainable_parameters=1)
        front, body = _parse(card)
        assert front["base_model"] == hub.strip("/") and f"`{config.clip_pretrained}`" in body, name
        assert "open_clip fetches them on first use" in body


def test_card_states_the_recipe_and_metrics_it_is_given():
    recipe = load_recipe("synthetic").to_dict()
    validation = Validation(step=120, metrics={"abs_rel": 0.25, "rmse": 1.5, "d1": math.nan}, count=48)
    front, body = _parse(model_card(load_preset("tiny").replace(prompt_mode="language"), clip_weights=None,
                                    trainable_parameters=7, recipe=recipe, validation=validation))
    (result,) = front["model-index"][0]["results"]
    assert result["dataset"] == {"type": "synthetic", "name": "synthetic (val)"}
    assert result["metrics"] == [{"type": "abs_rel", "name": "abs_rel", "value": 0.25},
                                 {"type": "rmse", "name": "rmse", "value": 1.5}]  # nan is not a Hub value
    assert front["clip2depth"]["validation_step"] == 120
    assert _recipe_in(body) == recipe
    assert "| abs_rel | 0.2500 |" in body and "(48 images) after step 120" in body
    assert "mirror" not in body.split("## Use")[0]  # language mode trains the decoder only


def test_training_checkpoints_carry_the_runs_recipe_and_latest_validation(tmp_path):
    recipe = apply_overrides(load_recipe("synthetic"), [
        "data.kwargs.size=[64, 96]", "data.kwargs.length=16", "data.val_kwargs.size=[64, 96]",
        "data.val_kwargs.length=4", "augment.crop_size=[64, 80]", "train.batch_size=4", "train.log_every=1",
        "train.val_every=2", "train.max_steps=4", "train.lr=1e-2",
    ])
    run = tmp_path / "run"
    train(recipe, run, progress=False)

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    validations = {r["step"]: r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
                   if "val_abs_rel" in r}
    assert sorted(validations) == [2, 4]
    best_step = json.loads((run / "best" / "config.json").read_text())["best"]["step"]
    for folder, step in (("best", best_step), ("last", 4)):
        front, body = _parse((run / folder / CARD_NAME).read_text())
        assert _recipe_in(body) == resolved
        assert front["clip2depth"]["validation_step"] == step
        (result,) = front["model-index"][0]["results"]
        logged = {k[len("val_"):]: v for k, v in validations[step].items() if k.startswith("val_") and k != "val_count"}
        assert {m["type"]: m["value"] for m in result["metrics"]} == logged
        assert f"({validations[step]['val_count']} images) after step {step}" in body
        assert front["clip2depth"]["preset"] == resolved["model"] == "tiny"
