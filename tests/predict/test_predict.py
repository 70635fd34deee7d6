"""``clip2depth predict`` and :func:`clip2depth.inference.run.predict_paths` on the files users actually have."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip2depth
from clip2depth.errors import ConfigError
from clip2depth.inference.camera import CameraSpec
from clip2depth.inference.outputs import OutputOptions, parse_formats
from clip2depth.inference.pointcloud import Intrinsics, valid_mask
from clip2depth.inference.run import PredictOptions, predict_paths
from clip2depth.io.depth import load_depth_png16
from clip2depth.io.images import load_image
from clirun import CliResult, assert_user_error
from clirun import run_cli as run_command
from plyread import load_ply


def run_cli(*argv: object) -> CliResult:
    """``clip2depth -q predict ...`` through the real CLI entry point."""
    return run_command("-q", "predict", *argv)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("model")
    clip2depth.create_model("tiny").save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def model(model_dir: Path) -> clip2depth.Clip2Depth:
    """The model the command loads from ``--model DIR``."""
    return clip2depth.create_model(model_dir)


def _pattern(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as users have them: good images in odd modes, and files that are not images."""
    root = tmp_path_factory.mktemp("photos")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 48 wide × 32 high, shown rotated 90° clockwise: 32 wide × 48 high
    Image.fromarray(_pattern(32, 48, 1)).save(root / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(_pattern(32, 32, 2)[:, :, 0], mode="L").save(root / "gray.png")
    rgba = np.dstack([_pattern(32, 32, 3), np.full((32, 32), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "alpha.png")
    (root / "sub").mkdir()
    deep = (np.linspace(0, 65535, 24 * 40).reshape(24, 40)).astype(np.uint16)
    Image.fromarray(deep).save(root / "sub" / "deep16.png")
    return root


# Output stem and (H, W) of every good image in `photos`, as displayed.
EXPECTED = {"rotated": (48, 32), "gray": (32, 32), "alpha": (32, 32), "sub__deep16": (24, 40)}


@pytest.fixture(scope="module")
def folder_run(model_dir: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[CliResult, Path]:
    out = tmp_path_factory.mktemp("out")
    result = run_cli(str(photos), "--model", str(model_dir), "--out", str(out),
                     "--format", "png16,npy,color,ply", "--batch-size", "2", "--device", "cpu")  # fmt: skip
    return result, out


def test_folder_gives_every_image_its_outputs_at_display_size(folder_run: tuple[CliResult, Path]) -> None:
    result, out = folder_run

    assert result.code == 0, result.err
    assert "4 of 5 inputs done, 1 failed; 20 files written" in result.out
    assert "1 failed:" in result.err and "broken.jpg: cannot read as an image" in result.err
    assert "notes.txt" not in result.err  # folders are searched for image and video names only
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{suffix}" for stem in EXPECTED for suffix in (".png", ".npy", "_color.png", ".ply", "_camera.json")
    )
    for stem, (height, width) in EXPECTED.items():
        assert np.load(out / f"{stem}.npy").shape == (height, width)
        assert load_depth_png16(out / f"{stem}.png", 1000.0).shape == (height, width)
        with Image.open(out / f"{stem}_color.png") as colour:
            assert (colour.mode, colour.size) == ("RGB", (width, height))


def test_png16_matches_model_infer_within_a_millimetre(
    folder_run: tuple[CliResult, Path], photos: Path, model: clip2depth.Clip2Depth
) -> None:
    _, out = folder_run
    expected = model.infer(load_image(photos / "rotated.jpg"))

    png = load_depth_png16(out / "rotated.png", 1000.0)

    assert png.shape == expected.shape == (48, 32)
    assert np.abs(png - expected).max() <= 0.0005 + 1e-6
    assert np.allclose(np.load(out / "rotated.npy"), expected, atol=1e-4)


def test_ply_holds_one_coloured_point_per_valid_pixel(folder_run: tuple[CliResult, Path], photos: Path) -> None:
    _, out = folder_run
    depth = np.load(out / "rotated.npy")
    rgb = load_image(photos / "rotated.jpg")
    points, colours = load_ply(out / "rotated.ply")
    valid = valid_mask(depth)
    v, u = 30, 5
    index = int(np.count_nonzero(valid.ravel()[: v * depth.shape[1] + u]))  # points are valid pixels, row-major
    k = Intrinsics.default_for(32, 48)

    assert len(points) == int(valid.sum()) > 0
    assert points[index, 2] == pytest.approx(depth[v, u], rel=1e-6)
    assert points[index, 0] == pytest.approx((u - k.cx) * depth[v, u] / k.fx, rel=1e-5)
    assert points[index, 1] == pytest.approx((v - k.cy) * depth[v, u] / k.fy, rel=1e-5)
    assert colours is not None and tuple(colours[index]) == tuple(rgb[v, u])


def test_all_bad_inputs_exit_non_zero(model_dir: Path, photos: Path, tmp_path: Path) -> None:
    result = run_cli(str(photos / "broken.jpg"), str(photos / "notes.txt"), "--model", str(model_dir),
                     "--out", str(tmp_path), "--device", "cpu")  # fmt: skip

    assert_user_error(result, "none of the 2 inputs could be predicted")
    assert "0 of 2 inputs done, 2 failed" in result.out
    assert "broken.jpg: cannot read" in result.err and "notes.txt: cannot read" in result.err
    assert list(tmp_path.iterdir()) == []


def test_no_matching_input_is_one_error_before_loading_the_model(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "missing.jpg"), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path))

    assert_user_error(result, "no input matched", "missing.jpg: no such file or folder")


def test_unknown_format_is_one_clear_error(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path), "--model", "tiny", "--format", "png16,jpg")

    assert assert_user_error(result, "png16, npy, color, ply").startswith("error: unknown output format 'jpg'")


