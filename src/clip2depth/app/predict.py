"""What the web app computes for one upload: depth, its pictures, the point cloud and the downloads.

No Gradio here, so every step is testable on its own; :mod:`clip2depth.app.ui` only wires these
functions to the page. Files are written with the same code as ``clip2depth predict``
(:func:`clip2depth.inference.outputs.write_depth_files`), the point cloud's camera follows its rule
(:func:`clip2depth.inference.camera.image_camera`), depth comes from the one resize-predict-resize
(:func:`clip2depth.models.infer.predict_batch` on :func:`~clip2depth.models.infer.image_tensor`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import nn

from clip2depth.errors import Clip2DepthError, DataError
from clip2depth.inference.camera import CameraSpec, ImageCamera, image_camera
from clip2depth.inference.outputs import VIDEO_SUFFIX, OutputOptions, output_path, write_depth_files
from clip2depth.inference.pointcloud import DEFAULT_FOV_DEG, backproject, valid_mask
from clip2depth.inference.run import PredictOptions, predict_paths
from clip2depth.io.colour import colorize_depth, depth_range
from clip2depth.io.images import load_image
from clip2depth.io.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image_path, is_video_path
from clip2depth.io.ply import save_ply
from clip2depth.io.video import video_info
from clip2depth.models.checkpoint import is_model_dir
from clip2depth.models.infer import image_tensor, predict_batch
from clip2depth.models.profiling import count_parameters

logger = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000
"""Largest image accepted, in pixels (a 40-megapixel photo); checked from the header, before decoding,
so a small file that decompresses into a huge image (a decompression bomb) is refused cheaply."""

MAX_UPLOAD_MB = 25
"""Largest upload the server accepts, in megabytes (images and videos)."""

MAX_VIDEO_FRAMES = 3000
"""Longest video the page predicts (100 s at 30 fps): one request must not hold the model for long."""

DEPTH_SCALE = 1000.0
"""16-bit PNG units per metre: the downloaded PNG holds millimetres."""

DOWNLOAD_STEM_MAX = 100
"""Characters of the upload's name kept at the start of its download names (``<stem>_depth_view.ply``):
any upload name, however long, gives download names a file system accepts."""

VIEW_POINTS = 120_000
"""At most this many points are sent to the browser's 3D view (the ``.ply`` download keeps them all)."""

DEMO_MODEL_DIR = Path("demo_out") / "best"
"""Where ``make demo`` leaves its trained model, relative to the folder the app is started from."""

_REQUEST_MAX_AGE_S = 3600.0


@dataclass(frozen=True)
class ModelInfo:
    """What the model panel shows about the loaded model.

    Attributes:
        source: what ``--model`` named (a trained-model folder or a preset name).
        preset: the architecture preset the model was built from.
        clip_model: open_clip architecture of the frozen CLIP.
        clip_weights: the CLIP weights loaded (an open_clip tag or a file); None: random weights.
        trained: whether trained mirror and decoder weights were loaded (False: a bare preset).
        trainable_parameters: parameters training updates (mirror, decoder).
        max_depth: largest depth the decoder can output, metres.
        processing_size: (H, W) of the model's own scale, whose pixel count images are predicted at by default;
            None: at their own size.
    """

    source: str
    preset: str
    clip_model: str
    clip_weights: str | None
    trained: bool
    trainable_parameters: int
    max_depth: float
    processing_size: tuple[int, int] | None = None

    @property
    def banner(self) -> str | None:
        """A warning for models whose output says nothing about real photos; None for a usable model."""
        if not self.trained:
            return (
                f"{self.source} is an untrained preset: the decoder has random weights, so the depth shown "
                "means nothing. Start the app with --model pointing at a trained model (e.g. `make demo`)."
            )
        if self.clip_weights is None:
            return (
                "This model runs on random CLIP weights (as the demo does): it has only learnt the scenes it "
                "was trained on, so on real photos its output means nothing. Train with real CLIP weights "
                "(--pretrained openai) for a model that sees."
            )
        return None

    def markdown(self) -> str:
        """The model panel as a Markdown table."""
        rows = [
            ("model", f"`{self.source}`"),
            ("preset", f"`{self.preset}`"),
            ("CLIP", f"`{self.clip_model}`"),
            ("CLIP weights", f"`{self.clip_weights}`" if self.clip_weights else "**random** (no pretrained CLIP)"),
            ("trained mirror + decoder", "yes" if self.trained else "**no** (untrained preset)"),
            ("trainable parameters", f"{self.trainable_parameters:,}"),
            ("max depth", f"{self.max_depth:g} m"),
            ("processing size", "each image's own size" if self.processing_size is None else
             "the pixel count of {}×{} (H×W), aspect kept".format(*self.processing_size)),
        ]
        return "| | |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)


