"""The steps of a prediction run that every engine shares: its options, an input read into pixels (and its
camera), same-size images predicted as one batch, one image's outputs written, a whole video predicted, and the
reasons a record gives.

:mod:`clip2depth.inference.run` strings them together in one process (and in each torchrun process);
:mod:`clip2depth.inference.raydata` calls them from Ray tasks and actors.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clip2depth.errors import Clip2DepthError, ConfigError, is_out_of_memory
from clip2depth.inference.camera import ImageCamera, image_camera
from clip2depth.inference.outputs import OutputOptions, frames_dir, video_path, write_depth_files
from clip2depth.inference.plan import InputRecord, Job
from clip2depth.inference.pointcloud import valid_mask
from clip2depth.inference.storage import Location, local_copy, staged_outputs
from clip2depth.io.colour import colorize_depth, depth_range
from clip2depth.io.images import load_image
from clip2depth.io.progress import progress as progress_bar
from clip2depth.io.video import VideoWriter, iter_video_frames, video_info
from clip2depth.models.infer import (
    PRECISIONS,
    check_scale,
    image_tensor,
    model_device,
    model_network_size,
    predict_batch,
    size_batches,
)

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4
"""Images (or video frames) of one size predicted together."""

DEFAULT_VIDEO_FPS = 30.0
"""Frame rate of the depth video when the input video does not state one."""


@dataclass(frozen=True)
class PredictOptions:
    """How inputs are predicted; checked when built.

    Attributes:
        batch_size: images of the same size (or consecutive video frames) predicted together.
        max_side, size, native: the size images are predicted at, at most one of them (outputs are always at
            the input's size). None of them: the model's own scale (its ``processing_size``' pixel count, the
            image's aspect kept); ``max_side``: images whose longer side exceeds it shrunk to it; ``size``:
            this network (H, W); ``native``: the image's own size. Each side is rounded to the patch size
            (see :func:`clip2depth.models.infer.network_size`).
        flip_tta: average with the prediction on the horizontally flipped image.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; see :func:`clip2depth.models.infer.predict_depth`).

    Raises:
        ConfigError: a value out of range; the message names the field (``batch_size=0``).
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    max_side: int | None = None
    size: tuple[int, int] | None = None
    native: bool = False
    flip_tta: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be at least 1", params=("batch_size",))
        check_scale(max_side=self.max_side, size=self.size, native=self.native)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}",
                              params=("precision",))



@dataclass(frozen=True)
class LoadedImage:
    """An input image read for prediction.

    Attributes:
        job: the input.
        rgb: H×W×3 uint8, as displayed (:func:`clip2depth.io.images.load_image`).
        camera: the point cloud's camera (:func:`~clip2depth.inference.camera.image_camera`, read from the
            file's EXIF when the outputs need one and none was given); None without ``ply``.
        seconds: time spent reading it.
    """

    job: Job
    rgb: np.ndarray
    camera: ImageCamera | None
    seconds: float


def read_image(job: Job, outputs: OutputOptions) -> LoadedImage:
    """Read ``job``'s image (fetched first when it is a URL) and, for point clouds, its camera.

    Raises:
        Clip2DepthError: the file or object is missing or not a readable image; the message starts with
            the input's name.
    """
    start = time.perf_counter()
    with local_copy(job.path) as path:
        try:
            rgb = load_image(path)
        except Clip2DepthError as exc:
            if path == job.path:
                raise
            raise type(exc)(str(exc).replace(str(path), str(job.path))) from exc  # name the object, not the copy
        height, width = rgb.shape[:2]
        camera = image_camera(path, width, height, outputs.camera) if "ply" in outputs.formats else None
    return LoadedImage(job, rgb, camera, time.perf_counter() - start)


def predict_images(model: nn.Module, images: Sequence[np.ndarray], options: PredictOptions) -> list[np.ndarray]:
    """Depth of same-size H×W×3 uint8 images, as one batch: one H×W float32 array of metres each.

    Each image's depth does not depend on the other images of the batch beyond floating-point
    summation order (no padding, no statistics shared across the batch).
    """
    return predict_batch(model, [image_tensor(rgb) for rgb in images], max_side=options.max_side,
                         size=options.size, native=options.native, flip_tta=options.flip_tta,
                         precision=options.precision)  # fmt: skip


def write_image(loaded: LoadedImage, depth: np.ndarray, outputs: OutputOptions) -> list[Location]:
    """Write the outputs of one predicted image (uploaded when they go to storage); returns what was written."""
    camera = loaded.camera
    if camera is not None and camera.from_exif:
        logger.info("%s: point cloud from the %s", loaded.job.path, camera.source)
    with staged_outputs(loaded.job.base) as (base, publish):
        return publish(write_depth_files(base, loaded.rgb, depth, outputs, camera=camera))


def depth_fields(depths: Sequence[np.ndarray] | np.ndarray) -> dict[str, float | None]:
    """``depth_min``, ``depth_median``, ``depth_max`` of a depth map (or of a video's frames) for its record."""
    stats = _DepthStats()
    for depth in [depths] if isinstance(depths, np.ndarray) else depths:
        stats.add(depth)
    return stats.fields()


