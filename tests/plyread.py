"""Reading back the PLY files the package writes (tests only: the package itself only writes PLY)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_TYPES = {"float": "<f4", "uchar": "u1"}


def load_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(N×3 float32 xyz, N×3 uint8 RGB or None) of a binary little-endian PLY with one vertex element.

    Raises:
        ValueError: not such a file, or truncated.
    """
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: not binary little-endian")
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    fields = [(line.split()[2], _TYPES[line.split()[1]]) for line in lines if line.startswith("property")]
    vertices = np.frombuffer(data, dtype=fields, count=count, offset=end + len(b"end_header\n"))
    points = np.stack([vertices[a] for a in "xyz"], axis=1).astype(np.float32)
    names = {name for name, _ in fields}
    colors = None
    if {"red", "green", "blue"} <= names:
        colors = np.stack([vertices[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)
    return points, colors
