"""Back-projection geometry and the PLY writer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from clip2depth.errors import ConfigError
from clip2depth.inference.pointcloud import Intrinsics, backproject, valid_mask
from clip2depth.io.ply import save_ply
from plyread import load_ply


def test_intrinsics_from_fov() -> None:
    k = Intrinsics.from_fov(90.0, 640, 480)
    assert k.fx == pytest.approx(320.0) and k.fy == k.fx
    assert (k.cx, k.cy) == (319.5, 239.5)
    assert Intrinsics.default_for(640, 480).fx == pytest.approx(320.0 / math.tan(math.radians(30.0)))
    with pytest.raises(ConfigError):
        Intrinsics.from_fov(180.0, 640, 480)


def test_fronto_parallel_plane_backprojects_to_a_plane_at_its_depth() -> None:
    z = 2.5
    k = Intrinsics(fx=100.0, fy=120.0, cx=3.5, cy=2.0)
    depth = np.full((5, 8), z)
    depth[0, 0], depth[4, 7] = 0.0, np.nan  # skipped

    points = backproject(depth, k)

    assert points.dtype == np.float32 and points.shape == (5 * 8 - 2, 3)
    assert (points[:, 2] == np.float32(z)).all()
    by_pixel = dict(zip(zip(*np.nonzero(valid_mask(depth)), strict=True), points, strict=True))
    for v, u in [(0, 1), (2, 3), (4, 0), (3, 6)]:
        x, y, _ = by_pixel[(v, u)]
        assert x == np.float32((u - k.cx) * z / k.fx)
        assert y == np.float32((v - k.cy) * z / k.fy)


def test_ply_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(50, 3), dtype=np.uint8)

    save_ply(tmp_path / "cloud.ply", points, colors)
    save_ply(tmp_path / "bare.ply", points)

    back, back_colors = load_ply(tmp_path / "cloud.ply")
    np.testing.assert_array_equal(back, points)
    np.testing.assert_array_equal(back_colors, colors)
    assert load_ply(tmp_path / "bare.ply")[1] is None
    assert (tmp_path / "cloud.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
