"""``predict --runtime onnx``: ONNX Runtime predicts what the torch path predicts; what it cannot do is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip2depth
from clip2depth.inference.onnx_runtime import OnnxRuntimeModel
from clip2depth.models.infer import predict_batch
from clirun import assert_user_error, run_cli

MAX_RELATIVE_ERROR = 1e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    model = clip2depth.create_model("tiny")
    with torch.no_grad():
        model.decoder.head.layers[-1].bias.add_(0.3)  # a trained-looking model, not the initial one
    directory = tmp_path_factory.mktemp("onnx-runtime") / "model"
    model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("onnx-photos")
    Image.fromarray(rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)).save(folder / "shot.png")
    return folder / "shot.png"


def test_runtime_model_predicts_what_torch_predicts(model_dir: Path) -> None:
    model = clip2depth.create_model(str(model_dir))
    runtime = OnnxRuntimeModel.from_model(model)
    assert runtime.patch_size == model.patch_size and runtime.config is model.config
    images = [torch.rand(3, 70, 100, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    expected = predict_batch(model, images, flip_tta=True)
    got = predict_batch(runtime, images, flip_tta=True)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape == (70, 100)
        assert float(np.max(np.abs(g - e) / e)) <= MAX_RELATIVE_ERROR


def test_predict_runtime_onnx_writes_the_torch_depth(model_dir: Path, photo: Path, tmp_path: Path) -> None:
    outs = {}
    for runtime in ("torch", "onnx"):
        result = run_cli("predict", photo, "--model", model_dir, "--out", tmp_path / runtime, "--format", "npy",
                         "--runtime", runtime, "--device", "cpu")  # fmt: skip
        assert result.code == 0, result.err
        outs[runtime] = np.load(tmp_path / runtime / "shot.npy")
    assert outs["onnx"].shape == outs["torch"].shape == (70, 100)
    assert float(np.max(np.abs(outs["onnx"] - outs["torch"]) / outs["torch"])) <= MAX_RELATIVE_ERROR


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--precision", "bf16"], ["--precision bf16", "float32 only"]),
    (["--device", "cuda"], ["--device cuda", "CPU"]),
])  # fmt: skip
def test_what_the_onnx_runtime_cannot_do_is_one_error(photo: Path, tmp_path: Path, flags, fragments) -> None:
    result = run_cli("predict", photo, "--model", "tiny", "--out", tmp_path, "--runtime", "onnx", *flags)
    assert_user_error(result, *fragments)


def test_missing_onnxruntime_is_one_error_naming_the_extra(photo: Path, tmp_path: Path, hide_module) -> None:
    hide_module("onnxruntime")
    result = run_cli("predict", photo, "--model", "tiny", "--out", tmp_path / "out", "--runtime", "onnx")
    assert_user_error(result, "pip install 'clip2depth[onnx]'")
    assert not (tmp_path / "out").exists()  # refused before anything was loaded or written
