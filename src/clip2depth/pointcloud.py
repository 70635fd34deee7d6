"""Depth map → 3-D points in camera coordinates, and a minimal binary PLY writer/reader.

Camera convention (OpenCV): x right, y down, z forward, metres; pixel (u, v) = (column, row) has
its centre at integer coordinates, so the middle of a W-pixel row is u = (W - 1) / 2.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .io import atomic_write_bytes

DEFAULT_FOV_DEG = 60.0
"""Horizontal field of view assumed when the camera is unknown; close to NYU's Kinect (≈ 63°) and
a typical phone main camera in landscape (≈ 65°)."""

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


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
            raise ConfigError(f"field of view must be between 0 and 180 degrees, got {fov_deg}")
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


def save_ply(path: str | os.PathLike[str], points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Write N×3 points (float32 x, y, z) and optional N×3 uint8 RGB as binary little-endian PLY.

    The write is atomic. Any viewer (MeshLab, CloudCompare, Open3D) reads the file.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be N×3, got shape {points.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape or colors.dtype != np.uint8:
            raise ValueError(f"colors must be N×3 uint8 like points {points.shape}, got {colors.shape} {colors.dtype}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(points), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertices[axis] = points[:, i]
    if colors is not None:
        for i, channel in enumerate(("red", "green", "blue")):
            vertices[channel] = colors[:, i]
    header = ["ply", "format binary_little_endian 1.0", "comment written by clip2depth",
              f"element vertex {len(points)}",
              *(f"property {'float' if kind == '<f4' else 'uchar'} {name}" for name, kind in fields),
              "end_header"]  # fmt: skip
    atomic_write_bytes(path, ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes())


def load_ply(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a binary little-endian PLY point cloud: (N×3 float32 xyz, N×3 uint8 RGB or None).

    Only a single ``vertex`` element with scalar properties is supported (what :func:`save_ply`
    writes, and what most point-cloud tools write).

    Raises:
        DataError: the file is missing or not such a PLY.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise DataError(f"{path}: not a PLY file")
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise DataError(f"{path}: only binary little-endian PLY is supported")
    count, fields = 0, []
    for line in lines:
        words = line.split()
        if words[:2] == ["element", "vertex"]:
            count = int(words[2])
        elif words[:1] == ["element"]:
            raise DataError(f"{path}: only a single vertex element is supported, found {line!r}")
        elif words[:1] == ["property"]:
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise DataError(f"{path}: unsupported property {line!r}")
            fields.append((words[2], "<" + _PLY_TYPES[words[1]]))
    names = {name for name, _ in fields}
    if not {"x", "y", "z"} <= names:
        raise DataError(f"{path}: vertices have no x, y, z properties")
    try:
        vertices = np.frombuffer(data, dtype=fields, count=count, offset=end + len(b"end_header\n"))
    except ValueError as exc:
        raise DataError(f"{path}: truncated PLY, the header announces {count} vertices") from exc
    points = np.stack([vertices[a] for a in "xyz"], axis=1).astype(np.float32)
    colors = None
    if {"red", "green", "blue"} <= names:
        colors = np.stack([vertices[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)
    return points, colors
