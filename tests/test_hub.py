"""``create_model("hf-hub:org/name")`` without the network: ``snapshot_download`` is replaced by a fake."""

from __future__ import annotations

import sys

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

import clip2depth
from clip2depth.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model whose trained parts differ from a fresh init, and the directory it was saved to."""
    torch.manual_seed(11)
    model = clip2depth.create_model("tiny")
    with torch.no_grad():
        model.prompt_encoder.mirror.add_(torch.randn_like(model.prompt_encoder.mirror))
        model.decoder.head.layers[-1].bias.add_(0.5)
    directory = tmp_path_factory.mktemp("hub") / "snapshot"
    model.save_pretrained(str(directory))
    return model, directory


def test_hub_model_loads_the_downloaded_snapshot(saved, monkeypatch):
    model, directory = saved
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(directory)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = clip2depth.create_model("hf-hub:org/name")

    (repo_id, kwargs), = calls
    assert repo_id == "org/name"
    assert set(kwargs.get("allow_patterns", [])) >= {CONFIG_NAME, WEIGHTS_NAME}
    ours, theirs = model.trainable_state_dict(), loaded.trainable_state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval()(images), loaded(images))


def test_hub_overrides_apply_to_the_downloaded_config(saved, monkeypatch):
    _, directory = saved
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(directory))
    loaded = clip2depth.create_model("hf-hub:org/name", max_depth=80.0)
    assert loaded.max_depth == 80.0


@pytest.mark.parametrize(
    "error",
    [
        LocalEntryNotFoundError("outgoing traffic has been disabled (HF_HUB_OFFLINE=1)"),
        OSError("Connection refused"),
        ValueError("Invalid repo id"),
    ],
    ids=["offline", "network", "bad-id"],
)
def test_hub_failure_is_a_config_error_naming_the_repo(monkeypatch, error):
    def failing_snapshot_download(repo_id, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing_snapshot_download)
    with pytest.raises(clip2depth.ConfigError, match="hf-hub:org/missing") as info:
        clip2depth.create_model("hf-hub:org/missing")
    assert str(error) in str(info.value)  # the hub's own reason is kept for the user


def test_missing_huggingface_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(clip2depth.ConfigError, match=r"pip install 'clip2depth\[hub\]'"):
        clip2depth.create_model("hf-hub:org/name")


def test_hub_revision_is_passed_on(saved, monkeypatch):
    _, directory = saved
    seen = {}

    def fake(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(directory)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    clip2depth.create_model("hf-hub:org/name@v1")
    assert seen["repo_id"] == "org/name" and seen["revision"] == "v1"


def test_hub_repo_without_config_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(tmp_path))
    with pytest.raises(clip2depth.ConfigError, match="hf-hub:org/name has no config.json"):
        clip2depth.create_model("hf-hub:org/name")
