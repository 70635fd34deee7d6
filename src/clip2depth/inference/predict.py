"""Depth for users' own files: images, folders, glob patterns and videos → depth maps, colour images, point clouds.

The library behind ``clip2depth predict``; the command only parses flags and prints the report::

    from clip2depth import create_model
    from clip2depth.inference.predict import CameraSpec, PredictOptions, predict_paths

    model = create_model("runs/nyu/best", device="cuda")
    options = PredictOptions(formats=("png16", "ply"), camera=CameraSpec(fov_deg=70))
    report = predict_paths(model, ["photos/", "clip.mp4"], out_dir="depth", options=options)
    for path, reason in report.failed:
        print(f"{path}: {reason}")

Outputs of an image with output name ``<stem>`` (from :func:`clip2depth.io.inputs.find_files`), in ``out_dir``:
``<stem>.png`` (``png16``: uint16, depth × ``depth_scale``, the scale in its ``depth_scale`` text chunk),
``<stem>.npy`` (``npy``: float32 metres), ``<stem>_color.png`` (``color``), ``<stem>.ply`` and
``<stem>_camera.json`` (``ply``: coloured points in metres, and the intrinsics used). A video gives
``<stem>_depth.mp4`` (``color``) and, with ``video_frames``, ``<stem>_frames/NNNNNN.*``.
A bad input never ends the run: it is reported in :attr:`PredictReport.failed` and the rest goes on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from clip2depth.errors import Clip2DepthError, ConfigError, DataError
from clip2depth.inference.pointcloud import DEFAULT_FOV_DEG, Intrinsics, backproject, valid_mask
from clip2depth.io.atomic import atomic_path, atomic_write_json
from clip2depth.io.colour import colorize_depth, depth_range
from clip2depth.io.depth import save_depth_npy, save_depth_png16
from clip2depth.io.images import exif_focal_35mm, focal_pixels_from_35mm, load_image
from clip2depth.io.inputs import FoundFile, find_files, is_video_path
from clip2depth.io.ply import save_ply
from clip2depth.io.progress import progress as progress_bar
from clip2depth.io.video import VideoWriter, iter_video_frames, video_info
from clip2depth.models.infer import PRECISIONS, image_tensor, network_size, predict_batch, size_batches

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("png16", "npy", "color", "ply")
"""Output formats, in the order they are documented."""

DEFAULT_FORMATS: tuple[str, ...] = ("png16", "color")

DEFAULT_MAX_SIDE = 1600
"""Longest side in pixels above which images are predicted downscaled (outputs stay full size)."""

DEFAULT_VIDEO_FPS = 30.0
"""Frame rate of the depth video when the input video does not state one."""

_SUFFIXES = {"png16": ".png", "npy": ".npy", "color": "_color.png", "ply": ".ply"}
CAMERA_SUFFIX = "_camera.json"
CAMERA_CONVENTION = "pinhole, pixels; x right, y down, z forward (metres); pixel centres at integer coordinates"
"""Written next to each point cloud: the intrinsics it was lifted with, and where they came from."""
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
class CameraSpec:
    """What is known about the camera, in pixels of the image as displayed (after EXIF rotation).

    Resolved for each image size by :meth:`intrinsics`:

    - no focal length given: the image's EXIF 35 mm equivalent focal length when it has one
      (:func:`~clip2depth.io.images.focal_pixels_from_35mm`), else
      :data:`~clip2depth.inference.pointcloud.DEFAULT_FOV_DEG` (60°) horizontal field of view, square pixels;
    - ``fov_deg``: that horizontal field of view, square pixels;
    - ``fx`` and/or ``fy``: a missing one equals the other (square pixels);
    - ``cx``, ``cy``: default to the image centre ``((W - 1) / 2, (H - 1) / 2)`` in every case.

    Raises:
        ConfigError: ``fov_deg`` together with ``fx``/``fy``, a focal length ≤ 0, a FOV outside (0, 180).
    """

    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None
    fov_deg: float | None = None

    def __post_init__(self) -> None:
        if self.fov_deg is not None and (self.fx is not None or self.fy is not None):
            raise ConfigError("give the focal length either as a field of view (--fov) or as --fx/--fy, not both")
        if self.fov_deg is not None and not 0.0 < self.fov_deg < 180.0:
            raise ConfigError(f"--fov must be between 0 and 180 degrees (exclusive), got {self.fov_deg}")
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name} must be a positive focal length in pixels, got {value}")
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"--{name} must be a finite pixel coordinate, got {value}")

    @property
    def focal_unknown(self) -> bool:
        """Whether no focal length was given (neither ``fx``/``fy`` nor ``fov_deg``): EXIF or 60° applies."""
        return self.fx is None and self.fy is None and self.fov_deg is None

    def intrinsics(self, width: int, height: int, focal_35mm: float | None = None) -> Intrinsics:
        """Pinhole intrinsics for a ``width``×``height`` image (see the class docstring for the rules)."""
        return self.resolve(width, height, focal_35mm)[0]

    def resolve(self, width: int, height: int, focal_35mm: float | None = None) -> tuple[Intrinsics, str]:
        """:meth:`intrinsics` and a phrase saying where the focal length came from (logs, ``_camera.json``).

        ``focal_35mm`` (the image's EXIF 35 mm equivalent focal length, mm) applies only when no focal
        length was given.
        """
        if self.fx is not None or self.fy is not None:  # square pixels: a missing one equals the given one
            fx = self.fx if self.fx is not None else self.fy
            fy = self.fy if self.fy is not None else self.fx
            source = "--fx/--fy"
        elif self.fov_deg is not None:
            fx = fy = Intrinsics.from_fov(self.fov_deg, width, height).fx
            source = f"--fov {self.fov_deg:g}"
        elif focal_35mm is not None:
            fx = fy = focal_pixels_from_35mm(focal_35mm, width, height)
            source = f"EXIF 35 mm equivalent focal length {focal_35mm:g} mm"
        else:
            fx = fy = Intrinsics.default_for(width, height).fx
            source = f"default {DEFAULT_FOV_DEG:g} degree horizontal field of view (camera unknown)"
        return Intrinsics(
            fx=fx,
            fy=fy,
            cx=(width - 1) / 2.0 if self.cx is None else self.cx,
            cy=(height - 1) / 2.0 if self.cy is None else self.cy,
        ), source


@dataclass(frozen=True)
class PredictOptions:
    """How :func:`predict_paths` processes its inputs and what it writes; checked when built.

    Attributes:
        formats: any of :data:`FORMATS` (a comma-separated string is accepted too).
        depth_scale: PNG16 units per metre (1000: millimetres; KITTI uses 256).
        camera: intrinsics for point clouds.
        batch_size: images of the same size predicted together.
        max_side: longer images are predicted downscaled to this longest side, with a warning;
            outputs stay at the original size. None: no limit.
        cmap: matplotlib colour map of the ``color`` output (near = warm end).
        vmin, vmax: depth (metres) at the near and far ends of the colour map; None: the image's own
            min / max valid depth (for a video: those of its first batch of frames).
        colorbar: append a bar labelled in metres to the right of colour images and videos (wider image).
        flip_tta: average with the prediction on the horizontally flipped image.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; see :func:`clip2depth.models.infer.predict_depth`).
        video_frames: for videos, also write per-frame files for ``png16``/``npy``/``ply``.
        skip_existing: an input whose outputs all exist already is skipped (counted in the report), so
            an interrupted run over a big folder can be continued.

    Raises:
        ConfigError: any value out of range, an unknown format or colour map.
    """

    formats: tuple[str, ...] = DEFAULT_FORMATS
    depth_scale: float = 1000.0
    camera: CameraSpec = field(default_factory=CameraSpec)
    batch_size: int = 4
    max_side: int | None = DEFAULT_MAX_SIDE
    cmap: str = "turbo"
    vmin: float | None = None
    vmax: float | None = None
    colorbar: bool = False
    flip_tta: bool = False
    precision: str = "fp32"
    video_frames: bool = False
    skip_existing: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if not (math.isfinite(self.depth_scale) and self.depth_scale > 0):
            raise ConfigError(
                f"--depth-scale must be positive (PNG units per metre: 1000 for millimetres, 256 for KITTI), "
                f"got {self.depth_scale}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_side is not None and self.max_side < 1:
            raise ConfigError(
                f"--max-side must be a positive number of pixels (or 'none' for no limit), got {self.max_side}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("vmin", "vmax"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"--{name} must be a depth in metres (0 or more), got {value}")
        if self.vmin is not None and self.vmax is not None and self.vmin >= self.vmax:
            raise ConfigError(
                f"--vmin ({self.vmin:g} m) must be smaller than --vmax ({self.vmax:g} m): they are the near and "
                f"far ends of the colour map"
            )
        if "color" in self.formats:
            colorize_depth(np.ones((1, 1)), cmap=self.cmap)  # an unknown colour map fails now, not per image


@dataclass
class PredictReport:
    """What :func:`predict_paths` did.

    Attributes:
        matched: input files found (images and videos, readable or not).
        succeeded: inputs whose outputs were all written, in input order.
        skipped: inputs left alone because their outputs existed (``skip_existing``), in input order.
        failed: ``(input, reason)`` for each input that matched nothing or failed, in input order.
        outputs: every file written.
    """

    matched: int = 0
    succeeded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """Command exit status: 0 if any input succeeded or was already done, else 1 (nothing usable)."""
        return 0 if self.succeeded or self.skipped else 1

    def summary(self, out_dir: str | os.PathLike[str]) -> str:
        """One line: ``12 of 14 inputs done (3 already done, skipped), 2 failed; 36 files written to depth``."""
        done = len(self.succeeded) + len(self.skipped)
        text = f"{done} of {self.matched} inputs done"
        if self.skipped:
            text += f" ({len(self.skipped)} already done, skipped)"
        if self.failed:
            text += f", {len(self.failed)} failed"
        return f"{text}; {len(self.outputs)} files written to {out_dir}"


def _frame_formats(options: PredictOptions) -> list[str]:
    return [f for f in options.formats if f != "color"] if options.video_frames else []


def output_targets(path: Path, base: Path, options: PredictOptions) -> list[Path]:
    """The files (and, for video frames, the folder) that predicting ``path`` into ``base`` writes."""
    if not is_video_path(path):
        return [p for fmt in options.formats for p in output_paths(base, fmt)]
    targets = [base.with_name(base.name + VIDEO_SUFFIX)] if "color" in options.formats else []
    if _frame_formats(options):
        targets.append(base.with_name(base.name + FRAMES_SUFFIX))
    return targets


def existing_outputs(
    files: Sequence[FoundFile], out_dir: str | os.PathLike[str], options: PredictOptions
) -> list[Path]:
    """Outputs of ``files`` (from :func:`find_inputs`) that already exist in ``out_dir``: an earlier run's results."""
    out = Path(out_dir)
    return [t for f in files for t in output_targets(f.path, out / f.name, options) if t.exists()]


