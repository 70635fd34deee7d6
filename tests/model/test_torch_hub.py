"""``hubconf.py``: torch.hub.load from a local clone builds what create_model builds (no download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import clip2depth
from clip2depth.models import clip_backbone
from clip2depth.models.model import Clip2Depth

ROOT = Path(__file__).resolve().parents[2]


def _load(entry: str, *args, **kwargs):
    return torch.hub.load(str(ROOT), entry, *args, source="local", **kwargs)


def test_every_preset_has_an_entry_named_after_it():
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    # torch.hub.list's rule (it takes only GitHub repositories): every public callable is an entry point
    entries = {name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")}
    expected = {"clip2depth"} | {"clip2depth_" + name.removeprefix("clip2depth-").replace("-", "_")
                                 for name in clip2depth.list_models() if not name.startswith("tiny")}
    assert entries == expected
    assert all(importlib.util.find_spec(name) for name in hubconf.dependencies)


def test_preset_entry_builds_the_paper_model_on_random_clip_weights(vitb16_model):
    model = _load("clip2depth_vit_b_16", pretrained=None)
    assert isinstance(model, Clip2Depth) and not model.training
    assert model.config == vitb16_model.config and model.clip_weights is None
    ours, theirs = model.image_encoder.state_dict(), vitb16_model.image_encoder.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)  # seeded CLIP


def test_pretrained_true_means_the_presets_own_tag(monkeypatch):
    monkeypatch.setattr(clip_backbone, "_is_cached", lambda cfg: False)
    monkeypatch.setattr(clip_backbone, "hub_reachable", lambda host, timeout_s=3.0: False)
    with pytest.raises(clip2depth.CheckpointError, match="ViT-B-16-SigLIP2 'webli' must be downloaded"):
        _load("clip2depth_siglip2_b_16", pretrained=True)
    with pytest.raises(clip2depth.CheckpointError, match="ViT-B-16 'laion2b_s34b_b88k' must be downloaded"):
        _load("clip2depth_vit_b_16", pretrained="laion2b_s34b_b88k")


def test_generic_entry_loads_presets_with_overrides_and_trained_directories(tmp_path):
    tiny = _load("clip2depth", "tiny", max_depth=20.0)
    assert tiny.config.name == "tiny" and tiny.max_depth == 20.0

    torch.manual_seed(3)
    trained = clip2depth.create_model("tiny")
    with torch.no_grad():
        trained.prompt_encoder.mirror.add_(1.0)
    trained.save_pretrained(tmp_path / "best")
    loaded = _load("clip2depth", str(tmp_path / "best"))
    images = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(images), trained.eval()(images))
