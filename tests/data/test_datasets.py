"""Datasets on fixture trees generated in tmp_path, the synthetic renderer and the registry."""

import copy

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from clip2depth.data import DATASETS, build_dataset
from clip2depth.data.folder import FolderDataset
from clip2depth.data.kitti import KITTIDataset
from clip2depth.data.nyu import NYUDataset, NYUMatDataset
from clip2depth.data.synthetic import SyntheticDataset, render_sequence
from clip2depth.errors import ConfigError, DataError


def _write_rgb(path, h, w, value=128, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, dtype=np.uint8)).save(path, format=fmt)


def _write_depth_png(path, depth_int):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(depth_int.astype(np.uint16)).save(path)


# --------------------------------------------------------------------------------------------------
# NYU, BTS layout


@pytest.fixture
def nyu_root(tmp_path):
    root = tmp_path / "nyu"
    test = root / "official_splits" / "test"
    for i, scene in ((45, "bathroom"), (46, "bathroom")):
        _write_rgb(test / scene / f"rgb_{i:05d}.jpg", 24, 32, value=200)
        _write_depth_png(test / scene / f"sync_depth_{i:05d}.png", np.full((24, 32), 1500 + i))
    train = root / "sync" / "kitchen_0028b"
    _write_rgb(train / "rgb_00045.jpg", 480, 640)
    _write_depth_png(train / "sync_depth_00045.png", np.full((480, 640), 2000))
    (root / "test.txt").write_text(
        "bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\n"
        "bathroom/rgb_00046.jpg bathroom/sync_depth_00046.png 500.0\n"
    )
    (root / "train.txt").write_text("/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n")
    return root


def test_nyu_test_split(nyu_root):
    ds = NYUDataset(nyu_root, split="test", list_file=nyu_root / "test.txt")
    assert len(ds) == 2
    s = ds[1]
    assert s["image"].shape == (3, 24, 32) and s["image"].dtype == torch.float32
    assert s["image"].mean().item() == pytest.approx(200 / 255, abs=0.02)  # JPEG is lossy
    assert s["depth"].shape == (1, 24, 32)
    assert torch.allclose(s["depth"], torch.full((1, 24, 32), 1.546))
    assert s["focal"] == 500.0
    assert s["name"] == "bathroom_rgb_00046"
    assert s["path"].endswith("official_splits/test/bathroom/rgb_00046.jpg")
    assert (ds.min_depth, ds.max_depth, ds.default_crop) == (1e-3, 10.0, "nyu_eigen")


def test_nyu_train_leading_slash_and_border_crop(nyu_root):
    ds = NYUDataset(nyu_root, split="train", list_file=nyu_root / "train.txt")
    s = ds[0]
    assert s["image"].shape == (3, 427, 565) and s["depth"].shape == (1, 427, 565)
    assert s["name"] == "kitchen_0028b_rgb_00045"
    full = NYUDataset(nyu_root, split="train", list_file=nyu_root / "train.txt", border_crop=False)[0]
    assert full["image"].shape == (3, 480, 640)


def test_nyu_packaged_lists(nyu_root):
    assert len(NYUDataset(nyu_root, split="test")) == 654
    assert len(NYUDataset(nyu_root, split="train")) == 24231


def test_missing_and_corrupt_files_name_the_path(nyu_root):
    (nyu_root / "bad.txt").write_text("bathroom/rgb_99999.jpg bathroom/sync_depth_99999.png 518.8579\n")
    ds = NYUDataset(nyu_root, split="test", list_file=nyu_root / "bad.txt")
    with pytest.raises(DataError, match="rgb_99999.jpg"):
        ds[0]
    (nyu_root / "official_splits/test/bathroom/rgb_00045.jpg").write_bytes(b"not a jpeg")
    ds = NYUDataset(nyu_root, split="test", list_file=nyu_root / "test.txt")
    with pytest.raises(DataError, match="rgb_00045.jpg"):
        ds[0]


def test_nyu_root_without_layout(tmp_path):
    with pytest.raises(DataError, match="official_splits"):
        NYUDataset(tmp_path, split="test")


# --------------------------------------------------------------------------------------------------
# NYU labeled .mat


def _matlab_chars(f, name, text):
    return f.create_dataset(name, data=np.array([[ord(c)] for c in text], dtype=np.uint16)).ref


