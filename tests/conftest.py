"""Shared fixtures: tiny random-weight models, built once per session (CLIP weights are seeded)."""

from __future__ import annotations

import logging

import pytest
import torch

import clip2depth


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


@pytest.fixture
def nyu_host(tmp_path):
    """A local HTTP host serving look-alike NYU files at their mirror paths, and the CLI flags naming the
    split lists and splits.mat that match them (dataset download and reproduce tests)."""
    from fakedata import nyu_labeled_mat, nyu_sync_zip
    from httpserver import FileServer

    mat, splits, test_list = nyu_labeled_mat(tmp_path)
    sync, train_list = nyu_sync_zip(tmp_path)
    with FileServer({"nyu_depth_v2_labeled.mat": mat, "sync.zip": sync}) as server:
        yield server, ["--nyu-splits", splits, "--train-list", train_list, "--test-list", test_list]
