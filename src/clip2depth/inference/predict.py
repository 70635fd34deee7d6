"""Depth for users' own files: images, folders, glob patterns and videos → depth maps, colour images, point clouds.

The library behind ``clip2depth predict``; the command only parses flags and prints the report::

    from clip2depth import create_model
    from clip2depth.inference.predict import CameraSpec, PredictOptions, predict_paths

    model = create_model("runs/nyu/best", device="cuda")
    options = PredictOptions(formats=("png16", "ply"), camera=CameraSpec(fov_deg=70))
    report = predict_paths(model, ["photos/", "clip.mp4"], out_dir="depth", options=options)
    for path, reason in report.failed:
        print(f"{path}: {reason}")

Outputs of an image with output name ``<stem>`` (from :func:`clip2depth.io.inputs.output_stems`), in ``out_dir``:
``<stem>.png`` (``png16``: uint16, depth × ``depth_scale``), ``<stem>.npy`` (``npy``: float32 metres),
``<stem>_color.png`` (``color``), ``<stem>.ply`` (``ply``: coloured points, metres). A video gives
``<stem>_depth.mp4`` (``color``) and, with ``video_frames``, ``<stem>_frames/NNNNNN.{png,npy,ply}``.
A bad input never ends the run: it is reported in :attr:`PredictReport.failed` and the rest goes on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from clip2depth.errors import Clip2DepthError, ConfigError, DataError
from clip2depth.inference.pointcloud import DEFAULT_FOV_DEG, Intrinsics, backproject, valid_mask
from clip2depth.io.atomic import atomic_path
from clip2depth.io.colour import colorize_depth, depth_range
from clip2depth.io.depth import save_depth_npy, save_depth_png16
from clip2depth.io.images import load_image
from clip2depth.io.inputs import expand_inputs, is_video_path, output_stems
from clip2depth.io.ply import save_ply
from clip2depth.io.video import VideoWriter, iter_video_frames, video_info
from clip2depth.models.clip2depth import Clip2Depth
from clip2depth.models.infer import network_size

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("png16", "npy", "color", "ply")
"""Output formats, in the order they are documented."""

DEFAULT_FORMATS: tuple[str, ...] = ("png16", "color")

DEFAULT_MAX_SIDE = 1600
"""Longest side in pixels above which images are predicted downscaled (outputs stay full size)."""

DEFAULT_VIDEO_FPS = 30.0
"""Frame rate of the depth video when the input video does not state one."""

_SUFFIXES = {"png16": ".png", "npy": ".npy", "color": "_color.png", "ply": ".ply"}
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

    - nothing given: :data:`~clip2depth.inference.pointcloud.DEFAULT_FOV_DEG` (60°) horizontal field of view,
      principal point at the image centre (:meth:`Intrinsics.default_for`);
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
            raise ConfigError(f"field of view must be between 0 and 180 degrees, got {self.fov_deg}")
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive focal length in pixels, got {value}")
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite pixel coordinate, got {value}")

    @property
    def is_default(self) -> bool:
        """Whether nothing was given, so the 60° default applies."""
        return all(v is None for v in (self.fx, self.fy, self.cx, self.cy, self.fov_deg))

    def intrinsics(self, width: int, height: int) -> Intrinsics:
        """Pinhole intrinsics for a ``width``×``height`` image (see the class docstring for the rules)."""
        if self.is_default:
            return Intrinsics.default_for(width, height)
        if self.fx is None and self.fy is None:
            fov = self.fov_deg if self.fov_deg is not None else DEFAULT_FOV_DEG
            fx = fy = Intrinsics.from_fov(fov, width, height).fx
        else:  # square pixels: a missing focal length equals the given one
            fx = self.fx if self.fx is not None else self.fy
            fy = self.fy if self.fy is not None else self.fx
        return Intrinsics(
            fx=fx,
            fy=fy,
            cx=(width - 1) / 2.0 if self.cx is None else self.cx,
            cy=(height - 1) / 2.0 if self.cy is None else self.cy,
        )


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
        colorbar: append a bar labelled in metres to colour images and videos.
        flip_tta: average with the prediction on the horizontally flipped image.
        video_frames: for videos, also write per-frame files for ``png16``/``npy``/``ply``.

    Raises:
        ConfigError: any value out of range, an unknown format or colour map.
    """

    formats: tuple[str, ...] = DEFAULT_FORMATS
    depth_scale: float = 1000.0
    camera: CameraSpec = field(default_factory=CameraSpec)
    batch_size: int = 4
    max_side: int | None = DEFAULT_MAX_SIDE
    cmap: str = "turbo"
    colorbar: bool = False
    flip_tta: bool = False
    video_frames: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if not (math.isfinite(self.depth_scale) and self.depth_scale > 0):
            raise ConfigError(
                f"depth scale must be positive (PNG units per metre: 1000 for millimetres, 256 for KITTI), "
                f"got {self.depth_scale}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.max_side is not None and self.max_side < 1:
            raise ConfigError(f"max side must be a positive number of pixels (None: no limit), got {self.max_side}")
        if "color" in self.formats:
            colorize_depth(np.ones((1, 1)), cmap=self.cmap)  # an unknown colour map fails now, not per image


@dataclass
class PredictReport:
    """What :func:`predict_paths` did.

    Attributes:
        matched: input files found (images and videos, readable or not).
        succeeded: inputs whose outputs were all written, in input order.
        failed: ``(input, reason)`` for each input that matched nothing or failed, in input order.
        outputs: every file written.
    """

    matched: int = 0
    succeeded: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """Command exit status: 0 if any input succeeded, 2 if no input file was found, else 1."""
        if self.succeeded:
            return 0
        return 2 if self.matched == 0 else 1


def find_inputs(
    inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Input files for ``inputs`` (files, folders, glob patterns; see :func:`clip2depth.io.inputs.expand_inputs`).

    When ``out_dir`` lies inside an input folder, the files under it are skipped (with a warning):
    they are the outputs of an earlier run, not inputs.

    Returns:
        ``(paths, problems)``: ``problems`` holds ``(input, reason)`` for inputs that match nothing.
    """
    paths, problems = expand_inputs([str(p) for p in inputs])
    out = Path(out_dir).expanduser().resolve()
    folders = [Path(p).expanduser().resolve() for p in inputs if Path(p).expanduser().is_dir()]
    if any(out != folder and out.is_relative_to(folder) for folder in folders):
        kept = [p for p in paths if not p.resolve().is_relative_to(out)]
        if len(kept) < len(paths):
            logger.warning("skipping %d files inside the output folder %s", len(paths) - len(kept), out_dir)
        paths = kept
    return paths, problems


def output_path(base: Path, fmt: str) -> Path:
    """Where format ``fmt`` of the output name ``base`` (``out_dir / stem``) is written."""
    return base.with_name(base.name + _SUFFIXES[fmt])


def write_outputs(
    base: Path,
    rgb: np.ndarray,
    depth_m: np.ndarray,
    options: PredictOptions,
    formats: Sequence[str] | None = None,
) -> list[Path]:
    """Write the files of one image or frame, each atomically.

    Args:
        base: output path without extension, ``out_dir / stem``; see :func:`output_path`.
        rgb: H×W×3 uint8, the image as predicted (colours of the point cloud).
        depth_m: H×W depth in metres; NaN, inf and ≤ 0 are invalid (0 in PNG16, no point in PLY).
        options: scale, colour map, camera.
        formats: subset of ``options.formats`` to write; default all of them.

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
            colour = colorize_depth(depth_m, cmap=options.cmap, colorbar=options.colorbar)
            with atomic_path(path) as tmp:
                Image.fromarray(colour).save(tmp, format="PNG")
        elif fmt == "ply":
            height, width = depth_m.shape
            points = backproject(depth_m, options.camera.intrinsics(width, height))
            save_ply(path, points, rgb[valid_mask(depth_m)])
        written.append(path)
    return written


def predict_paths(
    model: Clip2Depth,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
    progress: bool = True,
) -> PredictReport:
    """Predict depth for files, folders, glob patterns and videos, and write the requested outputs.

    Images are read as a viewer shows them (:func:`clip2depth.io.images.load_image`: EXIF orientation,
    grayscale, alpha, 16-bit, palette) and streamed: at most ``4 × batch_size`` are held in memory,
    and images of the same size are predicted together. Videos are predicted frame by frame.
    Existing outputs are replaced. An input whose output would overwrite an input file, or another
    input's output, is refused.

    Args:
        model: the depth model (on the device to use).
        inputs: files, folders (searched recursively) and glob patterns (see :func:`find_inputs`).
        out_dir: output folder, created when missing.
        options: what to write and how; default :class:`PredictOptions()`.
        progress: show a progress bar on stderr (when it is a terminal).

    Returns:
        The report; see :attr:`PredictReport.exit_code` for a command's exit status.
    """
    options = options or PredictOptions()
    out_dir = Path(out_dir)
    paths, problems = find_inputs(inputs, out_dir)
    run = _Run(model, out_dir, options)
    for raw, reason in problems:
        run.failed.append((-1, raw, reason))
    jobs = run.plan(paths)
    if "ply" in options.formats and options.camera.is_default:
        logger.info(
            "point clouds assume a %.0f° horizontal field of view; give the camera's (--fov or --fx/--fy/--cx/--cy) "
            "for true geometry",
            DEFAULT_FOV_DEG,
        )
    with logging_redirect_tqdm() if progress else nullcontext(), tqdm(
        total=len(jobs), desc="predict", unit="file", disable=None if progress else True, dynamic_ncols=True
    ) as bar:
        run.bar = bar
        run.images([job for job in jobs if not is_video_path(job.path)])
        for job in jobs:
            if is_video_path(job.path):
                run.video(job)
    return run.report(matched=len(paths))


# --------------------------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Job:
    index: int
    path: Path
    base: Path  # out_dir / stem


def _reason(path: Path, exc: BaseException) -> str:
    """The exception's message without the leading ``"<path>: "`` (the report already names the input)."""
    message, prefix = str(exc), f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _chunks(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_OOM_HINT = "lower --batch-size or --max-side"


class _Run:
    """State of one :func:`predict_paths` call: results so far, in input order once sorted."""

    def __init__(self, model: Clip2Depth, out_dir: Path, options: PredictOptions) -> None:
        self.model = model
        self.out_dir = out_dir
        self.options = options
        self.bar: tqdm | None = None
        self.succeeded: list[tuple[int, Path]] = []
        self.failed: list[tuple[int, str, str]] = []
        self.outputs: list[Path] = []

    def report(self, matched: int) -> PredictReport:
        return PredictReport(
            matched=matched,
            succeeded=[path for _, path in sorted(self.succeeded, key=lambda item: item[0])],
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

    def plan(self, paths: list[Path]) -> list[_Job]:
        """Jobs for ``paths``; an input whose outputs would overwrite an input or another output fails."""
        inputs = {p.resolve() for p in paths}
        claimed: dict[Path, Path] = {}
        jobs = []
        for index, (path, stem) in enumerate(zip(paths, output_stems(paths), strict=True)):
            job = _Job(index, path, self.out_dir / stem)
            targets = [t.resolve() for t in self._targets(job)]
            clash = next((t for t in targets if t in inputs or t in claimed), None)
            if clash is None:
                claimed.update(dict.fromkeys(targets, path))
                jobs.append(job)
            elif clash in inputs:
                self.fail(job, f"its output {clash} would overwrite an input file; choose another output folder")
            else:
                self.fail(job, f"its output {clash} would overwrite that of {claimed[clash]}; rename one of them")
        return jobs

    def _targets(self, job: _Job) -> list[Path]:
        if not is_video_path(job.path):
            return [output_path(job.base, fmt) for fmt in self.options.formats]
        targets = [job.base.with_name(job.base.name + VIDEO_SUFFIX)] if "color" in self.options.formats else []
        if self._frame_formats():
            targets.append(job.base.with_name(job.base.name + FRAMES_SUFFIX))
        return targets

    def _frame_formats(self) -> list[str]:
        return [f for f in self.options.formats if f != "color"] if self.options.video_frames else []

    def _warn_if_large(self, path: Path, height: int, width: int) -> None:
        max_side = self.options.max_side
        if max_side is not None and max(height, width) > max_side:
            net_h, net_w = network_size(height, width, self.model.patch_size, max_side=max_side)
            logger.warning(
                "%s: %d×%d is larger than the maximum side %d; predicting at %d×%d, outputs at full size",
                path, width, height, max_side, net_w, net_h,
            )  # fmt: skip

    def _infer(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return self.model.infer_batch(images, max_side=self.options.max_side, flip_tta=self.options.flip_tta)

    # ------------------------------------------------------------------ images

    def images(self, jobs: list[_Job]) -> None:
        """Load images one by one; predict each size's pool when it holds a batch (or memory is full)."""
        batch_size = self.options.batch_size
        pools: dict[tuple[int, int], list[tuple[_Job, np.ndarray]]] = {}
        held = 0
        for job in jobs:
            try:
                rgb = load_image(job.path)
            except DataError as exc:
                self.fail(job, _reason(job.path, exc))
                continue
            self._warn_if_large(job.path, *rgb.shape[:2])
            size = rgb.shape[:2]
            pools.setdefault(size, []).append((job, rgb))
            held += 1
            if len(pools[size]) == batch_size:
                held -= batch_size
                self._predict_batch(pools.pop(size))
            elif held >= 4 * batch_size:  # many distinct sizes: flush the oldest pool to bound memory
                oldest = pools.pop(next(iter(pools)))
                held -= len(oldest)
                self._predict_batch(oldest)
        for pool in pools.values():
            self._predict_batch(pool)

    def _predict_batch(self, batch: list[tuple[_Job, np.ndarray]]) -> None:
        try:
            depths = self._infer([rgb for _, rgb in batch])
        except torch.cuda.OutOfMemoryError:
            height, width = batch[0][1].shape[:2]
            for job, _ in batch:
                self.fail(job, f"out of GPU memory for {len(batch)} image(s) of {width}×{height}; {_OOM_HINT}")
            return
        for (job, rgb), depth in zip(batch, depths, strict=True):
            try:
                outputs = write_outputs(job.base, rgb, depth, self.options)
            except (Clip2DepthError, OSError) as exc:
                self.fail(job, f"cannot write outputs: {exc}")
            else:
                self.succeed(job, outputs)

    # ------------------------------------------------------------------ videos

    def video(self, job: _Job) -> None:
        """Predict a video frame by frame: a colour depth video and/or per-frame files."""
        options = self.options
        frame_formats = self._frame_formats()
        if "color" not in options.formats and not frame_formats:
            self.fail(job, "nothing to write for a video: add 'color' to the formats (a depth video) "
                           "or ask for per-frame files (--frames)")  # fmt: skip
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
        with ExitStack() as stack:
            frame_bar = stack.enter_context(
                tqdm(total=info.frame_count, desc=job.path.name, unit="frame", leave=False, position=1,
                     disable=None if self.bar is not None and not self.bar.disable else True, dynamic_ncols=True)
            )  # fmt: skip
            for frames in _chunks(iter_video_frames(job.path), options.batch_size):
                depths = self._infer(frames)
                if colour_range is None:  # one scale for the whole video, so a colour means one depth
                    colour_range = depth_range(np.concatenate(depths))
                for rgb, depth in zip(frames, depths, strict=True):
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
                frame_bar.update(len(frames))
        if writer is not None:
            written.append(video_path)
        logger.debug("%s: %d frames", job.path, count)
        return written