@pytest.fixture
def nyu_mat(tmp_path):
    """A 3-frame nyu_depth_v2_labeled.mat in the real (MATLAB, transposed) layout and a splits file."""
    scipy_io = pytest.importorskip("scipy.io")
    n = 3
    upright = np.full((n, 480, 640, 3), 20, dtype=np.uint8)
    upright[:, :240, :320] = 250  # bright top-left quadrant: shows any flip or transpose
    raw = np.zeros((n, 480, 640), dtype=np.float32)
    raw[:, :240, :320] = 1.0
    raw[:, 240:, 320:] = 3.0
    raw[:, 0, 0] = 0.5
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:
        # MATLAB writes column-major: h5py sees every array with its axes reversed.
        f.create_dataset("images", data=upright.transpose(0, 3, 2, 1))
        f.create_dataset("rawDepths", data=raw.transpose(0, 2, 1))
        f.create_dataset("depths", data=(raw + 1.0).transpose(0, 2, 1))
        refs = [_matlab_chars(f, f"#refs#/s{i}", name) for i, name in enumerate(["kitchen", "bathroom", "office"])]
        f.create_dataset("sceneTypes", data=np.array([refs], dtype=h5py.ref_dtype))
    splits = tmp_path / "splits.mat"
    scipy_io.savemat(splits, {"trainNdxs": np.array([[1]]), "testNdxs": np.array([[2], [3]])})
    return path, splits


def test_nyu_mat_upright_unmirrored(nyu_mat):
    path, splits = nyu_mat
    ds = NYUMatDataset(path.parent, split="test", splits_file=splits)
    assert ds._file is None  # opened lazily, in the worker
    assert len(ds) == 2
    s = ds[0]
    image, depth = s["image"], s["depth"]
    assert image.shape == (3, 480, 640) and depth.shape == (1, 480, 640)
    assert image[:, 100, 100].min() > 0.9 and image[:, 300, 400].max() < 0.1
    assert image[:, 100, 400].max() < 0.1 and image[:, 300, 100].max() < 0.1
    assert image[:, :7].abs().sum() == 0 and image[:, :, 632:].abs().sum() == 0  # BTS black border
    assert depth[0, 0, 0] == pytest.approx(0.5) and depth[0, 100, 100] == 1.0 and depth[0, 300, 400] == 3.0
    assert depth[0, 100, 400] == 0.0
    assert s["name"] == "bathroom_rgb_00001"  # 1-based index 2 is BTS's frame 00001
    assert NYUMatDataset(path, split="test", splits_file=splits, filled=True)[0]["depth"][0, 300, 400] == 4.0
    train = NYUMatDataset(path, split="train", splits_file=splits)
    assert len(train) == 1 and train[0]["name"] == "kitchen_rgb_00000"
    clone = copy.deepcopy(ds)  # goes through __getstate__ like a DataLoader worker's copy
    assert clone._file is None and torch.equal(clone[0]["image"], image)


def test_nyu_mat_missing_file(tmp_path):
    with pytest.raises(DataError, match="nyu_depth_v2_labeled.mat"):
        NYUMatDataset(tmp_path, split="test")


def test_packaged_official_splits():
    pytest.importorskip("scipy.io")
    from clip2depth.data.nyu import load_nyu_splits

    splits = load_nyu_splits()
    assert len(splits["test"]) == 654 and len(splits["train"]) == 795
    assert not set(splits["test"]) & set(splits["train"])


# --------------------------------------------------------------------------------------------------
# KITTI


@pytest.fixture
def kitti_roots(tmp_path):
    root, gt_root = tmp_path / "raw", tmp_path / "gt"
    drive = "2011_09_26_drive_0002_sync"
    _write_rgb(root / "2011_09_26" / drive / "image_02/data/0000000069.png", 375, 1242)
    gt = np.zeros((375, 1242))
    gt[200:, :] = 2560  # 10 m
    # as the annotated-depth archive unpacks: under train/
    _write_depth_png(gt_root / "train" / drive / "proj_depth/groundtruth/image_02/0000000069.png", gt)
    (tmp_path / "list.txt").write_text(
        f"2011_09_26/{drive}/image_02/data/0000000069.png {drive}/proj_depth/groundtruth/image_02/0000000069.png"
        " 721.5377\n"
        f"2011_09_26/{drive}/image_02/data/0000000054.png None 721.5377\n"
    )
    return root, gt_root, tmp_path / "list.txt"


