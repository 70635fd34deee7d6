"""The web app's computations (no server): depth, downloads, point cloud, EXIF camera, limits, bad files."""

from __future__ import annotations

import math
import socket
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

gradio = pytest.importorskip("gradio", reason="the web app needs the app extra: pip install 'clip2depth[app]'")

from clip2depth.app.predict import (  # noqa: E402
    DEPTH_SCALE,
    VIEW_POINTS,
    default_model_source,
    depth_at,
    describe_model,
    load_upload,
    predict_image,
    predict_video,
)
from clip2depth.app.ui import _page_errors, build_app, example_images  # noqa: E402
from clip2depth.errors import ConfigError, DataError  # noqa: E402
from clip2depth.inference.camera import CameraSpec, image_camera  # noqa: E402
from clip2depth.inference.pointcloud import Intrinsics, backproject  # noqa: E402
from clip2depth.io.depth import load_depth_png16  # noqa: E402
from clip2depth.models.factory import create_model  # noqa: E402
from clip2depth.models.infer import predict_depth  # noqa: E402
from clirun import assert_user_error, run_cli  # noqa: E402
from plyread import load_ply  # noqa: E402


@pytest.fixture(scope="module")
def model(model_dir):
    return create_model(str(model_dir))


def _photo(path, size=(70, 50), exif=None):
    """A smooth colour gradient of ``size`` = (W, H), saved at ``path`` (JPEG/PNG by suffix)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], axis=2).astype(np.uint8)
    image = Image.fromarray(rgb)
    if exif is not None:
        image.save(path, exif=exif)
    else:
        image.save(path)
    return path


def _exif(focal_35mm=None, orientation=None):
    exif = Image.Exif()
    if focal_35mm is not None:
        exif.get_ifd(0x8769)[0xA405] = focal_35mm
    if orientation is not None:
        exif[0x0112] = orientation
    return exif


def test_predict_image_outputs_match_depth_at_input_size(model, tmp_path):
    path = _photo(tmp_path / "photo.png", size=(70, 50))
    result = predict_image(model, path, tmp_path / "out", fov_deg=70.0)

    assert result.depth.shape == (50, 70) and result.depth.dtype == np.float32
    assert np.all(result.depth > 0) and np.all(result.depth <= model.max_depth)
    assert result.colour.shape[0] == 50 and result.colour.shape[1] > 70  # colour bar on the right
    assert result.colour.dtype == np.uint8
    assert (result.min_m, result.max_m) == pytest.approx((result.depth.min(), result.depth.max()))
    assert f"{result.min_m:.2f} m" in result.readout() and "70°" in result.readout()

    with Image.open(result.png16) as png:
        assert png.size == (70, 50) and png.mode.startswith("I;16")
    np.testing.assert_allclose(load_depth_png16(result.png16, DEPTH_SCALE), result.depth, atol=0.5 / DEPTH_SCALE)
    np.testing.assert_array_equal(np.load(result.npy), result.depth)

    points, colours = load_ply(result.ply)
    expected = backproject(result.depth, Intrinsics.from_fov(70.0, 70, 50))
    np.testing.assert_allclose(points, expected, rtol=1e-6)
    assert colours.shape == points.shape
    view, _ = load_ply(result.view)
    np.testing.assert_allclose(view, expected * np.array([1, -1, -1]), rtol=1e-6)  # y up, z towards the viewer


def test_predict_image_is_the_shared_prediction(model, tmp_path):
    """Depth equals the one resize-predict-resize at the same max side (here a downscaled prediction)."""
    path = _photo(tmp_path / "big.png", size=(160, 96))
    result = predict_image(model, path, tmp_path / "out", max_side=64)
    rgb = np.array(Image.open(path).convert("RGB"))
    images = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    expected = predict_depth(model, images, max_side=64)[0, 0].numpy()
    assert result.depth.shape == (96, 160)
    np.testing.assert_allclose(result.depth, expected, rtol=1e-5)


def test_predict_image_reduced_precision_runs_and_stays_close(model, tmp_path):
    path = _photo(tmp_path / "photo.png")
    exact = predict_image(model, path, tmp_path / "a").depth
    half = predict_image(model, path, tmp_path / "b", precision="bf16").depth
    assert half.dtype == np.float32 and half.shape == exact.shape
    assert np.abs(half - exact).max() < 0.1 * model.max_depth
    with pytest.raises(ConfigError, match="precision"):
        predict_image(model, path, tmp_path / "c", precision="int8")


def test_view_point_cloud_is_capped(model, tmp_path, monkeypatch):
    monkeypatch.setattr("clip2depth.app.predict.VIEW_POINTS", 100)
    result = predict_image(model, _photo(tmp_path / "p.png"), tmp_path / "out")
    view, colours = load_ply(result.view)
    assert len(view) == 100 and len(colours) == 100
    assert len(load_ply(result.ply)[0]) == 70 * 50  # the download keeps every point
    assert VIEW_POINTS > 70 * 50


def test_exif_focal_length_sets_the_point_cloud_camera(model, tmp_path):
    path = _photo(tmp_path / "phone.jpg", size=(80, 60), exif=_exif(focal_35mm=26))
    across = math.hypot(36, 24) * 80 / math.hypot(80, 60)
    expected = math.degrees(2 * math.atan(across / (2 * 26)))
    result = predict_image(model, path, tmp_path / "out", fov_deg=40.0)
    assert result.fov_from_exif and result.fov_deg == pytest.approx(expected)
    assert "EXIF" in result.readout()
    predicts = image_camera(path, 80, 60, CameraSpec())  # clip2depth predict's camera for the same photo
    np.testing.assert_allclose(load_ply(result.ply)[0], backproject(result.depth, predicts.intrinsics), rtol=1e-6)
    ignored = predict_image(model, path, tmp_path / "out2", fov_deg=40.0, use_exif=False)
    assert not ignored.fov_from_exif and ignored.fov_deg == 40.0


def test_exif_fov_follows_the_upright_image(tmp_path):
    landscape = _photo(tmp_path / "a.jpg", size=(80, 60), exif=_exif(focal_35mm=26))
    sideways = _photo(tmp_path / "b.jpg", size=(80, 60), exif=_exif(focal_35mm=26, orientation=6))
    assert load_upload(sideways).shape[:2] == (80, 60)  # shown rotated: 60 wide, 80 high
    wide, narrow = image_camera(landscape, 80, 60, CameraSpec()), image_camera(sideways, 60, 80, CameraSpec())
    assert wide.from_exif and narrow.from_exif
    assert narrow.fov_deg < wide.fov_deg  # a portrait photo sees less across its width
    assert narrow.intrinsics.fx == wide.intrinsics.fx  # the 35 mm rule depends on the diagonal only
    assert not image_camera(_photo(tmp_path / "none.jpg"), 80, 60, CameraSpec()).from_exif


def test_bad_uploads_give_messages(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="not an image file"):
        load_upload(text)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match="fake.jpg"):
        load_upload(fake)
    truncated = tmp_path / "cut.png"
    whole = _photo(tmp_path / "whole.png").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cut.png"):
        load_upload(truncated)


def test_pixel_limit_refuses_before_decoding(tmp_path):
    """A 60000×60000 PNG header on a few bytes of data (a decompression bomb) is refused from its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    bomb.write_bytes(header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(DataError, match="bomb.png"):
        load_upload(bomb)
    small = _photo(tmp_path / "p.png", size=(70, 50))
    with pytest.raises(DataError, match="megapixels"):
        load_upload(small, max_pixels=1000)
    assert load_upload(small, max_pixels=3500).shape == (50, 70, 3)


def test_depth_at_reads_metres_and_knows_the_colour_bar():
    depth = np.array([[1.5, 2.25], [0.0, np.nan]], dtype=np.float32)
    assert "2.250 m" in depth_at(depth, 1, 0)
    assert "(1, 0)" in depth_at(depth, 1, 0)
    assert "colour bar" in depth_at(depth, 2, 0)
    assert "No valid depth" in depth_at(depth, 0, 1) and "No valid depth" in depth_at(depth, 1, 1)


def test_model_panel_and_banners(model, model_dir):
    trained = describe_model(model, str(model_dir))
    assert trained.trained and trained.preset == "tiny" and trained.clip_weights is None
    assert trained.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert "random CLIP weights" in trained.banner
    assert "10 m" in trained.markdown() and f"{trained.trainable_parameters:,}" in trained.markdown()
    assert trained.processing_size == tuple(model.config.train_size)
    assert "| processing size | the pixel count of {}×{} (H×W), aspect kept |".format(
        *model.config.train_size) in trained.markdown()
    preset = describe_model(create_model("tiny"), "tiny")
    assert not preset.trained and "untrained" in preset.banner and "means nothing" in preset.banner


def test_default_model_is_the_flag_then_the_demo(tmp_path, model):
    assert default_model_source("runs/x", cwd=tmp_path) == "runs/x"
    assert default_model_source(None, cwd=tmp_path) is None
    model.save_pretrained(str(tmp_path / "demo_out" / "best"))
    assert default_model_source(None, cwd=tmp_path) == str(tmp_path / "demo_out" / "best")


def test_page_without_a_model_says_how_to_get_one():
    demo = build_app(None, None)
    texts = [getattr(block, "value", "") or "" for block in demo.blocks.values()]
    assert any("make demo" in str(text) and "--model" in str(text) for text in texts)


def test_banner_is_shown_for_random_weights(model, model_dir):
    demo = build_app(model, describe_model(model, str(model_dir)))
    banners = [str(block.value) for block in demo.blocks.values() if isinstance(block, gradio.HTML)]
    assert len(banners) == 1 and "model-banner" in banners[0] and "random CLIP weights" in banners[0]


def test_examples_ship_with_the_package():
    paths = example_images()
    assert len(paths) >= 2
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "JPEG" and max(image.size) <= 640


def test_predict_video_writes_a_colour_depth_video(model, tmp_path):
    av = pytest.importorskip("av")
    del av
    from clip2depth.io.video import VideoWriter, video_info

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=10, size=(64, 48)) as writer:
        for i in range(4):
            writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))
    out = predict_video(model, clip, tmp_path / "out", max_side=64, precision="bf16")
    info = video_info(out)
    assert out.name == "clip_depth.mp4" and info.height == 48 and info.width > 64  # colour bar added
    with pytest.raises(DataError, match="not a video file"):
        predict_video(model, _photo(tmp_path / "p.png"), tmp_path / "out2", max_side=64)
    with pytest.raises(DataError, match="clip.mp4 has 4 frames, more than the 3"):
        predict_video(model, clip, tmp_path / "out3", max_side=64, max_frames=3)
    with pytest.raises(DataError, match="64×48 frames, more than"):
        predict_video(model, clip, tmp_path / "out4", max_side=64, max_pixels=1000)
    assert not (tmp_path / "out3").exists() and not (tmp_path / "out4").exists()


