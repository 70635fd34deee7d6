"""Image loading, input discovery, output naming, depth files and colourisation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip2depth.errors import DataError
from clip2depth.io.atomic import atomic_path
from clip2depth.io.colour import colorize_depth
from clip2depth.io.depth import SCALE_KEY, load_depth_png16, read_depth_file, save_depth_npy, save_depth_png16
from clip2depth.io.images import focal_pixels_from_35mm, load_image, to_rgb_uint8
from clip2depth.io.inputs import expand_inputs, find_files, output_stem
from imagefiles import png16_rgb

RED, BLUE = (255, 0, 0), (0, 0, 255)


# --------------------------------------------------------------------------------------------- images


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 4 wide × 2 high, red left column; orientation 6 = "rotate 90° clockwise to display".
    stored = np.zeros((2, 4, 3), np.uint8)
    stored[:, 0] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).resize((40, 20), Image.NEAREST).save(path, exif=exif, quality=95)

    image = load_image(path)

    assert image.shape == (40, 20, 3) and image.dtype == np.uint8
    assert np.abs(image[:8].astype(int) - RED).max() < 40  # the red column is now the top rows
    assert image[12:].max() < 40


def test_modes_come_back_as_rgb_uint8(tmp_path: Path) -> None:
    gray = np.array([[0, 128], [200, 255]], np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png"), np.repeat(gray[:, :, None], 3, axis=2))

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = [10, 20, 30]
    rgba[0, 0, 3] = 0  # alpha is dropped: the stored colour stays
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert (load_image(tmp_path / "rgba.png") == [10, 20, 30]).all()

    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([*RED, *BLUE] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(load_image(tmp_path / "palette.png"), [[RED, BLUE]])

    Image.new("CMYK", (3, 2), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert np.abs(load_image(tmp_path / "cmyk.jpg").astype(int) - RED).max() < 10


def test_16bit_pngs_are_scaled_not_clipped(tmp_path: Path) -> None:
    gray16 = np.array([[0, 257 * 100], [65535, 300]], np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    np.testing.assert_array_equal(load_image(tmp_path / "gray16.png")[..., 0], [[0, 100], [255, 1]])

    rgb16 = np.array([[[65535, 257 * 128, 0]]], np.uint16)
    (tmp_path / "rgb16.png").write_bytes(png16_rgb(rgb16))
    assert np.abs(load_image(tmp_path / "rgb16.png")[0, 0].astype(int) - [255, 128, 0]).max() <= 1


def test_arrays_are_normalised_like_images() -> None:
    assert to_rgb_uint8(np.array([[0.0, 0.5, 2.0, np.nan]])).tolist() == [[[v] * 3 for v in (0, 128, 255, 0)]]
    assert to_rgb_uint8(np.full((2, 2, 4), 7, np.uint8)).shape == (2, 2, 3)
    with pytest.raises(DataError, match="channels last"):
        to_rgb_uint8(np.zeros((3, 8, 8, 2), np.uint8))


def test_unreadable_files_raise_data_error_naming_them(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    Image.new("RGB", (64, 64), RED).save(tmp_path / "ok.png")
    corrupt.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    for path in (corrupt, text, tmp_path / "missing.png", tmp_path):
        with pytest.raises(DataError, match=str(path.name)):
            load_image(path)


# --------------------------------------------------------------------------------------------- inputs


def test_expand_inputs_folders_globs_and_problems(tmp_path: Path) -> None:
    for rel in ("a/img.jpg", "b/img.jpg", "b/c/clip.MP4", "b/notes.txt", "b/.hidden.png", "top.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"whatever")  # listed by name; reading reports corrupt ones

    paths, problems = expand_inputs(
        [
            str(tmp_path / "b"),
            str(tmp_path / "*.png"),
            str(tmp_path / "b/img.jpg"),
            str(tmp_path / "nope"),
            str(tmp_path / "*.gif"),
        ]
    )

    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["b/c/clip.MP4", "b/img.jpg", "top.png"]
    assert [reason for _, reason in problems] == ["no such file or folder", "pattern matches no image or video files"]


def test_output_names_depend_only_on_the_input_they_were_found_through(tmp_path: Path) -> None:
    for rel in ("shots/a/img.jpg", "shots/b/img.jpg", "shots/b/x.png", "other/y.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"whatever")
    shots, pattern = str(tmp_path / "shots"), str(tmp_path / "shots" / "**" / "*.jpg")

    def names(*inputs: str) -> dict[str, str]:
        files, _ = find_files(inputs)
        return {f.path.relative_to(tmp_path).as_posix(): f.name for f in files}

    alone = names(shots)
    assert alone == {"shots/a/img.jpg": "a__img", "shots/b/img.jpg": "b__img", "shots/b/x.png": "b__x"}
    assert names(shots, str(tmp_path / "other")) == {**alone, "other/y.png": "y"}
    assert names(pattern) == {"shots/a/img.jpg": "a__img", "shots/b/img.jpg": "b__img"}
    assert names(str(tmp_path / "shots/b/img.jpg")) == {"shots/b/img.jpg": "img"}
    assert output_stem(tmp_path / "img.v2.jpg") == "img.v2"


def test_symlink_loops_visit_each_real_file_once(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.png").write_bytes(b"x")
    (tmp_path / "d" / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "d" / "sub" / "up").symlink_to(tmp_path / "d")  # a loop: d/sub/up/sub/up/...
    (tmp_path / "d" / "self").symlink_to(".")
    (tmp_path / "d" / "again.png").symlink_to(tmp_path / "d" / "a.png")

    by_folder, problems = expand_inputs([str(tmp_path / "d")])
    by_glob, _ = expand_inputs([str(tmp_path / "d" / "**" / "*.png")])

    assert problems == []
    assert [p.relative_to(tmp_path).as_posix() for p in by_folder] == ["d/a.png", "d/sub/b.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in by_glob] == ["d/a.png", "d/sub/b.png"]


# --------------------------------------------------------------------------------------------- writes


def test_atomic_path_leaves_target_untouched_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_depth_png16_round_trip_and_invalid(tmp_path: Path) -> None:
    depth = np.random.default_rng(0).uniform(0.1, 60.0, (5, 7))
    depth[0, 0], depth[0, 1], depth[0, 2] = np.nan, np.inf, -1.0
    save_depth_png16(depth, tmp_path / "d.png")

    back = load_depth_png16(tmp_path / "d.png", 1000.0)

    assert back.dtype == np.float32 and back.shape == depth.shape
    assert (back[0, :3] == 0).all()
    assert np.abs(back[1:] - depth[1:]).max() <= 0.001


def test_depth_png16_states_its_scale_and_the_reader_uses_it(tmp_path: Path) -> None:
    save_depth_png16(np.array([[2.0, 0.5]]), tmp_path / "kitti.png", scale=256.0)
    Image.fromarray(np.array([[2000, 500]], np.uint16)).save(tmp_path / "nyu.png")  # no chunk, like NYU's

    with Image.open(tmp_path / "kitti.png") as img:
        assert img.text[SCALE_KEY] == "256"
    np.testing.assert_allclose(load_depth_png16(tmp_path / "kitti.png", 1000.0), [[2.0, 0.5]])
    np.testing.assert_allclose(read_depth_file(tmp_path / "nyu.png", 1000.0), [[2.0, 0.5]])
    with pytest.raises(DataError, match="does not state its depth scale"):
        load_depth_png16(tmp_path / "nyu.png")
    Image.fromarray(np.array([[20, 5]], np.uint8)).save(tmp_path / "vis.png")
    with pytest.raises(DataError, match="not as a visualisation"):
        read_depth_file(tmp_path / "vis.png", 1000.0)


def test_depth_npy_keeps_float32_metres(tmp_path: Path) -> None:
    depth = np.array([[0.25, np.nan], [3.5, 80.0]])
    save_depth_npy(depth, tmp_path / "d.npy")
    back = np.load(tmp_path / "d.npy")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, depth.astype(np.float32))


def test_depth_png16_warns_when_clipping(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="clip2depth.io"):
        save_depth_png16(np.array([[1.0, 300.0]]), tmp_path / "far.png", scale=256.0)
    assert "clipped" in caplog.text
    np.testing.assert_allclose(load_depth_png16(tmp_path / "far.png", 256.0), [[1.0, 65535 / 256]])


def test_colorize_depth_shapes_and_near_is_warm() -> None:
    depth = np.tile(np.linspace(1.0, 10.0, 16), (12, 1))
    depth[0, 0] = np.nan

    plain = colorize_depth(depth)
    with_bar = colorize_depth(depth, colorbar=True, vmin=0.5, vmax=12.0)

    assert plain.shape == (12, 16, 3) and plain.dtype == np.uint8
    assert with_bar.shape[0] == 12 and with_bar.shape[1] > 16
    assert (plain[0, 0] == 0).all()
    near, far = plain[6, 0].astype(int), plain[6, -1].astype(int)
    assert near[0] > near[2] and far[2] > far[0]


def test_35mm_focal_length_gives_the_full_frames_diagonal_field_of_view():
    assert focal_pixels_from_35mm(26.0, 48, 32) == pytest.approx(26 * 48 / 36)  # 3:2, like the frame: W / 36 mm
    # a 4:3 phone photo: diagonal 5040 px against the frame's 43.27 mm (the 3:2 width rule would give 2912 px)
    assert focal_pixels_from_35mm(26.0, 4032, 3024) == pytest.approx(26 * 5040 / math.hypot(36, 24))
    assert focal_pixels_from_35mm(26.0, 3024, 4032) == pytest.approx(focal_pixels_from_35mm(26.0, 4032, 3024))