def predict_video(
    model: nn.Module, job: Job, outputs: OutputOptions, options: PredictOptions, *, progress: bool = False
) -> InputRecord:
    """Predict a video frame by frame into a colour depth video and/or per-frame files; its record.

    An unreadable video, or one that runs out of memory, is a record saying so, not an exception.
    """
    start = time.perf_counter()
    with local_copy(job.path) as path:
        try:
            info = video_info(path)
        except (Clip2DepthError, OSError) as exc:
            return InputRecord(job.index, str(job.path), "failed", error=error_reason(path, exc))
        size = {"height": info.height, "width": info.width}
        stats = _DepthStats()
        try:
            with staged_outputs(job.base) as (base, publish):
                written = publish(_video(model, path, base, info, stats, outputs, options, progress))
        except Exception as exc:
            if not is_out_of_memory(exc):
                if not isinstance(exc, (Clip2DepthError, OSError)):
                    raise
                return InputRecord(job.index, str(job.path), "failed", **size, error=error_reason(path, exc))
            written = None
    if written is None:  # outside the except clause, so the traceback's tensors are already freed
        error = out_of_memory_reason(model, options, options.batch_size, "frame", info.height, info.width)
        return InputRecord(job.index, str(job.path), "out_of_memory", **size, error=error)
    return InputRecord(job.index, str(job.path), "done", outputs=tuple(written), **size, **stats.fields(),
                       seconds=time.perf_counter() - start)  # fmt: skip


class _DepthStats:
    """Running min / max and the medians of a stream of depth maps (metres, valid pixels only)."""

    def __init__(self) -> None:
        self.low, self.high, self.medians = math.inf, -math.inf, []

    def add(self, depth: np.ndarray) -> None:
        valid = depth[valid_mask(depth)]
        if valid.size:
            self.low, self.high = min(self.low, float(valid.min())), max(self.high, float(valid.max()))
            self.medians.append(float(np.median(valid)))

    def fields(self) -> dict[str, float | None]:
        if not self.medians:
            return {"depth_min": None, "depth_median": None, "depth_max": None}
        return {"depth_min": self.low, "depth_median": float(np.median(self.medians)), "depth_max": self.high}


def error_reason(path: Location, exc: BaseException) -> str:
    """The exception's message without the leading ``"<path>: "`` (the record already names the input)."""
    message, prefix = str(exc), f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def log_network_size(path: Location, height: int, width: int, model: nn.Module, options: PredictOptions) -> None:
    """Log (debug) the size an image (or video) is predicted at."""
    net_h, net_w = model_network_size(model, height, width, max_side=options.max_side, size=options.size,
                                      native=options.native)
    logger.debug("%s: %d×%d predicted at %d×%d, depth at full size", path, width, height, net_w, net_h)


def out_of_memory_reason(model: nn.Module, options: PredictOptions, count: int, what: str, height: int,
                         width: int) -> str:
    """The record's reason for a batch that ran out of memory (after handing the failed batch's memory back)."""
    if model_device(model).type == "cuda":  # hand the failed batch's blocks back for the next one
        torch.cuda.empty_cache()
    net_h, net_w = model_network_size(model, height, width, max_side=options.max_side, size=options.size,
                                      native=options.native)
    return (f"out of memory predicting {count} {what}(s) of {width}×{height} "
            f"at {net_w}×{net_h} (batch_size={options.batch_size})")  # fmt: skip



def _video(
    model: nn.Module,
    path: Path,
    base: Path,
    info: Any,
    stats: _DepthStats,
    outputs: OutputOptions,
    options: PredictOptions,
    progress: bool,
) -> list[Path]:
    """Predict the local video ``path`` into outputs named ``base``; returns the files written."""
    fps = info.fps
    if not fps:
        logger.warning("%s: no frame rate stated; writing the depth video at %g fps", path, DEFAULT_VIDEO_FPS)
        fps = DEFAULT_VIDEO_FPS
    log_network_size(path, info.height, info.width, model, options)
    written: list[Path] = []
    writer: VideoWriter | None = None
    colour_range: tuple[float, float] | None = None
    count = 0
    with ExitStack() as stack:
        frame_bar = stack.enter_context(progress_bar(total=info.frame_count, enabled=progress, desc=path.name,
                                                     unit="frame", leave=False, position=1))  # fmt: skip
        frames = size_batches(iter_video_frames(path), size=np.shape, batch_size=options.batch_size,
                              in_order=True)  # fmt: skip
        for batch in frames:
            depths = predict_images(model, batch, options)
            if colour_range is None:  # one scale for the whole video, so a colour means one depth
                lo, hi = depth_range(np.concatenate(depths))
                colour_range = (lo if outputs.vmin is None else outputs.vmin,
                                hi if outputs.vmax is None else outputs.vmax)  # fmt: skip
            for rgb, depth in zip(batch, depths, strict=True):
                stats.add(depth)
                if outputs.frame_formats:
                    written += write_depth_files(frames_dir(base) / f"{count:06d}", rgb, depth, outputs,
                                                 outputs.frame_formats)  # fmt: skip
                if "color" in outputs.formats:
                    colour = colorize_depth(depth, cmap=outputs.cmap, vmin=colour_range[0], vmax=colour_range[1],
                                            colorbar=outputs.colorbar)  # fmt: skip
                    if writer is None:
                        writer = stack.enter_context(VideoWriter(video_path(base), fps=fps,
                                                                 size=(colour.shape[1], colour.shape[0])))
                    writer.write(colour)
                count += 1
            frame_bar.update(len(batch))
    if writer is not None:
        written.append(video_path(base))
    logger.debug("%s: %d frames", path, count)
    return written