def test_cli_app_listens_on_this_machine_only_by_default():
    from clip2depth.cli.main import build_parser

    args = build_parser()[0].parse_args(["app"])
    assert (args.host, args.port, args.share, args.model) == ("127.0.0.1", 7860, False, None)


def test_cli_app_refuses_bad_flags_before_serving(tmp_path):
    assert_user_error(run_cli("app", "--port", "70000"), "--port", "'70000' is not a TCP port")
    assert_user_error(run_cli("app", "--model", "tiny", "--max-upload-mb", "0"), "--max-upload-mb")
    assert_user_error(run_cli("app", "--model", str(tmp_path / "no_such_model")), "no_such_model")


def test_cli_app_port_in_use_is_a_user_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_user_error(run_cli("app", "--model", "tiny", "--port", port), f"127.0.0.1:{port}", "--port")


@pytest.mark.parametrize("failure", [
    MemoryError("Unable to allocate 3.00 GiB"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 3221225472 bytes"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB"),
])
def test_running_out_of_memory_is_a_message_on_the_page(failure):
    def predict(*args):
        raise failure

    with pytest.raises(gradio.Error, match="out of memory .*lower the max side"):
        _page_errors(predict)()


def test_other_errors_on_the_page_keep_their_traceback():
    def predict(*args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        _page_errors(predict)()
