"""save_pretrained / create_model(dir): exact round trip and one clear error for every bad checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import clip2depth
from clip2depth.models.card import CARD_NAME
from clip2depth.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(5)
    model = clip2depth.create_model("tiny")
    with torch.no_grad():  # make the trained parts differ from a fresh init
        model.prompt_encoder.mirror.add_(torch.randn_like(model.prompt_encoder.mirror))
        model.decoder.head.layers[-1].bias.add_(0.3)
    out = tmp_path / "model"
    model.save_pretrained(str(out))
    return model, out


def test_round_trip_gives_identical_outputs(saved):
    model, out = saved
    assert sorted(p.name for p in out.iterdir()) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    stored = load_file(str(out / WEIGHTS_NAME))
    assert "prompt_encoder.mirror" in stored
    assert not any(k.startswith("image_encoder.") for k in stored)  # CLIP weights are never stored
    loaded = clip2depth.create_model(str(out))
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_config_names_the_clip(saved):
    _, out = saved
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["model"]["clip_model"] == "clip2depth-tiny-vit"
    assert config["clip"]["weights"] is None
    assert len(config["weights_sha256"]) == 64


def test_tampered_weights_are_refused(saved):
    _, out = saved
    path = out / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(clip2depth.CheckpointError, match="checksum"):
        clip2depth.create_model(str(out))


def test_truncated_weights_are_refused(saved):
    _, out = saved
    path = out / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(clip2depth.CheckpointError, match="corrupt"):
        clip2depth.create_model(str(out))


def test_renamed_key_is_refused(saved):
    _, out = saved
    state = load_file(str(out / WEIGHTS_NAME))
    state["prompt_encoder.mirrror"] = state.pop("prompt_encoder.mirror")
    save_file(state, str(out / WEIGHTS_NAME), metadata={"clip_model": "clip2depth-tiny-vit"})
    with pytest.raises(clip2depth.CheckpointError, match=r"missing keys \['prompt_encoder.mirror'\]"):
        clip2depth.create_model(str(out))


def test_checkpoint_of_another_architecture_is_refused(saved):
    _, out = saved
    with pytest.raises(clip2depth.CheckpointError, match="shape mismatch"):
        clip2depth.create_model(str(out), reduce_dim=64)


def test_checkpoint_made_for_another_clip_is_refused(saved):
    _, out = saved
    config = json.loads((out / CONFIG_NAME).read_text())
    config["model"]["clip_model"] = "ViT-B-16"
    (out / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(clip2depth.CheckpointError, match="trained for CLIP clip2depth-tiny-vit"):
        clip2depth.create_model(str(out))


def test_missing_or_broken_files_are_named(tmp_path, saved):
    _, out = saved
    (out / WEIGHTS_NAME).unlink()
    with pytest.raises(clip2depth.CheckpointError, match="model.safetensors is missing"):
        clip2depth.create_model(str(out))
    (out / CONFIG_NAME).write_text("{not json")
    with pytest.raises(clip2depth.CheckpointError, match="not valid JSON"):
        clip2depth.create_model(str(out))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(clip2depth.ConfigError, match="not a clip2depth model directory"):
        clip2depth.create_model(str(empty))


def test_failed_save_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    model, out = saved
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import clip2depth.models.checkpoint as ckpt

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with torch.no_grad():
        model.prompt_encoder.mirror.zero_()
    with pytest.raises(OSError):
        model.save_pretrained(str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    clip2depth.create_model(str(out))  # still loads


def test_a_run_resumes_from_a_checkpoint_saved_before_train_size_was_recorded(saved):
    """``train_size`` is the scale images are predicted at, not the weights: resume takes the run's own."""
    from clip2depth.models.spec import resolve_model

    _, folder = saved
    path = folder / CONFIG_NAME
    data = json.loads(path.read_text())
    del data["model"]["train_size"]  # as written before the field existed: it reads back as 480×640
    path.write_text(json.dumps(data))
    spec = resolve_model("tiny", overrides={"train_size": [96, 128]}).with_directory(folder)
    assert spec.config.train_size == [96, 128]
    with pytest.raises(clip2depth.CheckpointError, match=r"other settings \(reduce_dim\)"):
        resolve_model("tiny", overrides={"reduce_dim": 48}).with_directory(folder)