def test_video_gives_a_depth_video_with_every_frame(model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("av", reason="PyAV not installed (pip install av)")
    from clip2depth.io.video import VideoWriter, iter_video_frames

    source = tmp_path / "clip.mp4"
    with VideoWriter(source, fps=10.0, size=(48, 32)) as writer:
        for i in range(5):
            writer.write(_pattern(32, 48, 10 + i))
    out = tmp_path / "out"

    result = run_cli(str(source), "--model", str(model_dir), "--out", str(out), "--format", "color,npy",
                     "--save-frames", "--colorbar", "--batch-size", "2", "--device", "cpu")  # fmt: skip

    assert result.code == 0, result.err
    frames = list(iter_video_frames(out / "clip_depth.mp4"))
    assert len(frames) == 5 and frames[0].shape[0] == 32 and frames[0].shape[1] > 48  # the colour bar
    assert sorted(p.name for p in (out / "clip_frames").iterdir()) == [f"{i:06d}.npy" for i in range(5)]
    assert np.load(out / "clip_frames" / "000004.npy").shape == (32, 48)


def test_max_side_downscales_large_images_and_logs_the_network_size(
    model: clip2depth.Clip2Depth, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Image.fromarray(_pattern(48, 80, 4)).save(tmp_path / "big.png")
    caplog.set_level(logging.DEBUG, logger="clip2depth.inference.steps")

    report = predict_paths(model, [tmp_path / "big.png"], out_dir=tmp_path / "out", progress=False,
                           outputs=OutputOptions(formats=("npy",)), options=PredictOptions(max_side=32))  # fmt: skip

    assert report.exit_code == 0 and report.outputs == [tmp_path / "out" / "big.npy"]
    depth = np.load(report.outputs[0])
    assert depth.shape == (48, 80)
    np.testing.assert_allclose(depth, model.infer(tmp_path / "big.png", max_side=32), rtol=1e-5)
    assert "big.png: 80×48 predicted at 32×16, depth at full size" in caplog.text


def test_outputs_never_overwrite_inputs_nor_become_inputs(model: clip2depth.Clip2Depth, tmp_path: Path) -> None:
    Image.fromarray(_pattern(16, 16, 5)).save(tmp_path / "a.png")
    Image.fromarray(_pattern(16, 16, 6)).save(tmp_path / "b.jpg")
    outputs = OutputOptions(formats=("png16",))

    beside = predict_paths(model, [tmp_path / "a.png", tmp_path / "b.jpg"], out_dir=tmp_path, outputs=outputs,
                           progress=False)  # fmt: skip
    first = predict_paths(model, [tmp_path], out_dir=tmp_path / "depth", outputs=outputs, progress=False)
    again = predict_paths(model, [tmp_path], out_dir=tmp_path / "depth", outputs=outputs, progress=False)

    assert beside.succeeded == [tmp_path / "b.jpg"]
    assert beside.failed == [(str(tmp_path / "a.png"), f"its output {tmp_path / 'a.png'} would overwrite an input "
                                                        "file; choose another output folder")]  # fmt: skip
    # b.png (written by the first call) and b.jpg share the output name b: the first found keeps it
    assert first.succeeded == again.succeeded == [tmp_path / "a.png", tmp_path / "b.jpg"]
    assert again.matched == 3 and len(again.failed) == 1  # the outputs in depth/ are not inputs
    assert again.failed[0][0] == str(tmp_path / "b.png")
    assert f"also be that of {tmp_path / 'b.jpg'}" in again.failed[0][1]


def test_camera_spec_rules() -> None:
    assert CameraSpec().intrinsics(64, 48) == Intrinsics.default_for(64, 48)
    assert CameraSpec(fx=50).intrinsics(64, 48) == Intrinsics(50, 50, 31.5, 23.5)
    assert CameraSpec(fy=40, cx=10).intrinsics(64, 48) == Intrinsics(40, 40, 10, 23.5)
    assert CameraSpec(fov_deg=90).intrinsics(64, 48).fx == pytest.approx(32.0)
    exif = CameraSpec(cx=10).resolve(48, 32, focal_35mm=26.0)  # no focal length given: EXIF's applies
    k = exif.intrinsics
    assert (k.fx, k.cx, k.cy) == (pytest.approx(26 * 48 / 36), 10, 15.5) and "EXIF" in exif.source and exif.from_exif
    assert exif.fov_deg == pytest.approx(2 * np.degrees(np.arctan(36 / (2 * 26))))  # 3:2 frame: 36 mm across
    assert CameraSpec(fov_deg=90).intrinsics(64, 48, focal_35mm=26.0).fx == pytest.approx(32.0)
    unknown = CameraSpec(default_fov_deg=90).resolve(64, 48)  # no focal length, no EXIF: the default FOV
    assert unknown.intrinsics.fx == pytest.approx(32.0) and not unknown.from_exif
    with pytest.raises(ConfigError, match=r"fov_deg=60 and fx=50 both set the focal length") as both:
        CameraSpec(fx=50, fov_deg=60)
    assert both.value.params == ("fov_deg", "fx")
    with pytest.raises(ConfigError, match=r"^fx=-1 is not a focal length"):
        CameraSpec(fx=-1)


def test_format_and_option_checks() -> None:
    assert parse_formats(" PLY, png16,ply ") == ("ply", "png16")
    assert OutputOptions(formats="npy").formats == ("npy",)
    with pytest.raises(ConfigError, match="valid formats: png16, npy, color, ply"):
        parse_formats(",")
    with pytest.raises(ConfigError, match="colour map"):
        OutputOptions(cmap="no-such-map")
    # library errors name the parameter, as the caller wrote it; the CLI shows its flag instead
    with pytest.raises(ConfigError, match=r"^depth_scale=0 is not a scale") as scale:
        OutputOptions(depth_scale=0)
    assert scale.value.params == ("depth_scale",)
    with pytest.raises(ConfigError, match=r"^vmin=3 must be smaller than vmax=2"):
        OutputOptions(vmin=3, vmax=2)
    with pytest.raises(ConfigError, match=r"^batch_size=0 must be at least 1"):
        PredictOptions(batch_size=0)
    with pytest.raises(ConfigError, match=r"^max_side=0 must be a positive whole number of pixels"):
        PredictOptions(max_side=0)


def test_skip_existing_continues_an_interrupted_run(model_dir: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = (str(photos), "--model", str(model_dir), "--out", str(out), "--format", "png16,npy", "--device", "cpu")
    first = run_cli(*args)
    (out / "gray.npy").unlink()  # as if the run had been interrupted before gray's .npy
    kept = (out / "alpha.png").stat().st_mtime_ns

    again = run_cli(*args, "--skip-existing")

    assert first.code == again.code == 0, again.err
    assert "4 of 5 inputs done, 1 failed; 8 files written" in first.out
    assert "4 of 5 inputs done (3 already done, skipped), 1 failed; 2 files written" in again.out
    assert (out / "gray.npy").is_file() and (out / "alpha.png").stat().st_mtime_ns == kept


def test_a_rerun_with_nothing_left_to_do_loads_no_model(model_dir: Path, photos: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    args = (str(photos / "gray.png"), "--model", str(model_dir), "--out", str(out), "--format", "npy")
    assert run_cli(*args).code == 0
    written = (out / "gray.npy").read_bytes()

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded although every input was skipped")

    monkeypatch.setattr("clip2depth.models.factory.create_model", no_model)
    again = run_cli(*args, "--skip-existing")
    assert again.code == 0, again.err
    assert "1 of 1 inputs done (1 already done, skipped); 0 files written" in again.out
    assert (out / "gray.npy").read_bytes() == written
    typo = run_cli(args[0], "--model", str(tmp_path / "no-such-model"), *args[3:], "--skip-existing")
    assert_user_error(typo, "no-such-model")  # the name is still checked


def test_png16_states_its_scale_and_colours_follow_vmin_vmax(
    model: clip2depth.Clip2Depth, photos: Path, tmp_path: Path
) -> None:
    outputs = OutputOptions(formats=("png16", "color"), depth_scale=256.0, vmin=0.0, vmax=1000.0)

    report = predict_paths(model, [photos / "gray.png"], out_dir=tmp_path, outputs=outputs, progress=False)

    assert report.exit_code == 0
    with Image.open(tmp_path / "gray.png") as png:
        assert png.text["depth_scale"] == "256"
        metres = np.asarray(png, dtype=np.float64) / float(png.text["depth_scale"])
    assert np.abs(metres - model.infer(photos / "gray.png")).max() <= 0.5 / 256 + 1e-6
    # every depth (≤ 10 m) is within 1% of the near end of a 0…1000 m scale: one colour, turbo's warm end
    colour = np.asarray(Image.open(tmp_path / "gray_color.png"))
    assert (np.abs(colour.astype(int) - colour[0, 0]).max() <= 12) and colour[0, 0, 0] > colour[0, 0, 2]


def test_point_cloud_takes_the_exif_focal_length_and_writes_its_camera(
    model: clip2depth.Clip2Depth, tmp_path: Path
) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26  # FocalLengthIn35mmFilm, a phone's main camera
    Image.fromarray(_pattern(32, 48, 7)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(_pattern(32, 48, 8)).save(tmp_path / "plain.jpg", quality=95)
    out = tmp_path / "out"

    report = predict_paths(model, [tmp_path / "phone.jpg", tmp_path / "plain.jpg"], out_dir=out, progress=False,
                           outputs=OutputOptions(formats=("ply",)))  # fmt: skip
    given = predict_paths(model, [tmp_path / "phone.jpg"], out_dir=tmp_path / "given", progress=False,
                          outputs=OutputOptions(formats=("ply",), camera=CameraSpec(fx=40.0)))  # fmt: skip

    assert report.exit_code == given.exit_code == 0
    phone = json.loads((out / "phone_camera.json").read_text())
    plain = json.loads((out / "plain_camera.json").read_text())
    assert phone["fx"] == phone["fy"] == pytest.approx(26 * 48 / 36)  # 3:2 image: f_px = f_35mm × W / 36 mm
    assert "EXIF 35 mm equivalent focal length 26 mm" in phone["source"]
    assert (phone["cx"], phone["cy"], phone["width"], phone["height"]) == (23.5, 15.5, 48, 32)
    assert plain["fx"] == pytest.approx(Intrinsics.default_for(48, 32).fx) and "default 60" in plain["source"]
    assert json.loads((tmp_path / "given" / "phone_camera.json").read_text())["fx"] == 40.0
    depth = model.infer(tmp_path / "phone.jpg")
    points, _ = load_ply(out / "phone.ply")
    v, u = np.nonzero(valid_mask(depth))
    np.testing.assert_allclose(points[:, 0], (u - 23.5) * depth[v, u] / phone["fx"], rtol=1e-4, atol=1e-5)


def test_reduced_precision_stays_close_to_fp32(model: clip2depth.Clip2Depth, photos: Path, tmp_path: Path) -> None:
    report = predict_paths(model, [photos / "alpha.png"], out_dir=tmp_path, outputs=OutputOptions(formats=("npy",)),
                           options=PredictOptions(precision="bf16"), progress=False)  # fmt: skip

    fp32 = model.infer(photos / "alpha.png")
    bf16 = np.load(tmp_path / "alpha.npy")
    assert report.exit_code == 0 and bf16.dtype == np.float32
    assert not np.array_equal(bf16, fp32)  # autocast really ran
    assert np.mean(np.abs(bf16 - fp32) / fp32) < 0.005  # measured ~2e-4 on random weights
    np.testing.assert_array_equal(model.infer(photos / "alpha.png", precision="bf16"), bf16)