def test_kitti_eval_keeps_full_gt(kitti_roots):
    root, gt_root, lst = kitti_roots
    ds = KITTIDataset(root, gt_root=gt_root, split="test", list_file=lst)
    assert len(ds) == 1 and ds.skipped_no_gt == 1
    s = ds[0]
    assert s["image"].shape == (3, 352, 1216)
    assert s["depth"].shape == (1, 375, 1242)
    assert s["depth"].max() == 10.0 and s["depth"][0, 0, 0] == 0.0
    assert s["crop_box"] == (23, 13, 352, 1216)
    assert s["name"] == "2011_09_26_drive_0002_sync_0000000069"
    assert s["focal"] == pytest.approx(721.5377)
    assert (ds.max_depth, ds.default_crop) == (80.0, "kitti_garg")


def test_kitti_train_kb_crop(kitti_roots):
    root, gt_root, lst = kitti_roots
    s = KITTIDataset(root, gt_root=gt_root, split="train", list_file=lst)[0]
    assert s["image"].shape == (3, 352, 1216) and s["depth"].shape == (1, 352, 1216)
    assert "crop_box" not in s
    assert s["depth"][0, 200 - 23, 0] == 10.0 and s["depth"][0, 199 - 23, 0] == 0.0


def test_kitti_packaged_test_list_counts_none(kitti_roots):
    root, gt_root, _ = kitti_roots
    ds = KITTIDataset(root, gt_root=gt_root, split="test")
    assert len(ds) == 652 and ds.skipped_no_gt == 45


# --------------------------------------------------------------------------------------------------
# Folder


def test_folder_png_and_npy(tmp_path):
    _write_rgb(tmp_path / "a" / "img1.png", 12, 16)
    _write_depth_png(tmp_path / "a" / "d1.png", np.full((12, 16), 2500))
    _write_rgb(tmp_path / "b" / "img2.jpg", 12, 16)
    np.save(tmp_path / "b" / "d2.npy", np.full((12, 16), 3.25, dtype=np.float32))
    lst = tmp_path / "list.txt"
    lst.write_text("a/img1.png a/d1.png 600\nb/img2.jpg b/d2.npy\n")
    ds = FolderDataset(lst)
    assert len(ds) == 2
    s1, s2 = ds[0], ds[1]
    assert torch.allclose(s1["depth"], torch.full((1, 12, 16), 2.5)) and s1["focal"] == 600.0
    assert torch.allclose(s2["depth"], torch.full((1, 12, 16), 3.25)) and s2["focal"] == pytest.approx(518.8579)
    assert s1["name"] == "a_img1" and s2["name"] == "b_img2"
    assert ds.default_crop is None
    assert ds.png_scale == 1000.0
    scaled_ds = FolderDataset(lst, depth_scale=256.0)
    assert scaled_ds[0]["depth"][0, 0, 0].item() == pytest.approx(2500 / 256)
    assert scaled_ds.png_scale == 256.0  # prediction PNGs are written in the ground truth's own encoding
    # root instead of the list's folder; split picks <root>/<split>.txt
    (tmp_path / "test.txt").write_text("a/img1.png a/d1.png\n")
    assert len(build_dataset("folder", split="test", root=tmp_path)) == 1


def test_folder_rejects_colour_depth(tmp_path):
    _write_rgb(tmp_path / "img.png", 8, 8)
    _write_rgb(tmp_path / "depth.png", 8, 8)
    (tmp_path / "l.txt").write_text("img.png depth.png\n")
    with pytest.raises(DataError, match="depth.png"):
        FolderDataset(tmp_path / "l.txt")[0]


# --------------------------------------------------------------------------------------------------
# Synthetic