def describe_model(model: nn.Module, source: str) -> ModelInfo:
    """The model panel's facts about ``model``, loaded from ``source`` (folder or preset name)."""
    config = getattr(model, "config", None)
    return ModelInfo(
        source=source,
        preset=getattr(config, "name", source),
        clip_model=getattr(config, "clip_model", "unknown"),
        clip_weights=getattr(model, "clip_weights", None),
        trained=is_model_dir(source) or source.startswith("hf-hub:"),
        trainable_parameters=count_parameters(model)[0],
        max_depth=float(getattr(model, "max_depth", float("nan"))),
        processing_size=getattr(model, "processing_size", None),
    )


def default_model_source(model: str | None, cwd: str | os.PathLike[str] = ".") -> str | None:
    """The model the app serves: ``model`` if given, else the demo's trained model if present, else None."""
    if model:
        return model
    demo = Path(cwd) / DEMO_MODEL_DIR
    return str(demo) if is_model_dir(demo) else None


NO_MODEL_MESSAGE = f"""\
## No model to serve yet

The app shows the depth predicted by a trained clip2depth model, and none was found: no `--model` was
given and there is no `{DEMO_MODEL_DIR.as_posix()}` in the folder the app was started from.

- Train the small demo model (about 3 minutes on a laptop CPU), then start the app again from the same folder:
  `make demo` (or `clip2depth demo --out demo_out`), then `clip2depth app`.
- Or point the app at a trained model: `clip2depth app --model runs/nyu/best` (a folder written by
  `clip2depth train`) or `--model hf-hub:org/name`.
"""


# --------------------------------------------------------------------------------------------- images


def upload_name(path: str | os.PathLike[str], name: str | None = None) -> str:
    """The name an upload goes by on the page: ``name`` (the browser's file name) without any folder, whichever
    the separator, else the last part of ``path`` (the server's copy)."""
    shown = PureWindowsPath(name).name if name else ""  # splits at "\\" and "/" alike
    return shown or Path(path).name


@contextmanager
def _named_as(path: Path, name: str) -> Iterator[None]:
    """Errors raised inside name the upload ``name``, as the user knows it, never the server's copy at ``path``
    (a temporary folder of Gradio's that means nothing to the user and should not be shown)."""
    try:
        yield
    except Clip2DepthError as exc:
        text = str(exc)
        for spelling in sorted({str(path), os.path.abspath(path), os.path.realpath(path)}, key=len, reverse=True):
            text = text.replace(spelling, name)
        if text == str(exc):
            raise
        raise type(exc)(text, params=exc.params) from exc


