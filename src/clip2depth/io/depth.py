"""Depth maps on disk: uint16 PNG (units of 1/scale metres) and float32 ``.npy`` (metres).

The one reader and writer of depth files: datasets, evaluation, the temporal analysis and ``predict``
all go through :func:`read_depth_file` / :func:`save_depth_png16` / :func:`save_depth_npy`.

A PNG written here states its scale in a PNG text chunk ``depth_scale`` (units per metre); the reader
uses that chunk when present, so such a file reads back in metres whatever scale the caller assumes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from clip2depth.errors import DataError
from clip2depth.io.atomic import atomic_path
from clip2depth.io.images import PNG16_MAX

logger = logging.getLogger(__name__)

SCALE_KEY = "depth_scale"
"""PNG text chunk holding the units per metre of a depth PNG (e.g. ``"1000"``)."""

# Single-channel integer modes that can hold depth units; 8-bit "L" is refused (a visualisation, or
# depth quantised to 256 levels), float "F" is accepted as given (TIFF depth in scaled units).
_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def as_depth_map(depth_m: np.ndarray) -> np.ndarray:
    """``depth_m`` as an H×W float64 array (ValueError for any other shape)."""
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth map must be H×W, got shape {depth.shape}")
    return depth


def save_depth_png16(depth_m: np.ndarray, path: str | os.PathLike[str], scale: float = 1000.0) -> None:
    """Write an H×W depth map (metres) as a uint16 PNG holding ``round(depth * scale)``.

    ``scale`` is units per metre: 1000 for NYU-style millimetres, 256 for KITTI; it is stored in the
    :data:`SCALE_KEY` text chunk. 0 means invalid: NaN, ±inf and depth ≤ 0 are written as 0. Depths
    beyond 65535 / scale metres are clipped to 65535 with a warning (use ``.npy`` to keep them).
    """
    depth = as_depth_map(depth_m)
    units = np.where(np.isfinite(depth) & (depth > 0), depth * scale, 0.0)
    too_far = units > PNG16_MAX
    if too_far.any():
        logger.warning(
            "%s: %d of %d pixels are farther than %.1f m (max %.1f m) and were clipped to 65535; "
            "save as .npy, or use a smaller scale, to keep them",
            path,
            int(too_far.sum()),
            units.size,
            PNG16_MAX / scale,
            float(depth[too_far].max()),
        )
    png = np.rint(np.minimum(units, PNG16_MAX)).astype(np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add_text(SCALE_KEY, f"{scale:g}")
    with atomic_path(path) as tmp:
        Image.fromarray(png).save(tmp, format="PNG", pnginfo=info)


def _stored_scale(img: Image.Image, path: Path) -> float | None:
    text = getattr(img, "text", {}).get(SCALE_KEY)
    if text is None:
        return None
    try:
        scale = float(text)
    except ValueError:
        scale = float("nan")
    if not (np.isfinite(scale) and scale > 0):
        raise DataError(f"{path}: its {SCALE_KEY} chunk {text!r} is not a positive number; rewrite the file")
    return scale


def load_depth_png16(path: str | os.PathLike[str], scale: float | None = None) -> np.ndarray:
    """Read a single-channel depth image as H×W float32 metres (``value / scale``); 0 (invalid) stays 0.

    The file's own :data:`SCALE_KEY` chunk wins over ``scale`` (a differing ``scale`` is logged);
    ``scale`` applies to files without one (NYU and KITTI ground truth).

    Raises:
        DataError: the file is missing or unreadable, not a single-channel 16-bit (or 32-bit) image,
            or has no scale chunk while ``scale`` is None.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            stored = _stored_scale(img, path)
            raw = np.array(img)
    except FileNotFoundError:
        raise DataError(f"{path}: depth file not found; check the path (and the data root or list file)") from None
    except DataError:
        raise
    except Exception as exc:  # PIL decoders raise many unrelated types
        raise DataError(f"{path}: cannot read as a depth image ({type(exc).__name__}: {exc})") from exc
    if mode not in _DEPTH_MODES or raw.ndim != 2:
        raise DataError(
            f"{path}: expected a single-channel 16-bit depth PNG, got mode {mode!r}. "
            f"Depth maps must be saved as uint16 (or .npy metres), not as a visualisation."
        )
    if stored is not None:
        if scale is not None and scale != stored:
            logger.debug("%s: using its own depth scale %g, not %g", path, stored, scale)
        scale = stored
    if scale is None:
        raise DataError(f"{path}: the file does not state its depth scale; pass one (units per metre, e.g. 1000)")
    return (raw.astype(np.float64) / scale).astype(np.float32)


def load_depth_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an ``.npy`` depth map (metres) as H×W float32; singleton axes are dropped, no pickle is loaded.

    Raises:
        DataError: the file is missing, not a plain numeric array, or not H×W.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: depth file not found; check the path (and the data root or list file)") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read .npy depth ({exc}); save it with numpy.save") from None
    arr = np.squeeze(np.asarray(arr))
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected a numeric H×W depth array in metres, got {arr.dtype} {arr.shape}")
    return arr.astype(np.float32)


def read_depth_file(path: str | os.PathLike[str], scale: float | None = None) -> np.ndarray:
    """Read any depth file as H×W float32 metres, 0 = no measurement (non-finite values become 0).

    ``.npy`` holds metres (``scale`` is not applied); any other file is a depth image read by
    :func:`load_depth_png16` (its own scale chunk first, then ``scale``).
    """
    if Path(path).suffix.lower() == ".npy":
        depth = load_depth_npy(path)
    else:
        depth = load_depth_png16(path, scale)
    depth[~np.isfinite(depth)] = 0.0
    return depth


def save_depth_npy(depth_m: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write an H×W depth map as float32 metres in ``.npy`` (values kept as they are, NaN included)."""
    depth = as_depth_map(depth_m).astype(np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, depth)
