"""One reading rule: a file reaches the model as the same pixels through a dataset, ``predict`` and ``infer``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip2depth.data.base import read_rgb
from clip2depth.inference.outputs import OutputOptions
from clip2depth.inference.run import PredictOptions, predict_paths
from clip2depth.io.images import load_image
from imagefiles import png16_rgb


def _files(root: Path) -> dict[str, Path]:
    """The awkward files: 16-bit gray and RGB, RGBA, palette, EXIF-rotated JPEG (sizes are multiples of 16)."""
    rng = np.random.default_rng(0)
    files = {name: root / name for name in ("gray16.png", "rgb16.png", "rgba.png", "palette.png", "rotated.jpg")}
    Image.fromarray(rng.integers(0, 65536, (32, 48), dtype=np.uint16)).save(files["gray16.png"])
    files["rgb16.png"].write_bytes(png16_rgb(rng.integers(0, 65536, (32, 48, 3), dtype=np.uint16)))
    rgba = rng.integers(0, 256, (32, 48, 4), dtype=np.uint8)
    rgba[:, :, 3] = rng.integers(0, 256, (32, 48))  # alpha varies: compositing would change colours
    Image.fromarray(rgba, mode="RGBA").save(files["rgba.png"])
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).quantize(16).save(files["palette.png"])
    exif = Image.Exif()
    exif[0x0112] = 8  # displayed rotated 90° counter-clockwise: 32 wide × 48 high
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(files["rotated.jpg"], exif=exif)
    return files


class _Recorder:
    """Forward pre-hook keeping every batch the model is given."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.inputs.append(args[0].detach().cpu().clone())


@pytest.mark.parametrize("name", ["gray16.png", "rgb16.png", "rgba.png", "palette.png", "rotated.jpg"])
def test_every_path_feeds_the_model_identical_pixels(name: str, tiny_model, tmp_path: Path) -> None:
    path = _files(tmp_path)[name]
    recorder = _Recorder()
    handle = tiny_model.register_forward_pre_hook(recorder)
    try:
        # native: the pixels as read reach the network unresized (by default all three resize them alike)
        report = predict_paths(tiny_model, [path], out_dir=tmp_path / "out", progress=False,
                               outputs=OutputOptions(formats=("npy",)),
                               options=PredictOptions(native=True))  # fmt: skip
        tiny_model.infer(path, native=True)
        with Image.open(path) as img:
            tiny_model.infer(img, native=True)
    finally:
        handle.remove()
    dataset = read_rgb(path)

    assert report.exit_code == 0
    predicted, from_path, from_pil = (x[0] for x in recorder.inputs)
    expected = torch.from_numpy(load_image(path)).permute(2, 0, 1).float() / 255.0
    assert dataset.shape == (3, 48, 32) if name == "rotated.jpg" else (3, 32, 48)
    for seen in (dataset, predicted, from_path, from_pil):
        torch.testing.assert_close(seen, expected, rtol=0, atol=0)


def test_the_documented_rule(tmp_path: Path) -> None:
    files = _files(tmp_path)
    with Image.open(files["gray16.png"]) as img:
        raw16 = np.asarray(img).astype(np.int64)
    with Image.open(files["rgba.png"]) as img:
        rgba = np.asarray(img)

    gray = load_image(files["gray16.png"])
    assert (gray[:, :, 0] == gray[:, :, 2]).all()
    np.testing.assert_array_equal(gray[:, :, 1], (raw16 * 255 + 32767) // 65535)  # scaled with rounding
    np.testing.assert_array_equal(load_image(files["rgba.png"]), rgba[:, :, :3])  # alpha dropped, not composited
    assert load_image(files["rotated.jpg"]).shape == (48, 32, 3)  # EXIF orientation applied


def test_arrays_follow_the_same_rule_as_files(tiny_model, tmp_path: Path) -> None:
    files = _files(tmp_path)
    with Image.open(files["gray16.png"]) as img:
        gray16 = np.asarray(img)  # uint16 H×W
    with Image.open(files["rgba.png"]) as img:
        rgba = np.asarray(img)  # uint8 H×W×4

    np.testing.assert_array_equal(tiny_model.infer(gray16), tiny_model.infer(files["gray16.png"]))
    np.testing.assert_array_equal(tiny_model.infer(rgba), tiny_model.infer(str(files["rgba.png"])))
