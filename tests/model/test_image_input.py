"""One conversion from pixels to model input (``image_tensor``): every form of one picture gives the same bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clip2depth.errors import DataError
from clip2depth.evaluation.temporal import TemporalAccumulator, predict_frames
from clip2depth.models.infer import image_tensor

RGB = np.random.default_rng(0).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)


def _forms(tmp_path):
    path = tmp_path / "picture.png"
    Image.fromarray(RGB).save(path)
    chw = torch.from_numpy(RGB).permute(2, 0, 1)
    return {
        "path": path,
        "path as str": str(path),
        "uint8 array": RGB,
        "PIL image": Image.fromarray(RGB),
        "uint8 tensor": chw,
        "float tensor": chw.float() / 255,
        "float64 tensor": chw.double() / 255,
        "float array": RGB / 255.0,
        "RGBA array": np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)]),
    }


def test_every_form_of_a_picture_is_the_same_model_input(tmp_path):
    expected = torch.from_numpy(RGB.astype(np.float32) / np.float32(255)).permute(2, 0, 1)
    for name, image in _forms(tmp_path).items():
        t = image_tensor(image)
        assert t.dtype == torch.float32 and t.shape == (3, 40, 56), name
        assert torch.equal(t, expected), name


def test_infer_gives_the_same_depth_for_every_form(tiny_model, tmp_path):
    forms = _forms(tmp_path)
    reference = tiny_model.infer(RGB)
    for name, image in forms.items():
        np.testing.assert_array_equal(tiny_model.infer(image), reference, err_msg=name)
    batch = tiny_model.infer_batch(list(forms.values()), batch_size=16)  # one batch: same input, same bits
    for name, depth in zip(forms, batch, strict=True):
        np.testing.assert_array_equal(depth, batch[0], err_msg=name)
    np.testing.assert_allclose(batch[0], reference, rtol=1e-5)  # batched kernels may round differently


def test_temporal_analysis_feeds_the_model_the_same_input(tiny_model):
    frames = [("a", RGB), ("b", RGB / 255.0)]
    depths = [depth for _, _, depth in predict_frames(tiny_model, frames)]
    np.testing.assert_array_equal(depths[1], depths[0])
    np.testing.assert_array_equal(depths[0], tiny_model.infer_batch([RGB, RGB])[0])
    acc = TemporalAccumulator()
    for (name, frame), depth in zip(frames, depths, strict=True):
        acc.add(frame, depth, name=name)
    assert acc.per_frame[1]["static_fraction"] == 1.0  # uint8 and float forms are the same pixels


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.rand(40, 56, 3), r"3×H×W \(channels first\), got shape \(40, 56, 3\)"),
        (torch.rand(1, 3, 40, 56), r"got shape \(1, 3, 40, 56\)"),
        (torch.rand(3, 8, 8) * 255, r"values in \[0, 1\], got \[.*\]; divide 8-bit values by 255"),
        (torch.full((3, 8, 8), float("nan")), r"values in \[0, 1\]"),
        (torch.zeros(3, 8, 8, dtype=torch.int64), "uint8 .* or float in \\[0, 1\\], got torch.int64"),
        (np.zeros((3, 8, 8, 2)), "not an image"),
        ([[0, 1]], "cannot read an image from list"),
    ],
)
def test_what_is_not_an_image_is_one_data_error(image, message):
    with pytest.raises(DataError, match=message):
        image_tensor(image)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.png: no such file"):
        image_tensor(tmp_path / "nope.png")
