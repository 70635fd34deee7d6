"""A minimal binary little-endian PLY writer for coloured point clouds."""

from __future__ import annotations

import os

import numpy as np

from clip2depth.io.atomic import atomic_write_bytes


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
