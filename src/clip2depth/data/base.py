"""What every dataset shares: the sample format, file readers and the packaged split lists.

A sample is a dict:

- ``image``: float32 tensor (3, H, W), RGB in [0, 1] (8-bit pixels / 255);
- ``depth``: float32 tensor (1, H, W), metres, 0 = no measurement;
- ``focal``: float, focal length in pixels;
- ``path``: str, the RGB file (or a ``file.mat#index`` reference);
- ``name``: str, a file stem for outputs (the name BTS's evaluator expects where there is one);
- optionally ``crop_box``: (top, left, h, w) of the input inside the ground truth (KITTI evaluation).

Unreadable or missing files raise :class:`~clip2depth.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch.utils.data import Dataset

from clip2depth.errors import DataError
from clip2depth.io.depth import read_depth_file
from clip2depth.io.images import load_image
from clip2depth.models.infer import image_tensor

logger = logging.getLogger(__name__)

Sample: TypeAlias = dict[str, Any]
Transform: TypeAlias = Callable[[Sample], Sample]

NYU_FOCAL = 518.8579
"""Focal length (pixels) of the NYU Kinect RGB camera at 640×480; the default for unknown cameras."""

_SPLITS_PACKAGE = "clip2depth.data"


# --------------------------------------------------------------------------------------------------
# Readers.


def read_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as an RGB float32 tensor (3, H, W) in [0, 1].

    Pixels are those of :func:`clip2depth.io.images.load_image` (EXIF orientation, 16-bit, alpha and
    palette rules) divided by 255, exactly what ``predict`` and ``model.infer`` feed the model.
    """
    return image_tensor(load_image(path))


def read_depth(path: str | Path, *, scale: float) -> torch.Tensor:
    """Read a depth map as a float32 tensor (1, H, W) in metres, 0 = no measurement.

    :func:`clip2depth.io.depth.read_depth_file`: a 16-bit PNG holds integer depth, metres = value /
    ``scale`` (1000 for NYU millimetres, 256 for KITTI) unless the file states its own scale; a
    ``.npy`` file holds float metres and ``scale`` is not applied. Non-finite values become 0.
    """
    return torch.from_numpy(read_depth_file(path, scale=float(scale)))[None]


def read_list(path: str | Path) -> list[str]:
    """Non-empty, non-comment lines of a list file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: list file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read list file ({exc})") from None
    return _lines(text)


def packaged_list(filename: str) -> list[str]:
    """Lines of a split list shipped in ``clip2depth/data/splits`` (``.gz`` files are decompressed)."""
    data = resources.files(_SPLITS_PACKAGE).joinpath("splits", filename).read_bytes()
    if filename.endswith(".gz"):
        data = gzip.decompress(data)
    return _lines(data.decode())


def parse_list(lines: list[str], source: str) -> tuple[list[tuple[str, str, float]], int]:
    """Parse ``rgb depth [focal]`` lines into ``(rgb, depth, focal)`` entries.

    A missing focal defaults to :data:`NYU_FOCAL`. Lines whose depth is ``None`` (no ground truth,
    e.g. 45 KITTI Eigen test frames) are left out; their number is returned as the second value.
    ``source`` names the list in error messages.
    """
    entries: list[tuple[str, str, float]] = []
    skipped = 0
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if len(parts) not in (2, 3):
            raise DataError(f"{source}, line {number}: expected 'rgb depth [focal]', got {line!r}")
        if parts[1] == "None":
            skipped += 1
            continue
        try:
            focal = float(parts[2]) if len(parts) == 3 else NYU_FOCAL
        except ValueError:
            raise DataError(f"{source}, line {number}: focal {parts[2]!r} is not a number") from None
        entries.append((parts[0], parts[1], focal))
    return entries, skipped


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or a DataError when it is not an existing directory."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"{what} {p} is not a directory; pass the right --data-root")
    return p


# --------------------------------------------------------------------------------------------------
# Base class.


class DepthDataset(Dataset):
    """Base of every dataset: ``__getitem__`` loads a sample (see module docstring), then applies
    ``transform`` when one is given.

    Class attributes tell the evaluator which protocol applies: ``min_depth`` / ``max_depth``
    (metres, valid ground truth is strictly between them) and ``default_crop`` (a name of
    :data:`clip2depth.evaluation.metrics.CROPS`, or None).
    """

    min_depth: float = 1e-3
    max_depth: float = 10.0
    default_crop: str | None = None

    def __init__(self, *, transform: Transform | None = None) -> None:
        self.transform = transform

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        """The untransformed sample ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {len(self)}")
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample
