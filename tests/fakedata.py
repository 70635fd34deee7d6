"""Small stand-ins for the real dataset files, with the real names, fields and folder structures.

- :func:`nyu_labeled_mat`: a MATLAB v7.3 (HDF5) ``nyu_depth_v2_labeled.mat`` with the official fields
  (transposed as MATLAB stores them) plus a ``splits.mat`` and the matching test list;
- :func:`nyu_sync_zip`: the BTS ``sync.zip`` layout with its train list;
- :func:`kitti_files`: a raw drive zip, its calibration zip and ``data_depth_annotated.zip`` with a
  test list naming frames with and without ground truth;
- what hosts serve in place of a file: :data:`HTML_PAGE`, :func:`zip_bytes` of other files.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from scipy import io as scipy_io

NYU_SCENES = ("kitchen", "bathroom", "office", "kitchen")
NYU_TEST_NDX = (3, 4)
"""The look-alike's official test frames, 1-based as ``splits.mat`` writes them."""


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Google Drive - Quota exceeded</title></head>\n<body><p>Too many "
             b"users have viewed or downloaded this file recently.</p></body></html>\n")
"""A quota page, as hosts serve it with status 200 in place of the file."""


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A zip archive (deflated) of ``{member name: bytes}``."""
    return _zip(entries)


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def nyu_depth(index: int) -> np.ndarray:
    """The raw depth (metres, 480×640, upright) of frame ``index`` (0-based): a ramp, 0 in one corner."""
    depth = np.tile(np.linspace(0.5, 9.5, 640, dtype=np.float32), (480, 1)) + np.float32(0.01 * index)
    depth[:20, :20] = 0.0
    return depth


def nyu_labeled_mat(folder: Path, *, frames: int = len(NYU_SCENES)) -> tuple[bytes, Path, Path]:
    """(bytes of a labeled .mat of ``frames`` frames, its splits.mat, the test list of the :data:`NYU_TEST_NDX`
    frames); fewer than 4 frames make a file too short for its split."""
    n = frames
    images = np.zeros((n, 480, 640, 3), dtype=np.uint8)
    for i in range(n):
        images[i, :, :, 0] = 40 * (i + 1)
        images[i, :240, :320] = 250  # bright top-left quadrant: any flip or transpose shows
    depths = np.stack([nyu_depth(i) for i in range(n)])
    path = folder / "labeled.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images.transpose(0, 3, 2, 1))
        f.create_dataset("rawDepths", data=depths.transpose(0, 2, 1))
        f.create_dataset("depths", data=(depths + 0.1).transpose(0, 2, 1))
        refs = [f.create_dataset(f"#refs#/s{i}", data=np.array([[ord(c)] for c in s], dtype=np.uint16)).ref
                for i, s in enumerate(NYU_SCENES[:n])]
        f.create_dataset("sceneTypes", data=np.array([refs], dtype=h5py.ref_dtype))
    splits = folder / "splits.mat"
    scipy_io.savemat(splits, {"trainNdxs": np.array([[1], [2]]), "testNdxs": np.array([[i] for i in NYU_TEST_NDX])})
    test_list = folder / "nyu_test.txt"
    test_list.write_text("".join(
        f"{NYU_SCENES[i - 1]}/rgb_{i - 1:05d}.jpg {NYU_SCENES[i - 1]}/sync_depth_{i - 1:05d}.png 518.8579\n"
        for i in NYU_TEST_NDX))
    return path.read_bytes(), splits, test_list


def nyu_sync_zip(folder: Path, *, scenes: int = 2, frames: int = 4) -> tuple[bytes, Path]:
    """(bytes of a ``sync.zip`` with ``scenes × frames`` 480×640 pairs, its train list)."""
    entries, lines = {}, []
    rng = np.random.default_rng(0)
    for s in range(scenes):
        scene = f"living_room_{s:04d}"
        for k in range(frames):
            rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
            depth = np.full((480, 640), 1000 + 500 * k, dtype=np.uint16)
            entries[f"sync/{scene}/rgb_{k:05d}.jpg"] = _jpg(rgb)
            entries[f"sync/{scene}/sync_depth_{k:05d}.png"] = _png(depth)
            lines.append(f"/{scene}/rgb_{k:05d}.jpg /{scene}/sync_depth_{k:05d}.png 518.8579\n")
    train_list = folder / "nyu_train.txt"
    train_list.write_text("".join(lines))
    return _zip(entries), train_list


KITTI_DRIVE = "2011_09_26_drive_0002"


def kitti_files(folder: Path) -> tuple[dict[str, bytes], Path]:
    """({path on the KITTI host: bytes} for a one-drive test set, the test list)."""
    date = KITTI_DRIVE[:10]
    rgb = np.full((375, 1242, 3), 90, dtype=np.uint8)
    gt = np.full((375, 1242), 256 * 20, dtype=np.uint16)
    frames = ("0000000000", "0000000001")
    drive = {f"{date}/{KITTI_DRIVE}_sync/image_02/data/{f}.png": _png(rgb) for f in frames}
    annotated = {f"val/{KITTI_DRIVE}_sync/proj_depth/groundtruth/image_02/{frames[0]}.png": _png(gt)}
    calib = {f"{date}/calib_cam_to_cam.txt": b"calib\n"}
    test_list = folder / "kitti_test.txt"
    test_list.write_text(
        f"{date}/{KITTI_DRIVE}_sync/image_02/data/{frames[0]}.png "
        f"{KITTI_DRIVE}_sync/proj_depth/groundtruth/image_02/{frames[0]}.png 721.5377\n"
        f"{date}/{KITTI_DRIVE}_sync/image_02/data/{frames[1]}.png None 721.5377\n")
    files = {
        f"raw_data/{KITTI_DRIVE}/{KITTI_DRIVE}_sync.zip": _zip(drive),
        f"raw_data/{date}_calib.zip": _zip(calib),
        "data_depth_annotated.zip": _zip(annotated),
    }
    return files, test_list
