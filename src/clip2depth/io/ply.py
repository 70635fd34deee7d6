"""A minimal binary little-endian PLY writer and reader for coloured point clouds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clip2depth.errors import DataError
from clip2depth.io.atomic import atomic_write_bytes

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


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
