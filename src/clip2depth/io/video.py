"""Reading and writing videos as RGB uint8 frames, through PyAV (the optional ``video`` extra).

PyAV is imported on first use, so the rest of the package works without it. Frames are rotated as
the container's display matrix asks (phones store portrait video as rotated landscape), so they come
out the way a player shows them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from clip2depth.errors import Clip2DepthError, ConfigError, DataError
from clip2depth.io.atomic import atomic_path

logger = logging.getLogger(__name__)

# Encoders tried in order: VP9/VP8 for .webm; otherwise H.264, which plays everywhere, then MPEG-4 part 2,
# which is in every ffmpeg build and plays almost everywhere.
_WEBM_ENCODERS = ("libvpx-vp9", "libvpx")
_DEFAULT_ENCODERS = ("libx264", "libopenh264", "mpeg4")


def _import_av() -> ModuleType:
    try:
        import av
    except ImportError as exc:
        raise Clip2DepthError(
            "reading and writing videos needs PyAV: pip install 'clip2depth[video]' (or pip install av)"
        ) from exc
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video before decoding it all.

    ``width`` and ``height`` are those of the frames :func:`iter_video_frames` yields (after display
    rotation); ``fps`` and ``frame_count`` are None when the container does not say; ``rotation`` is
    the counter-clockwise rotation in degrees applied to the stored frames.
    """

    width: int
    height: int
    fps: float | None
    frame_count: int | None
    rotation: int


@contextmanager
def _open_video(path: Path) -> Iterator[tuple[Any, Any]]:
    """Yield (container, first video stream); DataError naming ``path`` when that is impossible."""
    av = _import_av()
    if not path.is_file():
        raise DataError(f"{path}: no such video file. Check the path.")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise DataError(f"{path}: cannot open as a video ({exc}). Check that the file is complete.") from exc
    try:
        if not container.streams.video:
            raise DataError(f"{path}: contains no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _upright(frame: Any) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def iter_video_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Yield the frames of the first video stream as H×W×3 uint8 RGB, upright, in display order.

    Raises:
        Clip2DepthError: PyAV is not installed.
        DataError: the file is missing, not a video, or fails to decode (the message names the file
            and how many frames were read).
    """
    path = Path(path)
    av = _import_av()
    with _open_video(path) as (container, stream):
        count = 0
        try:
            for frame in container.decode(stream):
                yield _upright(frame)
                count += 1
        except av.FFmpegError as exc:
            raise DataError(f"{path}: decoding failed after {count} frames ({exc})") from exc


def video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame rate, frame count and rotation of a video (decodes only its first frame).

    Raises:
        Clip2DepthError: PyAV is not installed.
        DataError: the file is missing, not a video, or has no decodable frame.
    """
    path = Path(path)
    av = _import_av()
    with _open_video(path) as (container, stream):
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise DataError(f"{path}: cannot decode the first frame ({exc})") from exc
        if frame is None:
            raise DataError(f"{path}: contains no frames")
        rate = stream.average_rate or stream.guessed_rate
        rotation = round(frame.rotation / 90) % 4 * 90
        width, height = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
        return VideoInfo(
            width=width,
            height=height,
            fps=float(rate) if rate else None,
            frame_count=stream.frames or None,
            rotation=rotation,
        )


class VideoWriter:
    """Write H×W×3 uint8 RGB frames to a video file; a context manager.

    The container follows the suffix of ``path`` (``.mp4``, ``.mov``, ``.mkv``, ``.avi``, ``.webm``).
    Frames are encoded as H.264 (libx264, CRF 18, yuv420p) when the installed ffmpeg has it, else
    MPEG-4 part 2; ``.webm`` uses VP9. 4:2:0 chroma needs even sizes, so an odd width or height is
    padded by repeating the last column or row. The file appears under ``path`` only when the block
    ends without error (atomic write).

    Example::

        with VideoWriter("depth.mp4", fps=30, size=(640, 480)) as writer:
            for frame in frames:
                writer.write(frame)

    Args:
        path: output file.
        fps: frames per second (29.97 and the like are kept exactly as 30000/1001).
        size: ``(width, height)`` of the frames that will be written, in pixels.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int]) -> None:
        width, height = size
        if fps <= 0:
            raise ConfigError(f"video frame rate must be positive, got {fps}")
        if width <= 0 or height <= 0:
            raise ConfigError(f"video size must be positive, got {width}×{height}")
        self.path = Path(path)
        self.fps = fps
        self.size = (int(width), int(height))
        self.frames_written = 0
        self._stack: ExitStack | None = None
        self._container: Any = None
        self._stream: Any = None

    def __enter__(self) -> VideoWriter:
        av = _import_av()
        codec = _pick_encoder(av, self.path.suffix.lower())
        stack = ExitStack()
        tmp = stack.enter_context(atomic_path(self.path))
        try:
            try:
                container = av.open(str(tmp), mode="w")
            except (av.FFmpegError, ValueError) as exc:
                raise ConfigError(
                    f"{self.path}: cannot write a video with suffix {self.path.suffix!r} ({exc}); use .mp4"
                ) from exc
            stack.callback(container.close)
            rate = Fraction(self.fps).limit_denominator(1001)
            stream = container.add_stream(codec, rate=rate)
            width, height = self.size
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18"}
        except BaseException as exc:
            stack.__exit__(type(exc), exc, exc.__traceback__)  # removes the temp file
            raise
        logger.debug("writing %s with %s at %s fps", self.path, codec, rate)
        self._stack, self._container, self._stream = stack, container, stream
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one H×W×3 uint8 RGB frame; H×W must match ``size``."""
        if self._stream is None:
            raise RuntimeError("VideoWriter.write called outside its `with` block")
        width, height = self.size
        frame = np.asarray(frame)
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be {height}×{width}×3 uint8, got {frame.shape} {frame.dtype}")
        if width % 2 or height % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        av = _import_av()
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written
        self._mux(video_frame)
        self.frames_written += 1

    def _mux(self, frame: Any) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack = self._stack
        self._stack = None
        if stack is None:
            return
        try:
            if exc_type is not None:
                stack.__exit__(exc_type, exc, tb)  # closes the container and discards the temp file
                return
            with stack:  # on success: flush, close, then move the file into place
                self._mux(None)
        finally:
            self._container = self._stream = None


def _pick_encoder(av: ModuleType, suffix: str) -> str:
    candidates = _WEBM_ENCODERS if suffix == ".webm" else _DEFAULT_ENCODERS
    for name in candidates:
        try:
            av.codec.Codec(name, "w")
        except ValueError:
            continue
        return name
    raise Clip2DepthError(f"the installed ffmpeg (PyAV) has none of the encoders {', '.join(candidates)}")
