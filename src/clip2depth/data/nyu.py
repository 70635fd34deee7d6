"""NYU Depth v2: the BTS folder layout (``nyu``) and the official labeled ``.mat`` file (``nyu-mat``)."""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from clip2depth.data.base import (
    NYU_FOCAL,
    DepthDataset,
    Sample,
    Transform,
    packaged_list,
    parse_list,
    read_depth,
    read_list,
    read_rgb,
    require_dir,
)
from clip2depth.errors import ConfigError, DataError
from clip2depth.models.infer import image_tensor

logger = logging.getLogger(__name__)

NYU_DEPTH_SCALE = 1000.0
"""BTS NYU depth PNGs hold millimetres."""

NYU_SPLITS = ("train", "val", "test")
"""NYU has no official validation split; ``val`` is the 654-image test split, as BTS evaluates online."""

_LIST_FILES = {"train": "nyudepthv2_train_files_with_gt.txt.gz", "test": "nyudepthv2_test_files_with_gt.txt"}
_SPLIT_DIRS = {"train": Path("sync"), "test": Path("official_splits") / "test"}

NYU_SIZE = (480, 640)
"""Height and width of every NYU Depth v2 frame."""

# BTS trains on rows 45:472, cols 43:608 of the 480×640 frame: outside lies the white/black border
# left by the Kinect RGB–depth registration.
_TRAIN_BORDER = (slice(45, 472), slice(43, 608))
# The BTS test set (and its extraction script) blackens the RGB outside rows 7:474, cols 7:632.
_BLACK_BORDER = (slice(7, 474), slice(7, 632))

MAT_FILENAME = "nyu_depth_v2_labeled.mat"
SPLITS_FILENAME = "nyu_official_splits.mat"


def _canonical_split(split: str) -> str:
    if split not in NYU_SPLITS:
        raise ConfigError(f"unknown NYU split {split!r}; choose one of {', '.join(NYU_SPLITS)}")
    return "test" if split == "val" else split


class NYUDataset(DepthDataset):
    """NYU Depth v2 in the BTS layout.

    ``<root>/sync/<scene>/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` for ``train`` (24,231 lines),
    ``<root>/official_splits/test/<scene>/...`` for ``test``/``val`` (654 lines); depth PNGs are uint16
    millimetres. Sample ``name`` is ``<scene>_rgb_XXXXX``, the file stem BTS's evaluator expects.

    Args:
        root: the folder holding ``sync/`` and/or ``official_splits/``.
        split: ``train``, ``val`` (= test) or ``test``.
        list_file: a ``rgb depth focal`` list to use instead of the packaged one (paths relative to
            the split folder).
        border_crop: crop image and depth to BTS's training region (rows 45:472, cols 43:608) when the
            frame is 480×640. Default: on for ``train``, off otherwise (evaluation uses the full frame).
        transform: applied to each sample.
    """

    min_depth = 1e-3
    max_depth = 10.0
    default_crop = "nyu_eigen"
    png_scale = NYU_DEPTH_SCALE

    @classmethod
    def input_size(cls, **options: Any) -> tuple[int, int]:
        """The full 480×640 NYU frame."""
        return NYU_SIZE

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "test",
        list_file: str | Path | None = None,
        border_crop: bool | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform=transform)
        self.split = _canonical_split(split)
        self.root = require_dir(root, "NYU root")
        self.base = self.root / _SPLIT_DIRS[self.split]
        if not self.base.is_dir():
            raise DataError(
                f"NYU root {self.root} has no {_SPLIT_DIRS[self.split]}/ folder; expected the BTS layout "
                "(sync/ for train, official_splits/test/ for test)"
            )
        if list_file is not None:
            lines, source = read_list(list_file), str(list_file)
        else:
            lines, source = packaged_list(_LIST_FILES[self.split]), _LIST_FILES[self.split]
        self.entries, self.skipped_no_gt, self.bad_lines = parse_list(lines, source)
        self.border_crop = (self.split == "train") if border_crop is None else border_crop
        logger.info("NYU %s: %d images from %s", self.split, len(self.entries), source)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Sample:
        rgb_rel, depth_rel, focal = self.entries[index]
        # The train list writes paths as "/scene/rgb_XXXXX.jpg": relative to the split folder all the same.
        rgb_rel, depth_rel = rgb_rel.lstrip("/"), depth_rel.lstrip("/")
        rgb_path = self.base / rgb_rel
        image = read_rgb(rgb_path)
        depth = read_depth(self.base / depth_rel, scale=NYU_DEPTH_SCALE)
        if image.shape[-2:] != depth.shape[-2:]:
            raise DataError(f"{rgb_path}: image {tuple(image.shape[-2:])} and depth {tuple(depth.shape[-2:])} differ")
        if self.border_crop and tuple(image.shape[-2:]) == NYU_SIZE:
            image, depth = image[:, _TRAIN_BORDER[0], _TRAIN_BORDER[1]], depth[:, _TRAIN_BORDER[0], _TRAIN_BORDER[1]]
        parts = Path(rgb_rel).parts
        stem = Path(rgb_rel).stem
        name = f"{parts[0]}_{stem}" if len(parts) > 1 else stem
        return {
            "image": image.contiguous(),
            "depth": depth.contiguous(),
            "focal": focal,
            "path": str(rgb_path),
            "name": name,
        }


