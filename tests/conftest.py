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
