"""Faults a user can cause around models, through the real CLI: one ``error:`` line, exit 1, no traceback."""

from __future__ import annotations

import json
import pickle
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

import clip2depth
from clip2depth.models import clip_backbone
from clirun import assert_user_error, run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("faults") / "model"
    clip2depth.create_model("tiny").save_pretrained(directory)
    return directory


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(path)
    return path


def _with_model_field(model_dir, tmp_path, **fields):
    """A copy of ``model_dir`` whose config.json has ``fields`` changed in its ``model`` section."""
    directory = tmp_path / "edited"
    directory.mkdir()
    config = json.loads((model_dir / "config.json").read_text())
    config["model"].update(fields)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    return directory


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("blocks", "3,6,9", "expected a list of integers"),
        ("max_depth", "ten", "expected a number"),
        ("mirror_length", 6.5, "expected an integer"),
        ("clip_quick_gelu", "yes", "expected true/false or null"),
        ("max_depth", True, "expected a number"),
    ],
)
def test_wrong_type_in_model_config_names_file_field_value_and_type(model_dir, tmp_path, field, value, expected):
    directory = _with_model_field(model_dir, tmp_path, **{field: value})
    result = run_cli("info", "--model", directory, "--size", "64", "64")
    assert_user_error(result, str(directory / "config.json"), f"{field}={value!r}", expected)


def test_model_config_that_is_not_an_object_is_one_error(model_dir, tmp_path):
    directory = _with_model_field(model_dir, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["model"] = [1, 2]
    (directory / "config.json").write_text(json.dumps(config))
    assert_user_error(run_cli("info", "--model", directory), "config.json", "JSON object")


def test_recorded_clip_weights_of_the_wrong_type_are_named(model_dir, tmp_path):
    directory = _with_model_field(model_dir, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["clip"]["weights"] = 7
    (directory / "config.json").write_text(json.dumps(config))
    assert_user_error(run_cli("info", "--model", directory), "'clip.weights'", "7", "--pretrained")


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_pickle_given_to_pretrained_is_refused_unread(tmp_path, monkeypatch, kind):
    path = tmp_path / "weights.bin"
    if kind == "torch.save":
        torch.save({"w": torch.zeros(2)}, path)
    else:
        path.write_bytes(pickle.dumps({"w": [0.0, 1.0]}))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("a pickle was loaded"))
    line = assert_user_error(run_cli("info", "--model", "tiny", "--pretrained", path), str(path),
                             "pickle-based checkpoint", "safetensors")
    assert "weights_only" not in line and "trust" not in line


def test_open_clip_folder_holding_only_a_pickle_is_refused(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 64}}))
    torch.save({"w": torch.zeros(2)}, folder / "open_clip_pytorch_model.bin")
    assert_user_error(run_cli("info", "--model", "tiny", "--pretrained", folder), "only pickle-based weights")


def test_a_file_that_is_not_safetensors_is_named(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"not weights at all")
    assert_user_error(run_cli("info", "--model", "tiny", "--pretrained", path), str(path), "not a safetensors")


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "mps", "cuda:7"])
def test_unavailable_or_malformed_device_lists_what_is_available(image, tmp_path, device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    result = run_cli("predict", image, "--model", "tiny", "--out", tmp_path / "out", "--device", device)
    assert_user_error(result, f"--device {device}", "available: auto, cpu")
    assert not (tmp_path / "out").exists()


def test_missing_model_directory_is_not_called_an_unknown_preset():
    line = assert_user_error(run_cli("info", "--model", "runs/nope/best"), "no such model directory: runs/nope/best",
                             "tiny", "clip2depth-vit-b-16")
    assert "unknown model preset" not in line


def test_offline_download_fails_at_once_with_how_to_pass_local_weights(monkeypatch):
    monkeypatch.setattr(clip_backbone, "_is_cached", lambda cfg: False)
    monkeypatch.setattr(clip_backbone, "hub_reachable", lambda host, timeout_s=3.0: False)
    start = time.monotonic()
    result = run_cli("info", "--model", "clip2depth-vit-b-16", "--pretrained", "openai")
    assert_user_error(result, "ViT-B-16 'openai' must be downloaded", "cannot be reached",
                      "--pretrained /path/to/")
    assert time.monotonic() - start < 10  # no retry loop


def test_hf_offline_setting_counts_as_unreachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not clip_backbone.hub_reachable("huggingface.co")


@pytest.mark.parametrize(("size", "fragments"), [
    (("0", "0"), ["--size", "'0' is not a whole number of 1 or more"]),
    (("-16", "16"), ["--size", "'-16' is not a whole number of 1 or more"]),
])  # a size that is not a multiple of the patch is rounded, as predict rounds it (test_cli_info)
def test_info_refuses_bad_sizes(size, fragments):
    assert_user_error(run_cli("info", "--model", "tiny", "--size", *size), *fragments)


def test_export_of_a_baseline_is_refused(tmp_path):
    result = run_cli("export", "--model", "depthclip-rn50", "--onnx", tmp_path / "d.onnx")
    assert_user_error(result, "ONNX export supports CLIP2Depth models, not DepthCLIP")
    assert not list(tmp_path.iterdir())


def test_export_never_replaces_an_existing_file_silently(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"an earlier export")
    assert_user_error(run_cli("export", "--model", "tiny", "--onnx", target), "already exists", "--overwrite")
    assert target.read_bytes() == b"an earlier export"
    assert_user_error(run_cli("export", "--model", "tiny", "--onnx", tmp_path), "is a folder")


def _edited_config(model_dir, tmp_path, edit):
    """A copy of ``model_dir`` whose parsed config.json went through ``edit`` (which returns the new content)."""
    directory = tmp_path / "edited"
    shutil.copytree(model_dir, directory)
    path = directory / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return directory


def test_config_json_that_is_a_list_is_one_error(model_dir, tmp_path):
    directory = _edited_config(model_dir, tmp_path, lambda config: [config])
    assert_user_error(run_cli("info", "--model", directory), str(directory / "config.json"), "JSON list",
                      "re-save the model")


@pytest.mark.parametrize("version", ["1", 1.0, 1.5, None, True, 0, [1]])
def test_format_version_that_is_not_a_whole_number_is_one_error(model_dir, tmp_path, version):
    directory = _edited_config(model_dir, tmp_path, lambda config: {**config, "format_version": version})
    assert_user_error(run_cli("info", "--model", directory), str(directory / "config.json"),
                      f"'format_version' is {version!r}", "whole number")


def test_format_version_missing_is_named(model_dir, tmp_path):
    directory = _edited_config(model_dir, tmp_path, lambda c: {k: v for k, v in c.items() if k != "format_version"})
    assert_user_error(run_cli("info", "--model", directory), "'format_version' is None")


@pytest.mark.parametrize(("key", "value", "expected"), [("clip", ["openai"], "an object"),
                                                         ("weights_sha256", 12, "a string")])
def test_envelope_entries_of_the_wrong_type_are_named(model_dir, tmp_path, key, value, expected):
    directory = _edited_config(model_dir, tmp_path, lambda config: {**config, key: value})
    assert_user_error(run_cli("info", "--model", directory), f"'{key}' is {value!r}", expected)


def test_siglip2_preset_builds_without_transformers_and_advises_its_own_tag(siglip2_stand_in):
    result = run_cli("info", "--model", "clip2depth-siglip2-b-16", "--size", "32", "48")
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert "CLIP ViT-B-16-SigLIP2" in result.out
    assert "RANDOM weights" in result.err and "pretrained='webli'" in result.err
    assert "openai" not in result.err


@pytest.mark.parametrize("mode", ["language", "concat"])
def test_siglip2_prompt_without_transformers_names_the_extra(siglip2_stand_in, tmp_path, mode):
    saved = tmp_path / "siglip2"
    clip2depth.create_model("clip2depth-siglip2-b-16").save_pretrained(saved)
    directory = _edited_config(saved, tmp_path, lambda c: {**c, "model": {**c["model"], "prompt_mode": mode}})
    line = assert_user_error(run_cli("info", "--model", directory), f"prompt_mode '{mode}'", "ViT-B-16-SigLIP2",
                             "pip install 'clip2depth[siglip]'")
    assert "ModuleNotFoundError" not in line


@pytest.mark.parametrize("family", ["xlm-roberta-base-ViT-B-32", "nllb-clip-base"])
def test_hugging_face_text_tower_is_refused_by_family_not_by_package(model_dir, tmp_path, family):
    directory = _edited_config(model_dir, tmp_path, lambda c: {**c, "model": {**c["model"], "clip_model": family}})
    line = assert_user_error(run_cli("info", "--model", directory), f"CLIP {family} has a Hugging Face text tower",
                             "does not support", "Pick one of those models")
    assert "pip install" not in line and "install transformers" not in line