def find_inputs(
    inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> tuple[list[FoundFile], list[tuple[str, str]]]:
    """Input files and their output names (files, folders, glob patterns; see :func:`clip2depth.io.inputs.find_files`).

    When ``out_dir`` lies inside an input folder, the files under it are skipped (with a warning):
    they are the outputs of an earlier run, not inputs.

    Returns:
        ``(paths, problems)``: ``problems`` holds ``(input, reason)`` for inputs that match nothing.
    """
    files, problems = find_files(inputs)
    out = Path(out_dir).expanduser().resolve()
    roots = {f.root.resolve() for f in files if f.root is not None}
    if any(out != root and out.is_relative_to(root) for root in roots):
        kept = [f for f in files if f.root is None or not f.path.resolve().is_relative_to(out)]
        if len(kept) < len(files):
            logger.warning("skipping %d files inside the output folder %s", len(files) - len(kept), out_dir)
        files = kept
    return files, problems


def output_path(base: Path, fmt: str) -> Path:
    """Where format ``fmt`` of the output name ``base`` (``out_dir / stem``) is written."""
    return base.with_name(base.name + _SUFFIXES[fmt])


def output_paths(base: Path, fmt: str) -> list[Path]:
    """Every file format ``fmt`` writes for ``base``: its :func:`output_path`, and for ``ply`` the camera file."""
    paths = [output_path(base, fmt)]
    if fmt == "ply":
        paths.append(base.with_name(base.name + CAMERA_SUFFIX))
    return paths


def write_outputs(
    base: Path,
    rgb: np.ndarray,
    depth_m: np.ndarray,
    options: PredictOptions,
    formats: Sequence[str] | None = None,
    *,
    focal_35mm: float | None = None,
) -> list[Path]:
    """Write the files of one image or frame, each atomically.

    Args:
        base: output path without extension, ``out_dir / stem``; see :func:`output_path`.
        rgb: H×W×3 uint8, the image as predicted (colours of the point cloud).
        depth_m: H×W depth in metres; NaN, inf and ≤ 0 are invalid (0 in PNG16, no point in PLY).
        options: scale, colour map and range, camera.
        formats: subset of ``options.formats`` to write; default all of them.
        focal_35mm: the image's EXIF 35 mm equivalent focal length (mm), used for ``ply`` when
            ``options.camera`` gives nothing.

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
            intrinsics, source = options.camera.resolve(width, height, focal_35mm)
            save_ply(path, backproject(depth_m, intrinsics), rgb[valid_mask(depth_m)])
            camera = output_paths(base, fmt)[1]
            atomic_write_json(camera, {"width": width, "height": height, **asdict(intrinsics), "source": source,
                                       "convention": CAMERA_CONVENTION})  # fmt: skip
            written += [path, camera]
            continue
        written.append(path)
    return written


def predict_paths(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
    progress: bool = True,
) -> PredictReport:
    """Predict depth for files, folders, glob patterns and videos, and write the requested outputs.

    Images are read as a viewer shows them (:func:`clip2depth.io.images.load_image`: EXIF orientation,
    grayscale, alpha, 16-bit, palette) and streamed: at most ``4 × batch_size`` are held in memory,
    and images of the same size are predicted together (:func:`clip2depth.models.infer.size_batches`).
    Videos are predicted frame by frame. Existing outputs are replaced, or with ``skip_existing`` kept
    (and the input skipped). An input whose output would overwrite an input file, or another input's
    output, is refused.

    Args:
        model: the depth model (on the device to use): anything :func:`~clip2depth.models.infer.predict_depth`
            runs, e.g. a :class:`~clip2depth.models.model.Clip2Depth`.
        inputs: files, folders (searched recursively) and glob patterns (see :func:`find_inputs`).
        out_dir: output folder, created when missing.
        options: what to write and how; default :class:`PredictOptions()`.
        progress: show a progress bar on stderr (when it is a terminal; see :mod:`clip2depth.io.progress`).

    Returns:
        The report; see :attr:`PredictReport.exit_code` for a command's exit status.
    """
    options = options or PredictOptions()
    out_dir = Path(out_dir)
    files, problems = find_inputs(inputs, out_dir)
    run = _Run(model, out_dir, options)
    for raw, reason in problems:
        run.failed.append((-1, raw, reason))
    jobs = run.plan(files)
    if "ply" in options.formats and options.camera.focal_unknown:
        logger.info(
            "point clouds use each photo's EXIF 35 mm equivalent focal length, or else a %.0f° horizontal field of "
            "view; give the camera's (--fov or --fx/--fy/--cx/--cy) for true geometry",
            DEFAULT_FOV_DEG,
        )
    with ExitStack() as stack:
        bar = stack.enter_context(progress_bar(total=len(jobs), enabled=progress, desc="predict", unit="file"))
        if not bar.disable:
            stack.enter_context(logging_redirect_tqdm())
        run.bar = bar
        run.images([job for job in jobs if not is_video_path(job.path)])
        for job in jobs:
            if is_video_path(job.path):
                run.video(job)
    return run.report(matched=len(files))


# --------------------------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Job:
    index: int
    path: Path
    base: Path  # out_dir / stem


@dataclass(frozen=True)
class _Loaded:
    job: _Job
    rgb: np.ndarray  # H×W×3 uint8, as displayed
    focal_35mm: float | None


def _reason(path: Path, exc: BaseException) -> str:
    """The exception's message without the leading ``"<path>: "`` (the report already names the input)."""
    message, prefix = str(exc), f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


_OOM_HINT = "lower --batch-size or --max-side"


class _Run:
    """State of one :func:`predict_paths` call: results so far, in input order once sorted."""

    def __init__(self, model: nn.Module, out_dir: Path, options: PredictOptions) -> None:
        self.model = model
        self.out_dir = out_dir
        self.options = options
        self.bar: tqdm | None = None
        self.succeeded: list[tuple[int, Path]] = []
        self.skipped: list[tuple[int, Path]] = []
        self.failed: list[tuple[int, str, str]] = []
        self.outputs: list[Path] = []

    def report(self, matched: int) -> PredictReport:
        return PredictReport(
            matched=matched,
            succeeded=[path for _, path in sorted(self.succeeded, key=lambda item: item[0])],
            skipped=[path for _, path in sorted(self.skipped, key=lambda item: item[0])],
            failed=[(raw, reason) for _, raw, reason in sorted(self.failed, key=lambda item: item[0])],
            outputs=self.outputs,
        )

    def succeed(self, job: _Job, outputs: list[Path]) -> None:
        self.succeeded.append((job.index, job.path))
        self.outputs.extend(outputs)
        self._advance()

    def fail(self, job: _Job, reason: str) -> None:
        logger.debug("%s failed: %s", job.path, reason)  # callers report PredictReport.failed
        self.failed.append((job.index, str(job.path), reason))
        self._advance()

    def _advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def plan(self, files: list[FoundFile]) -> list[_Job]:
        """Jobs for ``files``; an input whose outputs would overwrite an input or another output fails, one
        whose outputs all exist is skipped with ``skip_existing``."""
        inputs = {f.path.resolve() for f in files}
        claimed: dict[Path, Path] = {}
        jobs = []
        for index, found in enumerate(files):
            job = _Job(index, found.path, self.out_dir / found.name)
            targets = output_targets(job.path, job.base, self.options)
            resolved = [t.resolve() for t in targets]
            clash = next((t for t in resolved if t in inputs or t in claimed), None)
            if clash in inputs:
                self.fail(job, f"its output {clash} would overwrite an input file; choose another output folder")
            elif clash is not None:
                self.fail(job, f"its output {clash} would also be that of {claimed[clash]}; rename one of them "
                               f"or predict them into separate --out folders")  # fmt: skip
            else:
                claimed.update(dict.fromkeys(resolved, found.path))
                if self.options.skip_existing and all(t.exists() for t in targets):
                    self.skipped.append((index, found.path))
                else:
                    jobs.append(job)
        return jobs

    def _warn_if_large(self, path: Path, height: int, width: int) -> None:
        max_side = self.options.max_side
        if max_side is not None and max(height, width) > max_side:
            net_h, net_w = network_size(height, width, self.model.patch_size, max_side=max_side)
            logger.warning(
                "%s: %d×%d is larger than the maximum side %d; predicting at %d×%d, outputs at full size",
                path, width, height, max_side, net_w, net_h,
            )  # fmt: skip

    def _infer(self, images: list[np.ndarray]) -> list[np.ndarray]:
        options = self.options
        return predict_batch(self.model, [image_tensor(rgb) for rgb in images], max_side=options.max_side,
                             flip_tta=options.flip_tta, precision=options.precision)  # fmt: skip

    # ------------------------------------------------------------------ images

    def images(self, jobs: list[_Job]) -> None:
        """Load images one by one and predict them in same-size batches (memory stays bounded)."""
        batches = size_batches(self._load(jobs), size=lambda item: item.rgb.shape, batch_size=self.options.batch_size)
        for batch in batches:
            self._predict_batch(batch)

    def _load(self, jobs: list[_Job]) -> Iterator[_Loaded]:
        wants_exif = "ply" in self.options.formats and self.options.camera.focal_unknown
        for job in jobs:
            try:
                rgb = load_image(job.path)
            except DataError as exc:
                self.fail(job, _reason(job.path, exc))
                continue
            self._warn_if_large(job.path, *rgb.shape[:2])
            focal = exif_focal_35mm(job.path) if wants_exif else None
            if focal is not None:
                logger.info("%s: point cloud from its EXIF 35 mm equivalent focal length, %g mm", job.path, focal)
            yield _Loaded(job, rgb, focal)

    def _predict_batch(self, batch: list[_Loaded]) -> None:
        try:
            depths = self._infer([item.rgb for item in batch])
        except torch.cuda.OutOfMemoryError:
            height, width = batch[0].rgb.shape[:2]
            for item in batch:
                self.fail(item.job, f"out of GPU memory for {len(batch)} image(s) of {width}×{height}; {_OOM_HINT}")
            return
        for item, depth in zip(batch, depths, strict=True):
            try:
                outputs = write_outputs(item.job.base, item.rgb, depth, self.options, focal_35mm=item.focal_35mm)
            except (Clip2DepthError, OSError) as exc:
                self.fail(item.job, f"cannot write outputs: {exc}")
            else:
                self.succeed(item.job, outputs)

    # ------------------------------------------------------------------ videos

    def video(self, job: _Job) -> None:
        """Predict a video frame by frame: a colour depth video and/or per-frame files."""
        options = self.options
        frame_formats = _frame_formats(self.options)
        if "color" not in options.formats and not frame_formats:
            self.fail(job, "nothing to write for a video: add 'color' to the formats (a depth video) "
                           "or ask for per-frame files (--save-frames)")  # fmt: skip
            return
        written: list[Path] = []
        try:
            written = self._video(job, frame_formats)
        except torch.cuda.OutOfMemoryError:
            self.fail(job, f"out of GPU memory; {_OOM_HINT}")
        except (Clip2DepthError, OSError) as exc:
            self.fail(job, _reason(job.path, exc))
        else:
            self.succeed(job, written)

    def _video(self, job: _Job, frame_formats: list[str]) -> list[Path]:
        options = self.options
        info = video_info(job.path)
        fps = info.fps
        if not fps:
            logger.warning("%s: no frame rate stated; writing the depth video at %g fps", job.path, DEFAULT_VIDEO_FPS)
            fps = DEFAULT_VIDEO_FPS
        self._warn_if_large(job.path, info.height, info.width)
        video_path = job.base.with_name(job.base.name + VIDEO_SUFFIX)
        frames_dir = job.base.with_name(job.base.name + FRAMES_SUFFIX)
        written: list[Path] = []
        writer: VideoWriter | None = None
        colour_range: tuple[float, float] | None = None
        count = 0
        shown = self.bar is not None and not self.bar.disable
        with ExitStack() as stack:
            frame_bar = stack.enter_context(progress_bar(total=info.frame_count, enabled=shown, desc=job.path.name,
                                                         unit="frame", leave=False, position=1))  # fmt: skip
            frames = size_batches(iter_video_frames(job.path), size=np.shape, batch_size=options.batch_size,
                                  in_order=True)  # fmt: skip
            for batch in frames:
                depths = self._infer(batch)
                if colour_range is None:  # one scale for the whole video, so a colour means one depth
                    lo, hi = depth_range(np.concatenate(depths))
                    colour_range = (lo if options.vmin is None else options.vmin,
                                    hi if options.vmax is None else options.vmax)  # fmt: skip
                for rgb, depth in zip(batch, depths, strict=True):
                    if frame_formats:
                        written += write_outputs(frames_dir / f"{count:06d}", rgb, depth, options, frame_formats)
                    if "color" in options.formats:
                        colour = colorize_depth(
                            depth, cmap=options.cmap, vmin=colour_range[0], vmax=colour_range[1],
                            colorbar=options.colorbar,
                        )  # fmt: skip
                        if writer is None:
                            size = (colour.shape[1], colour.shape[0])
                            writer = stack.enter_context(VideoWriter(video_path, fps=fps, size=size))
                        writer.write(colour)
                    count += 1
                frame_bar.update(len(batch))
        if writer is not None:
            written.append(video_path)
        logger.debug("%s: %d frames", job.path, count)
        return written
