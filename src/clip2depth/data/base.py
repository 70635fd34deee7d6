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
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

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
    """The lines of a list file, as they are (blank and ``#`` lines included, so numbers match the file)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: list file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read list file ({exc})") from None
    return text.splitlines()


def packaged_list(filename: str) -> list[str]:
    """Lines of a split list shipped in ``clip2depth/data/splits`` (``.gz`` files are decompressed)."""
    data = resources.files(_SPLITS_PACKAGE).joinpath("splits", filename).read_bytes()
    if filename.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode().splitlines()


class ParsedList(NamedTuple):
    """A parsed list file: the usable entries and what was left out."""

    entries: list[tuple[str, str, float]]
    """``(rgb, depth, focal)`` per usable line, paths as written."""
    skipped_no_gt: int
    """Lines whose depth is ``None`` (no ground truth)."""
    bad_lines: list[dict[str, Any]]
    """``{"line": number (1-based, as in the file), "reason": text}`` per malformed line."""


LIST_FORMAT = (
    "one sample per line: 'rgb depth [focal]' separated by spaces, or by tabs when a path contains "
    "spaces; depth 'None' = no ground truth; blank lines and lines starting with # are ignored"
)
"""The list-file format, as ``--help`` and error messages state it."""


def parse_list(lines: list[str], source: str) -> ParsedList:
    """Parse list-file lines (:data:`LIST_FORMAT`) into ``(rgb, depth, focal)`` entries.

    A line holding a tab is split at tabs only, so paths may contain spaces; other lines are split at
    any whitespace. A missing focal defaults to :data:`NYU_FOCAL`. Lines whose depth is ``None`` (e.g.
    45 KITTI Eigen test frames) are counted in ``skipped_no_gt``. A malformed line (wrong number of
    fields, a focal that is not a positive number) is reported in ``bad_lines`` with its number and the
    rest is used; ``source`` names the list in messages.

    Raises:
        DataError: every non-blank line is malformed (nothing to use).
    """
    entries: list[tuple[str, str, float]] = []
    skipped = 0
    bad: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")] if "\t" in line else line.split()
        parts = [p for p in parts if p]
        if len(parts) not in (2, 3):
            bad.append({"line": number, "reason": f"expected 'rgb depth [focal]', got {len(parts)} fields "
                                                  f"in {line!r} (separate paths with spaces by tabs)"})
            continue
        if parts[1] == "None":
            skipped += 1
            continue
        focal = _parse_focal(parts[2]) if len(parts) == 3 else NYU_FOCAL
        if focal is None:
            bad.append({"line": number, "reason": f"focal {parts[2]!r} is not a positive number"})
            continue
        entries.append((parts[0], parts[1], focal))
    if bad:
        shown = "; ".join(f"line {b['line']}: {b['reason']}" for b in bad[:3])
        if not entries and not skipped:
            raise DataError(f"{source}: no usable line ({shown}); expected {LIST_FORMAT}")
        logger.warning("%s: %d malformed line(s) left out (%s%s)", source, len(bad), shown,
                       "; ..." if len(bad) > 3 else "")
    return ParsedList(entries, skipped, bad)


def _parse_focal(text: str) -> float | None:
    try:
        focal = float(text)
    except ValueError:
        return None
    return focal if math.isfinite(focal) and focal > 0 else None


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
    (metres, valid ground truth is strictly between them), ``default_crop`` (a name of
    :data:`clip2depth.evaluation.metrics.CROPS`, or None) and ``png_scale`` (16-bit depth PNGs of this
    dataset hold metres × this; prediction PNGs use the same encoding); :meth:`input_size` the size of the
    images evaluation predicts.
    """

    min_depth: float = 1e-3
    max_depth: float = 10.0
    default_crop: str | None = None
    png_scale: float = 1000.0

    @classmethod
    def input_size(cls, **options: Any) -> tuple[int, int] | None:
        """(H, W) of every image the dataset built with ``options`` hands to evaluation; None when its files decide.

        Training records it as the scale of the model it trains (``ModelConfig.train_size``).
        """
        return None

    def __init__(self, *, transform: Transform | None = None) -> None:
        self.transform = transform
        # Malformed lines of the dataset's list file (see parse_list), reported by the evaluator.
        self.bad_lines: list[dict[str, Any]] = []

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
