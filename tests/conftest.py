"""Shared fixtures: tiny random-weight models, built once per session (CLIP weights are seeded)."""

from __future__ import annotations

import builtins
import collections
import logging
import shutil
import sys

import pytest
import torch

import clip2depth
from scalefixtures import local_reference, ray_cluster, s3, scale_model_dir, scale_photos  # noqa: F401


@pytest.fixture(autouse=True)
def _quiet_random_clip_warnings(caplog):
    caplog.set_level(logging.ERROR, logger="root")


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return clip2depth.create_model("tiny")


@pytest.fixture(scope="session")
def vitb16_model():
    torch.manual_seed(0)
    return clip2depth.create_model("clip2depth-vit-b-16")


@pytest.fixture()
def fresh_tiny():
    """A tiny model a test may modify."""
    torch.manual_seed(0)
    return clip2depth.create_model("tiny")


@pytest.fixture()
def siglip2_stand_in(monkeypatch):
    """``ViT-B-16-SigLIP2`` shrunk for the test: its real text config (context 64, the SigLIP 2 tokenizer's
    name, bidirectional, last-position pooling) with a tiny vocabulary and width, a 9-block timm ViT image
    tower; the preset ``clip2depth-siglip2-b-16`` then builds in a fraction of a second. ``transformers`` is
    made unimportable, as where the ``siglip`` extra is not installed."""
    import open_clip

    from clip2depth.models.clip_backbone import register_clip_configs

    register_clip_configs()  # rescans open_clip's registry: must come before the patch
    real = open_clip.get_model_config("ViT-B-16-SigLIP2")
    stand_in = {
        "embed_dim": 96, "custom_text": True, "init_logit_bias": -10,
        "vision_cfg": {"image_size": 224, "timm_model_name": "test_vit3", "timm_model_pretrained": False,
                       "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {**real["text_cfg"], "vocab_size": 300, "width": 32, "heads": 2, "layers": 2},
    }
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "ViT-B-16-SigLIP2", stand_in)
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    return stand_in


@pytest.fixture
def ample_disk(monkeypatch):
    """1 TB free on every disk, as ``shutil.disk_usage`` reports it.

    ``data get`` checks free space against the real archives' sizes (64 GB for NYU's sync.zip), not the small
    look-alikes the tests serve, so without this a download test's outcome would depend on the machine's disk.
    A test about a full disk sets its own ``disk_usage`` after this one.
    """
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2 * 10**12, 10**12, 10**12))


@pytest.fixture
def nyu_host(tmp_path, ample_disk):
    """A local HTTP host serving look-alike NYU files at their mirror paths, and the CLI flags naming the
    split lists and splits.mat that match them (dataset download and reproduce tests)."""
    from fakedata import nyu_labeled_mat, nyu_sync_zip
    from httpserver import FileServer

    mat, splits, test_list = nyu_labeled_mat(tmp_path)
    sync, train_list = nyu_sync_zip(tmp_path)
    with FileServer({"nyu_depth_v2_labeled.mat": mat, "sync.zip": sync}) as server:
        yield server, ["--nyu-splits", splits, "--train-list", train_list, "--test-list", test_list]


@pytest.fixture()
def hide_module(monkeypatch):
    """``hide_module("onnxruntime")``: from then on, importing that package fails as if it were not installed."""

    def hide(name: str) -> None:
        real_import = builtins.__import__

        def refuse(module, *args, **kwargs):
            if module == name or module.startswith(name + "."):
                raise ImportError(f"No module named '{name}'")
            return real_import(module, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", refuse)

    return hide