def load_upload(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """Read an uploaded image: H×W×3 uint8 RGB, upright.

    Args:
        name: the upload's own file name, used in messages (see :func:`upload_name`).

    Raises:
        DataError: not an image type, larger than ``max_pixels``, or unreadable; the message says what to do
            and names the upload, not the server's path.
    """
    path = Path(path)
    shown = upload_name(path, name)
    if not is_image_path(path):
        raise DataError(f"{shown} is not an image file; upload one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    with _named_as(path, shown):
        try:
            with Image.open(path) as img:  # reads the header only: the size is known before any decoding
                width, height = img.size
                if width * height > max_pixels:
                    raise DataError(
                        f"{shown} is {width}×{height} = {width * height / 1e6:.0f} megapixels, more than the "
                        f"{max_pixels / 1e6:.0f} allowed; downscale it first"
                    )
        except (Image.DecompressionBombError, UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{shown} cannot be read as an image ({exc}); upload a photo") from exc
        return load_image(path)


@dataclass(frozen=True)
class DepthResult:
    """Everything the page shows for one image.

    Attributes:
        depth: H×W float32 depth in metres, at the input's size.
        colour: H×W'×3 uint8 colour depth with a colour bar in metres on the right (W' > W).
        min_m, max_m: smallest and largest valid depth, metres.
        fov_deg: horizontal field of view used for the point cloud, degrees.
        fov_from_exif: whether ``fov_deg`` came from the photo's EXIF (else from the slider).
        png16: uint16 PNG of depth × :data:`DEPTH_SCALE` (millimetres), same size as the input.
        npy: float32 metres.
        ply: coloured points in metres, camera frame (x right, y down, z forward), all valid pixels.
        view: a subsample of ``ply`` turned y-up for the browser's 3D viewer.
    """

    depth: np.ndarray
    colour: np.ndarray
    min_m: float
    max_m: float
    fov_deg: float
    fov_from_exif: bool
    png16: Path
    npy: Path
    ply: Path
    view: Path

    def readout(self) -> str:
        """One Markdown line: depth range, size, camera."""
        height, width = self.depth.shape
        camera = "from the photo's EXIF" if self.fov_from_exif else "set by the slider"
        return (
            f"**{self.min_m:.2f} m** nearest · **{self.max_m:.2f} m** farthest · {width}×{height} px · "
            f"point cloud: {self.fov_deg:.0f}° horizontal field of view ({camera}). "
            "Click on the depth image to read the depth at a pixel."
        )


def predict_image(
    model: nn.Module,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    max_side: int | None = None,
    precision: str = "fp32",
    fov_deg: float = DEFAULT_FOV_DEG,
    use_exif: bool = True,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> DepthResult:
    """Predict the depth of the image at ``path`` and write its downloads into ``out_dir``.

    Args:
        model: depth model (on its device).
        max_side: larger images are predicted downscaled to this longest side; None: at the model's own scale
            (:func:`clip2depth.models.infer.network_size`). Outputs stay full size.
        precision: ``fp32``, ``bf16`` or ``fp16`` (:data:`clip2depth.models.infer.PRECISIONS`).
        fov_deg: horizontal field of view for the point cloud when EXIF gives none (or ``use_exif`` is off).
        max_pixels: refuse larger images (see :data:`MAX_PIXELS`).
        name: the upload's own file name (Gradio's ``orig_name``): messages and download names use it, never
            the server's temporary path (see :func:`upload_name`).

    Raises:
        DataError: the upload is not a readable image within the limits.
        ConfigError: an unknown precision or a field of view outside (0, 180).
    """
    path = Path(path)
    shown = upload_name(path, name)
    rgb = load_upload(path, max_pixels=max_pixels, name=shown)
    height, width = rgb.shape[:2]
    spec = CameraSpec(default_fov_deg=fov_deg) if use_exif else CameraSpec(fov_deg=fov_deg)
    with _named_as(path, shown):
        camera = image_camera(path, width, height, spec)
    outputs = OutputOptions(formats=("png16", "npy", "ply"), depth_scale=DEPTH_SCALE)
    depth = predict_batch(model, [image_tensor(rgb)], max_side=max_side, precision=precision)[0]
    # the download names start with the upload's stem, shortened so that every suffix fits a file name
    base = Path(out_dir) / f"{Path(shown).stem[:DOWNLOAD_STEM_MAX]}_depth"
    base.parent.mkdir(parents=True, exist_ok=True)
    write_depth_files(base, rgb, depth, outputs, camera=camera)
    png16, npy, ply = (output_path(base, fmt) for fmt in outputs.formats)
    view = base.with_name(base.name + "_view.ply")
    _write_view(view, depth, rgb, camera)
    lo, hi = depth_range(depth)
    return DepthResult(
        depth=depth,
        colour=colorize_depth(depth, colorbar=True),
        min_m=lo,
        max_m=hi,
        fov_deg=camera.fov_deg,
        fov_from_exif=camera.from_exif,
        png16=png16,
        npy=npy,
        ply=ply,
        view=view,
    )


def _write_view(path: Path, depth: np.ndarray, rgb: np.ndarray, camera: ImageCamera) -> None:
    """At most :data:`VIEW_POINTS` evenly spread points, in the viewer's y-up, z-towards-viewer frame."""
    points = backproject(depth, camera.intrinsics)
    colours = rgb[valid_mask(depth)]
    keep = np.linspace(0, len(points) - 1, num=min(len(points), VIEW_POINTS)).astype(np.intp)
    save_ply(path, points[keep] * np.array([1.0, -1.0, -1.0], dtype=np.float32), colours[keep])


def depth_at(depth: np.ndarray, x: int, y: int) -> str:
    """What the page says when the colour depth is clicked at column ``x``, row ``y`` (Markdown)."""
    height, width = depth.shape
    if not (0 <= y < height and 0 <= x < width):
        return "That is the colour bar; click on the depth image itself."
    value = float(depth[y, x])
    if not (math.isfinite(value) and value > 0):
        return f"No valid depth at pixel ({x}, {y})."
    return f"Depth at pixel ({x}, {y}): **{value:.3f} m**"


# --------------------------------------------------------------------------------------------- videos


def predict_video(
    model: nn.Module, path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, max_side: int | None = None,
    precision: str = "fp32", max_frames: int = MAX_VIDEO_FRAMES, max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> Path:
    """Colour depth video (colour bar in metres, one scale for all frames) of the video at ``path``, its frames
    predicted at the model's own scale, or shrunk to ``max_side`` when given.

    Uses ``clip2depth predict``'s video path (:func:`clip2depth.inference.run.predict_paths`).

    Args:
        name: the upload's own file name, used in messages instead of the server's path (:func:`upload_name`).

    Raises:
        DataError: not a video type, longer than ``max_frames`` or with frames above ``max_pixels``, or
            the video cannot be read.
    """
    path = Path(path)
    shown = upload_name(path, name)
    if not is_video_path(path):
        raise DataError(f"{shown} is not a video file; upload one of {', '.join(sorted(VIDEO_EXTENSIONS))}")
    with _named_as(path, shown):
        info = video_info(path)
        if info.frame_count is not None and info.frame_count > max_frames:
            raise DataError(f"{shown} has {info.frame_count} frames, more than the {max_frames} this page predicts; "
                            "trim it, or run clip2depth predict on it")
        if info.width * info.height > max_pixels:
            raise DataError(f"{shown} has {info.width}×{info.height} frames, more than {max_pixels / 1e6:.0f} "
                            "megapixels; downscale it first")
        report = predict_paths(model, [path], out_dir=out_dir,
                               outputs=OutputOptions(formats=("color",), colorbar=True),
                               options=PredictOptions(max_side=max_side, precision=precision), progress=False)
        if report.failed:
            raise DataError(f"{shown}: {report.failed[0][1]}")
    return next(p for p in report.outputs if p.name.endswith(VIDEO_SUFFIX))


# --------------------------------------------------------------------------------------------- files


class RequestFolders:
    """One fresh output folder per request under ``root``; folders older than an hour are removed.

    Without ``root``, a temporary folder that is deleted when the app exits.

    The page's files are copied by Gradio when shown, so old request folders are only clutter.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._temporary = tempfile.TemporaryDirectory(prefix="clip2depth-app-") if root is None else None
        self.root = Path(root) if root is not None else Path(self._temporary.name)  # removed at exit
        self.root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        """A new empty folder for one request's outputs."""
        cutoff = time.time() - _REQUEST_MAX_AGE_S
        for old in self.root.iterdir():
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.root))
