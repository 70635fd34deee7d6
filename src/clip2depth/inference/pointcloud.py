"""Depth map → 3-D points in camera coordinates, and a minimal binary PLY writer/reader.

Camera convention (OpenCV): x right, y down, z forward, metres; pixel (u, v) = (column, row) has
its centre at integer coordinates, so the middle of a W-pixel row is u = (W - 1) / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clip2depth.errors import ConfigError

DEFAULT_FOV_DEG = 60.0
"""Horizontal field of view assumed when the camera is unknown; close to NYU's Kinect (≈ 63°) and
a typical phone main camera in landscape (≈ 65°)."""

@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels: focal lengths ``fx``, ``fy`` and principal point ``cx``, ``cy``."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, fov_deg: float, width: int, height: int) -> Intrinsics:
        """Square pixels, principal point at the image centre, ``fov_deg`` across the full width.

        ``fx = fy = (width / 2) / tan(fov / 2)``, ``cx = (width - 1) / 2``, ``cy = (height - 1) / 2``.

        Raises:
            ConfigError: the FOV is not in (0, 180) degrees or the size is not positive.
        """
        if not 0.0 < fov_deg < 180.0:
            raise ConfigError(f"fov_deg={fov_deg:g} is not a field of view: give degrees between 0 and 180 "
                              "(exclusive)", params=("fov_deg",))
        if width <= 0 or height <= 0:
            raise ConfigError(f"image size must be positive, got {width}×{height}")
        focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
        return cls(fx=focal, fy=focal, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)

    @classmethod
    def default_for(cls, width: int, height: int) -> Intrinsics:
        """Intrinsics for an unknown camera: :data:`DEFAULT_FOV_DEG` (60°) horizontal FOV."""
        return cls.from_fov(DEFAULT_FOV_DEG, width, height)


def valid_mask(depth_m: np.ndarray) -> np.ndarray:
    """H×W bool: pixels with a finite depth > 0, the ones :func:`backproject` keeps.

    ``image[valid_mask(depth)]`` gives the colours of the points in the same order.
    """
    depth = np.asarray(depth_m)
    return np.isfinite(depth) & (depth > 0)


def backproject(depth_m: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Lift an H×W z-depth map (metres along the optical axis) to N×3 float32 points (metres).

    ``x = (u - cx) * z / fx``, ``y = (v - cy) * z / fy``, ``z = depth[v, u]``, in row-major order of
    the valid pixels (see :func:`valid_mask`); invalid pixels (≤ 0, NaN, inf) are skipped.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth map must be H×W, got shape {depth.shape}")
    v, u = np.nonzero(valid_mask(depth))
    z = depth[v, u]
    x = (u - intrinsics.cx) * z / intrinsics.fx
    y = (v - intrinsics.cy) * z / intrinsics.fy
    return np.stack([x, y, z], axis=1).astype(np.float32)