def load_nyu_splits(splits_file: str | Path | None = None) -> dict[str, np.ndarray]:
    """The official NYU labeled split: ``{"train": 795 indices, "test": 654 indices}``, 1-based int64.

    Reads MATLAB's ``splits.mat`` (v5; keys ``trainNdxs``, ``testNdxs``); by default the packaged copy.
    """
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise DataError("reading the NYU splits .mat file needs scipy: pip install scipy") from None

    source = str(splits_file) if splits_file is not None else f"packaged {SPLITS_FILENAME}"
    try:
        if splits_file is None:
            with resources.files("clip2depth.data").joinpath("splits", SPLITS_FILENAME).open("rb") as fh:
                mat = loadmat(fh)
        else:
            mat = loadmat(str(splits_file))
    except FileNotFoundError:
        raise DataError(f"{source}: NYU splits file not found") from None
    except (OSError, ValueError, TypeError, NotImplementedError, MatReadError) as exc:
        raise DataError(f"{source}: cannot read NYU splits file ({exc})") from None
    try:
        return {
            "train": np.asarray(mat["trainNdxs"]).astype(np.int64).ravel(),
            "test": np.asarray(mat["testNdxs"]).astype(np.int64).ravel(),
        }
    except KeyError as exc:
        raise DataError(f"{source}: NYU splits file lacks {exc}; expected trainNdxs and testNdxs") from None


class NYUMatDataset(DepthDataset):
    """NYU Depth v2 read straight from the official ``nyu_depth_v2_labeled.mat`` (HDF5, MATLAB v7.3).

    The file stores arrays transposed (``images`` (N, 3, 640, 480), ``depths``/``rawDepths``
    (N, 640, 480)); samples come back upright: image (3, 480, 640), depth (1, 480, 640) metres.
    As BTS builds its test set: raw Kinect depth (``rawDepths``, 0 = missing) and the RGB outside rows
    7:474, cols 7:632 blackened. Sample ``name`` is ``<sceneType>_rgb_XXXXX`` with the 0-based frame
    index, the name of the same frame in BTS's ``official_splits``.

    The HDF5 file is opened on first access in each process (so DataLoader workers can fork).

    Args:
        root: the ``.mat`` file, or a folder holding ``nyu_depth_v2_labeled.mat``.
        split: ``train`` (795), ``val`` (= test) or ``test`` (654).
        splits_file: a ``splits.mat`` to use instead of the packaged official one.
        filled: use the colorised/inpainted ``depths`` instead of ``rawDepths``.
        black_border: blacken the RGB border as BTS does.
        transform: applied to each sample.
    """

    min_depth = 1e-3
    max_depth = 10.0
    default_crop = "nyu_eigen"
    png_scale = NYU_DEPTH_SCALE

    @classmethod
    def input_size(cls, **options: Any) -> tuple[int, int]:
        """The full 480×640 NYU frame."""
        return NYU_SIZE

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "test",
        splits_file: str | Path | None = None,
        filled: bool = False,
        black_border: bool = True,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform=transform)
        self.split = _canonical_split(split)
        path = Path(root).expanduser()
        self.mat_path = path / MAT_FILENAME if path.is_dir() else path
        if not self.mat_path.is_file():
            raise DataError(f"{self.mat_path}: NYU labeled .mat file not found; pass it (or its folder) as the root")
        self.depth_key = "depths" if filled else "rawDepths"
        self.black_border = black_border
        self.indices = load_nyu_splits(splits_file)[self.split]
        self.scenes = self._read_scene_types()
        self._file: Any = None
        self._pid: int | None = None
        logger.info("NYU labeled %s: %d images from %s", self.split, len(self.indices), self.mat_path)

    def _read_scene_types(self) -> list[str]:
        """Validate the file and read the scene type of every used frame (closes the file again)."""
        try:
            with h5py.File(self.mat_path, "r") as f:
                for key in ("images", self.depth_key, "sceneTypes"):
                    if key not in f:
                        raise DataError(f"{self.mat_path}: no {key!r} array; is this nyu_depth_v2_labeled.mat?")
                n = f["images"].shape[0]
                if self.indices.size and (self.indices.min() < 1 or self.indices.max() > n):
                    raise DataError(f"{self.mat_path}: split indices exceed the file's {n} frames")
                refs = np.asarray(f["sceneTypes"]).ravel()
                return [_matlab_string(f[refs[i - 1]]) for i in self.indices]
        except OSError as exc:
            raise DataError(f"{self.mat_path}: cannot open as HDF5 / MATLAB v7.3 ({exc})") from None

    def _h5(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.mat_path, "r")
            except OSError as exc:
                raise DataError(f"{self.mat_path}: cannot open ({exc})") from None
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Sample:
        ndx = int(self.indices[index])
        f = self._h5()
        try:
            image = np.asarray(f["images"][ndx - 1]).transpose(0, 2, 1)
            depth = np.asarray(f[self.depth_key][ndx - 1], dtype=np.float32).T
        except (OSError, KeyError) as exc:
            raise DataError(f"{self.mat_path}: cannot read frame {ndx} ({exc})") from None
        image_t = image_tensor(torch.from_numpy(np.ascontiguousarray(image)))
        if self.black_border:
            bordered = torch.zeros_like(image_t)
            bordered[:, _BLACK_BORDER[0], _BLACK_BORDER[1]] = image_t[:, _BLACK_BORDER[0], _BLACK_BORDER[1]]
            image_t = bordered
        depth[~np.isfinite(depth)] = 0.0
        return {
            "image": image_t.contiguous(),
            "depth": torch.from_numpy(np.ascontiguousarray(depth))[None],
            "focal": NYU_FOCAL,
            "path": f"{self.mat_path}#{ndx}",
            "name": f"{self.scenes[index]}_rgb_{ndx - 1:05d}",
        }


def _matlab_string(dataset: Any) -> str:
    """A MATLAB char array stored in HDF5 (uint16 code points) as a Python string."""
    return "".join(chr(int(c)) for c in np.asarray(dataset).ravel())
