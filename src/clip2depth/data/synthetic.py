"""Procedural indoor-like scenes with exact metric depth, for tests, the demo and smoke training.

A pinhole camera stands in a box room (floor, ceiling and four walls: side walls 1.5–4 m away, the
back wall 3–8 m ahead) holding a few boxes and spheres. Every surface carries a solid texture
(checker, stripes or smooth noise, random colours) and is lit by a point light (Lambertian shading,
cast shadows from the objects), so images carry the usual monocular cues: perspective, texture
gradients, shading, occlusion and contact shadows. Light haze (aerial perspective: colours fade
towards a fixed grey with distance) adds a cue that local image features can read, which is what
lets a small model trained for two minutes on a random-weight CLIP learn more than the room layout.
Rays are cast analytically with numpy.

Camera frame: x right, y down, z forward; depth is the z coordinate in the camera frame (metres),
exact up to float32 rounding. The geometry keeps every depth below 10 m.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clip2depth.data.base import NYU_FOCAL, DepthDataset, Sample, Transform
from clip2depth.errors import ConfigError

logger = logging.getLogger(__name__)

SYNTHETIC_SPLITS = ("train", "val", "test")
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}
_SEQUENCE_STREAM = 3
_DEFAULT_LENGTH = {"train": 1000, "val": 100, "test": 100}

DEFAULT_SIZE = (240, 320)
"""Height and width of the rendered scenes unless a size is given."""

_EPS = 1e-6

_CHECKER, _STRIPES, _NOISE = 0, 1, 2
_HAZE_DENSITY = 0.2  # per metre of ray length: 67 % of the surface colour survives at 2 m, 20 % at 8 m
_HAZE_COLOR = (0.55, 0.58, 0.62)
# float32 halves the memory traffic of the ray casting; depths keep ~1e-7 relative precision.
_F = np.float32


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-from-camera rotation (radians): yaw about y, then pitch about x, then roll about z."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return (ry @ rx @ rz).astype(_F)


@dataclass
class _Texture:
    """A solid texture: two colours blended by a checker, stripe or smooth-noise pattern."""

    kind: int
    color0: np.ndarray  # (3,) RGB in [0, 1]
    color1: np.ndarray
    scale: float  # checker cell / stripe width, metres
    direction: np.ndarray  # (3,) stripe normal
    waves: np.ndarray  # (3, 3) wave vectors of the noise pattern, rad/m
    phases: np.ndarray  # (3,)

    def color(self, p: np.ndarray) -> np.ndarray:
        """RGB (N, 3) at points p (N, 3), metres."""
        if self.kind == _CHECKER:
            t = np.floor(p * _F(1.0 / self.scale)).astype(np.int64).sum(axis=1) % 2
        elif self.kind == _STRIPES:
            t = np.floor(p @ self.direction * _F(1.0 / self.scale)).astype(np.int64) % 2
        else:
            t = 0.5 + np.sin(p @ self.waves.T + self.phases).mean(axis=1) * 0.5
        t = t.astype(_F)[:, None]
        return self.color0 * (1 - t) + self.color1 * t


def _random_texture(rng: np.random.Generator) -> _Texture:
    direction = rng.normal(size=3)
    return _Texture(
        kind=int(rng.integers(0, 3)),
        color0=rng.uniform(0.1, 0.95, size=3).astype(_F),
        color1=rng.uniform(0.1, 0.95, size=3).astype(_F),
        scale=float(rng.uniform(0.15, 0.6)),
        direction=(direction / np.linalg.norm(direction)).astype(_F),
        waves=(rng.normal(size=(3, 3)) * rng.uniform(2.0, 8.0)).astype(_F),
        phases=rng.uniform(0, 2 * math.pi, size=3).astype(_F),
    )


@dataclass
class _Box:
    center: np.ndarray  # (3,) metres
    half: np.ndarray  # (3,) half extents, metres
    rot: np.ndarray  # (3, 3) world from box (a yaw)
    texture: _Texture


@dataclass
class _Sphere:
    center: np.ndarray
    radius: float
    texture: _Texture


@dataclass
class _Scene:
    """Room bounds (world frame, y down): x in [left, right], y in [ceiling, floor], z in [front, back]."""

    lo: np.ndarray
    hi: np.ndarray
    room_textures: list[_Texture]  # one per plane: x=lo, x=hi, y=lo, y=hi, z=lo, z=hi
    boxes: list[_Box]
    spheres: list[_Sphere]
    light: np.ndarray
    rotation: np.ndarray  # the camera's rest orientation (world from camera)
    ambient: float


def _vec(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=_F)


def _sample_scene(rng: np.random.Generator) -> _Scene:
    left, right = -rng.uniform(1.5, 4.0), rng.uniform(1.5, 4.0)
    ceiling, floor = -rng.uniform(0.9, 1.5), rng.uniform(1.2, 1.7)
    front, back = -rng.uniform(0.5, 2.0), rng.uniform(3.0, 8.0)

    # Objects stay inside the room and at least 1 m in front of the camera (and of its sequence path).
    boxes = []
    for _ in range(int(rng.integers(2, 6))):
        half = _vec(rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.75), rng.uniform(0.15, 0.6))
        reach = float(np.linalg.norm(half[[0, 2]]))
        z = rng.uniform(1.0 + reach, max(back - reach, 1.0 + reach + 1e-3))
        x = rng.uniform(left + reach, right - reach)
        rot = _rotation(rng.uniform(-math.pi, math.pi), 0.0, 0.0)
        boxes.append(_Box(_vec(x, floor - half[1], z), half, rot, _random_texture(rng)))

    spheres = []
    for _ in range(int(rng.integers(1, 4))):
        r = float(rng.uniform(0.2, 0.6))
        z = rng.uniform(1.0 + r, max(back - r, 1.0 + r + 1e-3))
        x = rng.uniform(left + r, right - r)
        on_floor = rng.random() < 0.6
        y = floor - r if on_floor else rng.uniform(ceiling + r + 0.2, floor - r)
        spheres.append(_Sphere(_vec(x, y, z), r, _random_texture(rng)))

    light = _vec(rng.uniform(left + 0.3, right - 0.3), ceiling + 0.15, rng.uniform(0.5, back - 0.3))
    rotation = _rotation(
        math.radians(rng.uniform(-20, 20)), math.radians(rng.uniform(-15, 5)), math.radians(rng.uniform(-3, 3))
    )
    return _Scene(
        lo=_vec(left, ceiling, front),
        hi=_vec(right, floor, back),
        room_textures=[_random_texture(rng) for _ in range(6)],
        boxes=boxes,
        spheres=spheres,
        light=light,
        rotation=rotation,
        ambient=float(rng.uniform(0.15, 0.35)),
    )


# --------------------------------------------------------------------------------------------------
# Ray casting. Rays: origins (3,) or (N, 3), unnormalised directions (N, 3); a hit is a ray
# parameter t > eps, inf for a miss.


def _hit_sphere(o: np.ndarray, d: np.ndarray, dd: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Nearest t where each ray (origin o (3,), directions d (N, 3), dd = |d|² (N,)) meets the sphere."""
    oc = o - center
    b = d @ oc
    c = _F(oc @ oc - radius**2)
    disc = b * b - dd * c
    sq = np.sqrt(np.maximum(disc, 0))
    t0 = (-b - sq) / dd
    t1 = (-b + sq) / dd
    t = np.where(t0 > _EPS, t0, np.where(t1 > _EPS, t1, np.inf))
    return np.where(disc >= 0, t, np.inf).astype(_F)