def test_synthetic_deterministic_and_sane():
    ds = SyntheticDataset("train", size=(48, 64), length=4, seed=0)
    a, b = ds[1], SyntheticDataset("train", size=(48, 64), length=4, seed=0)[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    assert a["image"].shape == (3, 48, 64) and a["depth"].shape == (1, 48, 64)
    assert 0.0 <= a["image"].min() and a["image"].max() <= 1.0
    assert a["depth"].min() > 0 and a["depth"].max() <= 10.0
    assert a["image"].std() > 0.02  # textured, not flat
    other_seed = SyntheticDataset("train", size=(48, 64), length=4, seed=1)[1]
    other_split = SyntheticDataset("val", size=(48, 64), length=4, seed=0)[1]
    assert not torch.equal(a["depth"], other_seed["depth"])
    assert not torch.equal(a["depth"], other_split["depth"])
    assert not torch.equal(a["depth"], ds[2]["depth"])
    assert a["focal"] == pytest.approx(518.8579 * 64 / 640)


def test_render_sequence_moves_smoothly():
    images, depths = render_sequence(0, 3, size=(48, 64))
    assert len(images) == len(depths) == 3
    step = (depths[1] - depths[0]).abs().mean().item()
    assert 0 < step < 0.2 * depths[0].mean().item()
    assert 0 < (images[2] - images[1]).abs().mean().item() < 0.2
    static, _ = render_sequence(0, 2, size=(48, 64), motion=0.0)
    assert torch.equal(static[0], static[1])


# --------------------------------------------------------------------------------------------------
# Registry


def test_registry_errors(monkeypatch):
    assert set(DATASETS) == {"nyu", "nyu-mat", "kitti", "folder", "synthetic"}
    with pytest.raises(ConfigError, match="unknown dataset"):
        build_dataset("imagenet", split="test")
    monkeypatch.delenv("CLIP2DEPTH_NYU_ROOT", raising=False)
    with pytest.raises(DataError, match="--data-root.*CLIP2DEPTH_NYU_ROOT"):
        build_dataset("nyu", split="test")
    with pytest.raises(ConfigError, match="no option"):
        build_dataset("synthetic", split="train", colour="red")
    with pytest.raises(ConfigError):
        build_dataset("synthetic", split="train", root="/data")


def test_registry_reads_env_and_applies_transform(monkeypatch, nyu_root, kitti_roots):
    monkeypatch.setenv("CLIP2DEPTH_NYU_ROOT", str(nyu_root))
    ds = build_dataset("nyu", split="val", list_file=nyu_root / "test.txt", transform=lambda s: {**s, "seen": 1})
    assert ds[0]["seen"] == 1
    root, gt_root, lst = kitti_roots
    monkeypatch.setenv("CLIP2DEPTH_KITTI_ROOT", str(root))
    monkeypatch.delenv("CLIP2DEPTH_KITTI_GT_ROOT", raising=False)
    with pytest.raises(DataError, match="CLIP2DEPTH_KITTI_GT_ROOT"):
        build_dataset("kitti", split="test", list_file=lst)
    monkeypatch.setenv("CLIP2DEPTH_KITTI_GT_ROOT", str(gt_root))
    assert len(build_dataset("kitti", split="test", list_file=lst)) == 1
    syn = build_dataset("synthetic", split="test", size=(16, 16), length=2)
    assert len(syn) == 2 and syn[0]["depth"].shape == (1, 16, 16)


def test_synthetic_cache_returns_the_same_samples():
    from clip2depth.data import build_dataset

    plain = build_dataset("synthetic", split="train", size=(32, 48), length=3)
    cached = build_dataset("synthetic", split="train", size=(32, 48), length=3, cache=True)
    for _ in range(2):  # second pass is served from the cache
        for i in range(3):
            a, b = plain[i], cached[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    assert len(cached._cache) == 3


def test_list_lines_tab_separated_paths_with_spaces_and_bad_lines_numbered():
    from clip2depth.data.base import NYU_FOCAL, parse_list

    lines = ["# header", "a.png a_d.png 500", "", "dir with space/b c.png\tdir with space/b c_d.png",
             "too many fields here 1", "x.png None 5", "y.png y_d.png -3", "z.png\tz_d.png\t7.5"]
    entries, no_gt, bad = parse_list(lines, "test.txt")
    assert entries == [("a.png", "a_d.png", 500.0), ("dir with space/b c.png", "dir with space/b c_d.png", NYU_FOCAL),
                       ("z.png", "z_d.png", 7.5)]
    assert no_gt == 1
    assert [b["line"] for b in bad] == [5, 7]
    with pytest.raises(DataError, match="no usable line.*line 1"):
        parse_list(["only-one"], "test.txt")


def test_registry_spec_carries_the_protocol():
    from clip2depth.data import dataset_spec

    kitti = dataset_spec("kitti")
    assert (kitti.default_crop, kitti.max_depth, kitti.png_scale) == ("kitti_garg", 80.0, 256.0)
    assert kitti.root_env == "CLIP2DEPTH_KITTI_ROOT" and kitti.gt_root_env == "CLIP2DEPTH_KITTI_GT_ROOT"
    assert dataset_spec("nyu").default_crop == "nyu_eigen" and dataset_spec("synthetic").root_env is None
    assert all(spec.cls.default_crop == spec.default_crop for spec in DATASETS.values())
    with pytest.raises(ConfigError, match="nyu, nyu-mat, kitti, folder, synthetic"):
        dataset_spec("imagenet")
