"""The Hugging Face Hub without the network: hf-hub: models, push_to_hub, hf-hub: and folder CLIP weights."""

from __future__ import annotations

import sys

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

import clip2depth
from clip2depth.models.card import CARD_NAME
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


def test_from_pretrained_is_create_model(saved, monkeypatch):
    model, directory = saved
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(directory))
    images = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model.eval()(images)
        for source in (directory, str(directory), "hf-hub:org/name"):
            loaded = clip2depth.Clip2Depth.from_pretrained(source)
            assert isinstance(loaded, clip2depth.Clip2Depth)
            assert torch.equal(loaded(images), expected)
    preset = clip2depth.Clip2Depth.from_pretrained("tiny", max_depth=80.0)
    assert preset.max_depth == 80.0 and preset.config.name == "tiny"


class _FakeHub:
    """Stands in for ``huggingface_hub.HfApi``: keeps uploaded folders in memory."""

    repos: dict[str, dict[str, bytes]] = {}

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.repos.setdefault(repo_id, {})

    def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message):
        from pathlib import Path

        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir() if p.name in allow_patterns}
        self.repos[repo_id].update(files)
        return f"https://huggingface.co/{repo_id}/commit/0"


def test_push_to_hub_round_trips_through_hf_hub(saved, monkeypatch, tmp_path):
    model, _ = saved
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHub)
    url = model.push_to_hub("me/depth")
    assert url == "https://huggingface.co/me/depth/commit/0"
    assert set(_FakeHub.repos["me/depth"]) == {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME}
    card = _FakeHub.repos["me/depth"][CARD_NAME].decode()
    assert card.startswith("---\nlibrary_name: clip2depth\n") and 'create_model("hf-hub:me/depth")' in card

    def snapshot(repo_id, **kwargs):
        folder = tmp_path / repo_id.replace("/", "--")
        folder.mkdir(exist_ok=True)
        for name, data in _FakeHub.repos[repo_id].items():
            (folder / name).write_bytes(data)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    loaded = clip2depth.Clip2Depth.from_pretrained("hf-hub:me/depth")
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(images), model.eval()(images))


def test_push_to_hub_failure_names_the_repository(saved, monkeypatch):
    model, _ = saved

    class Refusing(_FakeHub):
        def create_repo(self, repo_id, private=False, exist_ok=False):
            raise PermissionError("401 Unauthorized")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    with pytest.raises(clip2depth.ConfigError, match="me/depth.*401 Unauthorized"):
        model.push_to_hub("me/depth")


def _open_clip_folder(folder, *, quick_gelu: bool, mean, std):
    """A tiny open_clip weights folder (config + safetensors) whose config differs from the preset's tag."""
    import json

    import open_clip
    from safetensors.torch import save_file

    from clip2depth.models.clip_backbone import register_clip_configs

    register_clip_configs()
    folder.mkdir()
    cfg = {**open_clip.get_model_config("clip2depth-tiny-vit"), "quick_gelu": quick_gelu}
    clip = open_clip.create_model("clip2depth-tiny-vit")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": cfg, "preprocess_cfg": {"mean": mean, "std": std}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


def test_local_open_clip_folder_sets_quickgelu_and_mean_std(tmp_path):
    folder = _open_clip_folder(tmp_path / "clip", quick_gelu=True, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    model = clip2depth.create_model("tiny", pretrained=str(folder))
    assert model.image_encoder.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert model.image_encoder.std.flatten().tolist() == pytest.approx([0.2, 0.25, 0.3])
    assert type(model.image_encoder.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    plain = clip2depth.create_model("tiny")
    assert type(plain.image_encoder.visual.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"


def test_hf_hub_clip_weights_set_quickgelu_and_mean_std(tmp_path, monkeypatch):
    import open_clip.pretrained

    folder = _open_clip_folder(tmp_path / "clip", quick_gelu=True, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6])

    def download(repo_id, filename, **kwargs):
        assert repo_id == "org/clip"
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(filename)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name, **kw: str(folder / name))
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", download)
    model = clip2depth.create_model("tiny", pretrained="hf-hub:org/clip")
    assert model.image_encoder.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert model.image_encoder.std.flatten().tolist() == pytest.approx([0.4, 0.5, 0.6])
    assert type(model.image_encoder.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