def _hit_box(o: np.ndarray, d: np.ndarray, dd: np.ndarray, box: _Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rays that hit the box: their indices, entry t and world face normals (facing the ray)."""
    # Slab tests only for rays that meet the bounding sphere: boxes cover a small part of the image.
    idx = np.flatnonzero(_hit_sphere(o, d, dd, box.center, float(np.linalg.norm(box.half))) < np.inf)
    ol = (o - box.center) @ box.rot  # box frame: R^T (x - c)
    dl = d[idx] @ box.rot
    t_near = np.full(idx.size, -np.inf, dtype=_F)
    t_far = np.full(idx.size, np.inf, dtype=_F)
    axis = np.zeros(idx.size, dtype=np.int64)
    for a in range(3):
        da = dl[:, a]
        inv = 1 / np.where(np.abs(da) < 1e-12, _F(1e-12), da)
        t1 = (-box.half[a] - ol[a]) * inv
        t2 = (box.half[a] - ol[a]) * inv
        lo = np.minimum(t1, t2)
        axis = np.where(lo > t_near, a, axis)
        t_near = np.maximum(t_near, lo)
        t_far = np.minimum(t_far, np.maximum(t1, t2))
    hit = (t_near <= t_far) & (t_near > _EPS)
    idx, t_near, axis, dl = idx[hit], t_near[hit], axis[hit], dl[hit]
    normal_local = np.zeros((idx.size, 3), dtype=_F)
    rows = np.arange(idx.size)
    normal_local[rows, axis] = -np.sign(dl[rows, axis])
    return idx, t_near, normal_local @ box.rot.T


def _hit_room(o: np.ndarray, d: np.ndarray, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """From inside the room each ray leaves through the nearest of the three planes it heads for:
    its t and plane id (0..5 = x_lo, x_hi, y_lo, y_hi, z_lo, z_hi)."""
    positive = d > 0
    bound = np.where(positive, scene.hi, scene.lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axis = (bound - o) / d
    t_axis = np.where(np.isfinite(t_axis), t_axis, np.inf)
    axis = t_axis.argmin(axis=1)
    rows = np.arange(d.shape[0])
    return t_axis[rows, axis], 2 * axis + positive[rows, axis]


def _shadowed(points: np.ndarray, scene: _Scene) -> np.ndarray:
    """Whether an object lies between the light and each point (N, 3)."""
    # Cast from the light towards the points: one shared origin keeps the tests cheap. A point is in
    # shadow when something is hit before it (t < 1, minus a margin for the point's own surface).
    d = points - scene.light
    dd = np.einsum("ij,ij->i", d, d)
    limit = _F(1 - 1e-3)
    blocked = np.zeros(len(points), dtype=bool)
    for box in scene.boxes:
        idx, t, _ = _hit_box(scene.light, d, dd, box)
        blocked[idx[t < limit]] = True
    for sphere in scene.spheres:
        blocked |= _hit_sphere(scene.light, d, dd, sphere.center, sphere.radius) < limit
    return blocked


_PLANE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=_F)
"""Room plane normals, facing into the room, indexed by plane id."""


def _render(
    scene: _Scene, position: np.ndarray, rotation: np.ndarray, size: tuple[int, int], focal: float
) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, 3) in [0, 1] and depth (H, W) metres seen from a camera at ``position``."""
    h, w = size
    xs = (np.arange(w, dtype=_F) + _F(0.5 - w / 2)) / _F(focal)
    ys = (np.arange(h, dtype=_F) + _F(0.5 - h / 2)) / _F(focal)
    cam = np.stack([np.tile(xs, h), np.repeat(ys, w), np.ones(h * w, dtype=_F)], axis=1)
    # Unnormalised directions with camera-z = 1: the ray parameter t *is* the camera-frame depth.
    d = cam @ rotation.T
    dd = np.einsum("ij,ij->i", d, d)
    o = np.asarray(position, dtype=_F)

    t, surface = _hit_room(o, d, scene)
    normals = _PLANE_NORMALS[surface]
    n_room = 6
    for k, box in enumerate(scene.boxes):
        idx, tb, nb = _hit_box(o, d, dd, box)
        closer = tb < t[idx]
        idx = idx[closer]
        t[idx] = tb[closer]
        surface[idx] = n_room + k
        normals[idx] = nb[closer]
    n_fixed = n_room + len(scene.boxes)
    for k, sphere in enumerate(scene.spheres):
        idx = np.flatnonzero(_hit_sphere(o, d, dd, sphere.center, sphere.radius) < t)
        if idx.size:
            # Recompute t on the few hit rays rather than keeping a full-size array per sphere.
            ts = _hit_sphere(o, d[idx], dd[idx], sphere.center, sphere.radius)
            t[idx] = ts
            surface[idx] = n_fixed + k
            normals[idx] = (o + ts[:, None] * d[idx] - sphere.center) / _F(sphere.radius)

    points = o + t[:, None] * d
    albedo = np.empty_like(points)
    textures = scene.room_textures + [b.texture for b in scene.boxes] + [s.texture for s in scene.spheres]
    order = np.argsort(surface, kind="stable")
    bounds = np.searchsorted(surface[order], np.arange(len(textures) + 1))
    for sid, texture in enumerate(textures):
        sel = order[bounds[sid] : bounds[sid + 1]]
        if sel.size == 0:
            continue
        p = points[sel]
        if n_room <= sid < n_fixed:  # boxes carry their texture with them (box frame)
            box = scene.boxes[sid - n_room]
            p = (p - box.center) @ box.rot
        albedo[sel] = texture.color(p)

    to_light = scene.light - points
    dist = np.sqrt(np.einsum("ij,ij->i", to_light, to_light))
    lambert = np.maximum(np.einsum("ij,ij->i", normals, to_light) / dist, 0)
    lit = np.flatnonzero(lambert > 0)
    lambert[lit[_shadowed(points[lit], scene)]] = 0
    falloff = 1 / (1 + _F(0.04) * dist**2)
    shade = _F(scene.ambient) + _F(1.3 * (1 - scene.ambient)) * lambert * falloff
    transmission = np.exp(-_F(_HAZE_DENSITY) * t * np.sqrt(dd))[:, None]
    color = albedo * shade[:, None] * transmission + np.asarray(_HAZE_COLOR, dtype=_F) * (1 - transmission)
    image = np.clip(color, 0, 1).reshape(h, w, 3)
    return image, t.reshape(h, w)


def _to_sample_tensors(image: np.ndarray, depth: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).contiguous()
    dep = torch.from_numpy(depth.astype(np.float32))[None]
    return img, dep


def synthetic_focal(width: int) -> float:
    """Focal length (pixels) of the synthetic camera: NYU's field of view at any width."""
    return NYU_FOCAL * width / 640.0


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = int(size[0]), int(size[1])
    if h < 8 or w < 8:
        raise ConfigError(f"synthetic image size must be at least 8×8, got {h}×{w}")
    return h, w


def render_sequence(
    seed: int, n_frames: int, size: tuple[int, int] = DEFAULT_SIZE, motion: float = 1.0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The same scene along a smooth camera path, for temporal-consistency checks.

    The camera sways on a bounded path (±0.25 m sideways, up to 0.3 m forward, yaw ±3°, pitch ±1.5°,
    roughly 2 cm and 0.25° per frame at ``motion=1``; ``motion`` scales every amplitude, 0 = static).

    Returns:
        ``(images, depths)``: ``n_frames`` tensors (3, H, W) in [0, 1] and (1, H, W) metres.
    """
    if n_frames < 1:
        raise ConfigError(f"n_frames must be at least 1, got {n_frames}")
    h, w = _check_size(size)
    rng = np.random.default_rng([seed, _SEQUENCE_STREAM])
    scene = _sample_scene(rng)
    phase = float(rng.uniform(0, 2 * math.pi))
    omega = 0.08
    images, depths = [], []
    for k in range(n_frames):
        a = omega * k
        position = motion * np.array([0.25 * math.sin(a + phase), 0.03 * math.sin(2 * a), 0.15 * (1 - math.cos(a))])
        local = _rotation(
            motion * math.radians(3.0) * math.sin(a), motion * math.radians(1.5) * math.sin(0.5 * a + phase), 0.0
        )
        image, depth = _render(scene, position, scene.rotation @ local, (h, w), synthetic_focal(w))
        img, dep = _to_sample_tensors(image, depth)
        images.append(img)
        depths.append(dep)
    return images, depths


class SyntheticDataset(DepthDataset):
    """Procedurally rendered indoor-like scenes (module docstring); nothing to download.

    Sample ``index`` of ``split`` with ``seed`` is the same on every call and machine; the three
    splits draw from disjoint random streams. Depth is exact and dense, in (0, 10) m.

    Args:
        split: ``train``, ``val`` or ``test``.
        size: (H, W) of the rendered images.
        length: number of samples (default 1000 for train, 100 for val/test).
        seed: selects another family of scenes.
        cache: keep rendered scenes in memory (float32 RGB + depth, 16 bytes a pixel) so that
            later epochs skip ray casting; per process, so use it with ``num_workers=0``.
        transform: applied to each sample.
    """

    min_depth = 1e-3
    max_depth = 10.0
    default_crop = None

    @classmethod
    def input_size(cls, **options: Any) -> tuple[int, int]:
        """The rendered size, ``options["size"]`` (default :data:`DEFAULT_SIZE`)."""
        h, w = options.get("size", DEFAULT_SIZE)
        return int(h), int(w)

    def __init__(
        self,
        split: str = "train",
        *,
        size: tuple[int, int] = DEFAULT_SIZE,
        length: int | None = None,
        seed: int = 0,
        cache: bool = False,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform=transform)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        if split not in SYNTHETIC_SPLITS:
            raise ConfigError(f"unknown synthetic split {split!r}; choose one of {', '.join(SYNTHETIC_SPLITS)}")
        self.split = split
        self.size = _check_size(size)
        self.length = _DEFAULT_LENGTH[split] if length is None else int(length)
        if self.length < 1:
            raise ConfigError(f"synthetic dataset length must be positive, got {self.length}")
        self.seed = int(seed)
        self.focal = synthetic_focal(self.size[1])

    def __len__(self) -> int:
        return self.length

    def _rendered(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng([self.seed, _SPLIT_STREAM[self.split], index])
        scene = _sample_scene(rng)
        rendered = _render(scene, np.zeros(3), scene.rotation, self.size, self.focal)
        if self._cache is not None:
            self._cache[index] = rendered
        return rendered

    def load(self, index: int) -> Sample:
        image, depth = self._rendered(index)
        img, dep = _to_sample_tensors(image, depth)
        return {
            "image": img,
            "depth": dep,
            "focal": self.focal,
            "path": f"synthetic://{self.split}/{self.seed}/{index}",
            "name": f"synthetic_{self.split}_{index:06d}",
        }
