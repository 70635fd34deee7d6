"""What the web app's tests share: the trained-model folder the app serves (tiny, seeded)."""

from __future__ import annotations

import pytest
import torch

from clip2depth.models.factory import create_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny") / "best"
    create_model("tiny").save_pretrained(str(directory))
    return directory
