"""What ``clip2depth predict`` writes for an input: formats, output names, and the writing itself.

Outputs of an image whose output name is ``<stem>`` (``base = out_dir / stem``, see
:mod:`clip2depth.inference.plan`): ``<stem>.png`` (``png16``: uint16, depth × ``depth_scale``, the scale in
its ``depth_scale`` text chunk), ``<stem>.npy`` (``npy``: float32 metres), ``<stem>_color.png``
(``color``), ``<stem>.ply`` and ``<stem>_camera.json`` (``ply``: coloured points in metres, and the
intrinsics used). A video gives ``<stem>_depth.mp4`` (``color``) and, with ``video_frames``,
``<stem>_frames/NNNNNN.*``. Every file is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clip2depth.errors import ConfigError
from clip2depth.inference.camera import CameraSpec, ImageCamera
from clip2depth.inference.pointcloud import backproject, valid_mask
from clip2depth.inference.storage import L, added
from clip2depth.io.atomic import atomic_path, atomic_write_json
from clip2depth.io.colour import colorize_depth
from clip2depth.io.depth import save_depth_npy, save_depth_png16
from clip2depth.io.inputs import is_video_path
from clip2depth.io.ply import save_ply

FORMATS: tuple[str, ...] = ("png16", "npy", "color", "ply")
"""Output formats, in the order they are documented."""

DEFAULT_FORMATS: tuple[str, ...] = ("png16", "color")

_SUFFIXES = {"png16": ".png", "npy": ".npy", "color": "_color.png", "ply": ".ply"}
CAMERA_SUFFIX = "_camera.json"
VIDEO_SUFFIX = "_depth.mp4"
FRAMES_SUFFIX = "_frames"


def parse_formats(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"png16,ply"`` or ``["png16", "ply"]`` → ``("png16", "ply")``.

    Case and spaces are ignored, repeats dropped, the given order kept.

    Raises:
        ConfigError: an unknown format, or none at all; the message lists the valid ones.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    valid = f"valid formats: {', '.join(FORMATS)} (comma-separated, e.g. png16,color)"
    formats: list[str] = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name not in FORMATS:
            raise ConfigError(f"unknown output format {item.strip()!r}; {valid}")
        if name not in formats:
            formats.append(name)
    if not formats:
        raise ConfigError(f"no output format given; {valid}")
    return tuple(formats)


@dataclass(frozen=True)
class OutputOptions:
    """What is written for each input; checked when built.

    Attributes:
        formats: any of :data:`FORMATS` (a comma-separated string is accepted too).
        depth_scale: PNG16 units per metre (1000: millimetres; KITTI uses 256).
        camera: intrinsics for point clouds (default: each photo's EXIF, else 60°).
        cmap: matplotlib colour map of the ``color`` output (near = warm end).
        vmin, vmax: depth (metres) at the near and far ends of the colour map; None: the image's own
            min / max valid depth (for a video: those of its first batch of frames).
        colorbar: append a bar labelled in metres to the right of colour images and videos (wider image).
        video_frames: for videos, also write per-frame files for ``png16``/``npy``/``ply``.

    Raises:
        ConfigError: a value out of range, an unknown format or colour map; the message names the field.
    """

    formats: tuple[str, ...] = DEFAULT_FORMATS
    depth_scale: float = 1000.0
    camera: CameraSpec = field(default_factory=CameraSpec)
    cmap: str = "turbo"
    vmin: float | None = None
    vmax: float | None = None
    colorbar: bool = False
    video_frames: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if not (math.isfinite(self.depth_scale) and self.depth_scale > 0):
            raise ConfigError(f"depth_scale={self.depth_scale:g} is not a scale: give the positive number of PNG "
                              "units per metre (1000 for millimetres, 256 for KITTI)", params=("depth_scale",))
        for name in ("vmin", "vmax"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}={value:g} is not a depth: give metres (0 or more)", params=(name,))
        if self.vmin is not None and self.vmax is not None and self.vmin >= self.vmax:
            raise ConfigError(f"vmin={self.vmin:g} must be smaller than vmax={self.vmax:g}: they are the depths "
                              "(metres) at the near and far ends of the colour map", params=("vmin", "vmax"))
        if "color" in self.formats:
            colorize_depth(np.ones((1, 1)), cmap=self.cmap)  # an unknown colour map fails now, not per image

    @property
    def frame_formats(self) -> tuple[str, ...]:
        """Formats written per video frame: all but ``color`` with ``video_frames``, else none."""
        return tuple(f for f in self.formats if f != "color") if self.video_frames else ()


def output_path(base: L, fmt: str) -> L:
    """Where format ``fmt`` of the output name ``base`` (``out_dir / stem``, a path or URL) is written."""
    return added(base, _SUFFIXES[fmt])


def output_paths(base: L, fmt: str) -> list[L]:
    """Every file format ``fmt`` writes for ``base``: its :func:`output_path`, and for ``ply`` the camera file."""
    paths = [output_path(base, fmt)]
    if fmt == "ply":
        paths.append(added(base, CAMERA_SUFFIX))
    return paths


def video_path(base: L) -> L:
    """The colour depth video of a video input with output name ``base``."""
    return added(base, VIDEO_SUFFIX)


def frames_dir(base: L) -> L:
    """The folder of per-frame files of a video input with output name ``base``."""
    return added(base, FRAMES_SUFFIX)


def output_targets(path: Path | str, base: L, options: OutputOptions) -> list[L]:
    """The files (and, for video frames, the folder) that predicting ``path`` into ``base`` writes."""
    if not is_video_path(path):
        return [p for fmt in options.formats for p in output_paths(base, fmt)]
    targets = [video_path(base)] if "color" in options.formats else []
    if options.frame_formats:
        targets.append(frames_dir(base))
    return targets


def write_depth_files(
    base: Path,
    rgb: np.ndarray,
    depth_m: np.ndarray,
    options: OutputOptions,
    formats: Sequence[str] | None = None,
    *,
    camera: ImageCamera | None = None,
) -> list[Path]:
    """Write the files of one image or frame, each atomically.

    Args:
        base: output path without extension, ``out_dir / stem``; see :func:`output_path`.
        rgb: H×W×3 uint8, the image as predicted (colours of the point cloud).
        depth_m: H×W depth in metres; NaN, inf and ≤ 0 are invalid (0 in PNG16, no point in PLY).
        options: scale, colour map and range, camera.
        formats: subset of ``options.formats`` to write; default all of them.
        camera: the intrinsics for ``ply`` (:func:`~clip2depth.inference.camera.image_camera` reads a photo's
            EXIF); default ``options.camera`` resolved for the image's size.

    Returns:
        The paths written, in format order.
    """
    written = []
    for fmt in options.formats if formats is None else formats:
        path = output_path(base, fmt)
        if fmt == "png16":
            save_depth_png16(depth_m, path, scale=options.depth_scale)
        elif fmt == "npy":
            save_depth_npy(depth_m, path)
        elif fmt == "color":
            colour = colorize_depth(
                depth_m, cmap=options.cmap, vmin=options.vmin, vmax=options.vmax, colorbar=options.colorbar
            )
            with atomic_path(path) as tmp:
                Image.fromarray(colour).save(tmp, format="PNG")
        elif fmt == "ply":
            height, width = depth_m.shape
            used = camera if camera is not None else options.camera.resolve(width, height)
            save_ply(path, backproject(depth_m, used.intrinsics), rgb[valid_mask(depth_m)])
            camera_file = output_paths(base, fmt)[1]
            atomic_write_json(camera_file, used.to_json())
            written += [path, camera_file]
            continue
        written.append(path)
    return written
