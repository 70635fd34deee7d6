"""Depth maps on disk: uint16 PNG (units of 1/scale metres) and float32 ``.npy`` (metres)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from clip2depth.errors import DataError
from clip2depth.io.atomic import atomic_path
from clip2depth.io.images import HIGH_BIT_MODES, PNG16_MAX

logger = logging.getLogger(__name__)


def as_depth_map(depth_m: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth map must be H×W, got shape {depth.shape}")
    return depth


def save_depth_png16(depth_m: np.ndarray, path: str | os.PathLike[str], scale: float = 1000.0) -> None:
    """Write an H×W depth map (metres) as a uint16 PNG holding ``round(depth * scale)``.

    ``scale`` is units per metre: 1000 for NYU-style millimetres, 256 for KITTI. 0 means invalid:
    NaN, ±inf and depth ≤ 0 are written as 0. Depths beyond 65535 / scale metres are clipped to
    65535 with a warning (use ``.npy`` to keep them).
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
    with atomic_path(path) as tmp:
        Image.fromarray(png).save(tmp, format="PNG")


def load_depth_png16(path: str | os.PathLike[str], scale: float) -> np.ndarray:
    """Read a uint16 depth PNG as H×W float32 metres (``value / scale``); 0 (invalid) stays 0.

    Raises:
        DataError: the file is unreadable or not a single-channel 16-bit image.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            raw = np.array(img)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such depth file. Check the path.") from exc
    except Exception as exc:  # PIL decoders raise many unrelated types
        raise DataError(f"{path}: cannot read as a depth PNG ({type(exc).__name__}: {exc})") from exc
    if mode not in HIGH_BIT_MODES - {"F"} or raw.ndim != 2:
        raise DataError(
            f"{path}: expected a single-channel 16-bit depth PNG, got mode {mode!r}. "
            f"Depth maps must be saved as uint16, not as a visualisation."
        )
    return (raw.astype(np.float64) / scale).astype(np.float32)


def save_depth_npy(depth_m: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write an H×W depth map as float32 metres in ``.npy`` (values kept as they are, NaN included)."""
    depth = as_depth_map(depth_m).astype(np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, depth)
