"""Reading user images, finding inputs, writing depth maps and visualisations.

Everything that touches the file system for users goes through here: images are normalised to
H×W×3 uint8 RGB whatever their mode, depth maps are written as uint16 PNG (units of 1/scale m) or
float32 ``.npy`` (metres), and every write is atomic (:func:`atomic_path`), so an interrupted run
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm"}
)
"""Lower-case suffixes collected from folders and glob patterns as images (first frame for GIF/TIFF)."""

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
)
"""Lower-case suffixes collected from folders and glob patterns as videos."""

PNG16_MAX = 65535

# Image modes whose samples do not fit in 8 bits; PIL's own convert("RGB") clips these instead of
# scaling them, so they go through numpy.
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


# --------------------------------------------------------------------------------------------- writes


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file lives in the same folder (so ``os.replace`` is atomic) and has the same suffix
    (so writers that pick a format from the suffix still work). Missing parent folders are created.
    If the block raises, the temporary file is removed and ``path`` is left untouched. This guards
    against partial files from crashes and interrupts; it does not fsync.

    Example::

        with atomic_path(out / "depth.png") as tmp:
            Image.fromarray(array).save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------------------------- images


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON (trailing newline) through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB, the way a viewer would show it.

    EXIF orientation is applied; other modes are normalised by :func:`to_rgb_uint8`. Multi-frame
    files (GIF, TIFF) give their first frame.

    Raises:
        DataError: the file is missing, a folder, not an image, truncated or corrupt; the message
            names the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file. Check the path.")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image. Pass image files, or the folder to `predict`.")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated or corrupt data fails here and is reported by name
            return to_rgb_uint8(img)
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path}: image is too large to decode safely ({exc}). Downscale it before prediction."
        ) from exc
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    except Exception as exc:  # PIL decoders raise many unrelated types (OSError, SyntaxError, ...)
        raise DataError(
            f"{path}: cannot read as an image ({type(exc).__name__}: {exc}). "
            f"Check that it is a complete image file in a supported format "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))})."
        ) from exc


def to_rgb_uint8(image: Image.Image | np.ndarray) -> np.ndarray:
    """Normalise a PIL image or an array to a new H×W×3 uint8 RGB array.

    Rules, the same for PIL modes and array layouts:

    - EXIF orientation of a PIL image is applied (unreadable EXIF is ignored with a warning).
    - Grayscale (``L``, ``1``, H×W, H×W×1) is replicated to three channels.
    - Alpha (``RGBA``, ``LA``, ``PA``, H×W×4, H×W×2) is dropped, not composited: the colour channels
      are kept as stored, which is what the camera or renderer produced.
    - Palette (``P``), ``CMYK``, ``YCbCr`` etc. are converted by PIL.
    - 16-bit samples (``I;16`` PNGs, uint16 arrays) are scaled 0..65535 → 0..255 with rounding, not
      clipped; 32-bit integer ``I`` images are taken as 16-bit, unless larger values occur, in which
      case 0..max is scaled to 0..255. Negative values become 0. (PIL itself reduces 16-bit RGB PNGs
      to their high byte.)
    - Float images (``F``, float arrays) are taken as 0..1; outside values are clipped, NaN → 0.

    Raises:
        DataError: an array whose shape or dtype is not an image (e.g. channels-first C×H×W).
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    return _array_to_rgb(np.asarray(image))


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF must not make an otherwise fine image unreadable
        logger.warning("ignoring unreadable EXIF orientation (%s: %s)", type(exc).__name__, exc)
    if img.mode in _HIGH_DEPTH_MODES:
        return _array_to_rgb(np.array(img))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        arr = arr[:, :, 0]  # gray (+ alpha)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3]
    elif arr.ndim != 2:
        raise DataError(
            f"array of shape {arr.shape} is not an image: expected H×W, or H×W×C with C in 1..4 (channels last)"
        )
    rgb = _to_uint8(arr)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        wide = np.clip(arr.astype(np.int64), 0, None)
        top = max(int(wide.max(initial=0)), PNG16_MAX)
        return ((wide * 255 + top // 2) // top).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        unit = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise DataError(f"array of dtype {arr.dtype} is not an image: expected uint8, uint16, bool or float")


# --------------------------------------------------------------------------------------------- inputs


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _is_media(path: Path) -> bool:
    return is_image_path(path) or is_video_path(path)


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Turn command-line inputs (files, folders, glob patterns) into a list of files.

    - A file is taken as given, whatever its extension (reading it reports whether it is an image).
    - A folder is searched recursively for image and video extensions, in sorted order; hidden files
      and folders (name starting with ``.``, e.g. macOS ``._img.jpg``) are skipped.
    - Anything else containing ``*``, ``?`` or ``[`` is a glob pattern (``**`` recurses); it keeps the
      files with image or video extensions.

    Files are checked only by name: a corrupt ``.jpg`` is still listed so the caller reports it.
    A file reached twice (e.g. named and inside a named folder) is listed once, first position.

    Returns:
        ``(paths, problems)``: ``problems`` holds ``(input, reason)`` for each input that does not
        exist or matches no image or video.
    """
    paths: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(found: Path) -> None:
        key = os.path.normcase(os.path.abspath(found))
        if key not in seen:
            seen.add(key)
            paths.append(found)

    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_file():
            add(path)
        elif path.is_dir():
            found = [
                f
                for f in sorted(path.rglob("*"))
                if _is_media(f) and not any(part.startswith(".") for part in f.relative_to(path).parts) and f.is_file()
            ]
            if not found:
                problems.append((raw, "folder contains no image or video files"))
            for f in found:
                add(f)
        elif any(ch in raw for ch in "*?["):
            found = [
                Path(m)
                for m in sorted(glob.glob(os.path.expanduser(raw), recursive=True))
                if _is_media(Path(m)) and os.path.isfile(m)
            ]
            if not found:
                problems.append((raw, "pattern matches no image or video files"))
            for f in found:
                add(f)
        else:
            problems.append((raw, "no such file or folder"))
    return paths, problems


def output_stem(path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> str:
    """Output name (without extension) for an input file.

    The path relative to ``base`` (the input folder) with separators replaced by ``__`` and the last
    extension dropped: ``base/a/b/img.jpg`` → ``a__b__img``. Without ``base``, or for a file outside
    it, the file's own stem.
    """
    path = Path(os.path.abspath(path))
    parts: tuple[str, ...] = (path.name,)
    if base is not None:
        rel = os.path.relpath(path, os.path.abspath(base))
        if not rel.startswith(os.pardir) and rel != os.curdir:
            parts = Path(rel).parts
    return "__".join((*parts[:-1], Path(parts[-1]).stem))


def output_stems(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Distinct output names for a list of distinct input files, in the same order.

    Uses :func:`output_stem` relative to the deepest folder containing all of them, so files of the
    same name in different subfolders stay apart. Files that still collide (``img.jpg`` and
    ``img.png`` side by side) keep their extension: ``img_jpg``, ``img_png``; a numeric suffix
    settles anything left.
    """
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    base = os.path.commonpath([os.path.dirname(p) for p in absolute])
    stems = [output_stem(p, base) for p in absolute]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    stems = [
        f"{stem}_{Path(p).suffix.lstrip('.')}" if counts[stem] > 1 and Path(p).suffix else stem
        for stem, p in zip(stems, absolute, strict=True)
    ]
    used: set[str] = set()
    unique: list[str] = []
    for stem in stems:
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        unique.append(name)
    return unique


# --------------------------------------------------------------------------------------------- depth


def _as_depth_map(depth_m: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth map must be H×W, got shape {depth.shape}")
    return depth


def save_depth_png16(depth_m: np.ndarray, path: str | os.PathLike[str], scale: float = 1000.0) -> None:
    """Write an H×W depth map (metres) as a uint16 PNG holding ``round(depth * scale)``.

    ``scale`` is units per metre: 1000 for NYU-style millimetres, 256 for KITTI. 0 means invalid:
    NaN, ±inf and depth ≤ 0 are written as 0. Depths beyond 65535 / scale metres are clipped to
    65535 with a warning (use ``.npy`` to keep them).
    """
    depth = _as_depth_map(depth_m)
    units = np.where(np.isfinite(depth) & (depth > 0), depth * scale, 0.0)
    too_far = units > PNG16_MAX
    if too_far.any():
        logger.warning(
            "%s: %d of %d pixels are farther than %.1f m (max %.1f m) and were clipped to 65535; "
            "save as .npy, or use a smaller scale, to keep them",
            path,
            int(too_far.sum()),
            units.size,
            PNG16_MAX / scale,
            float(depth[too_far].max()),
        )
    png = np.rint(np.minimum(units, PNG16_MAX)).astype(np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(png).save(tmp, format="PNG")


def load_depth_png16(path: str | os.PathLike[str], scale: float) -> np.ndarray:
    """Read a uint16 depth PNG as H×W float32 metres (``value / scale``); 0 (invalid) stays 0.

    Raises:
        DataError: the file is unreadable or not a single-channel 16-bit image.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            raw = np.array(img)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such depth file. Check the path.") from exc
    except Exception as exc:  # PIL decoders raise many unrelated types
        raise DataError(f"{path}: cannot read as a depth PNG ({type(exc).__name__}: {exc})") from exc
    if mode not in _HIGH_DEPTH_MODES - {"F"} or raw.ndim != 2:
        raise DataError(
            f"{path}: expected a single-channel 16-bit depth PNG, got mode {mode!r}. "
            f"Depth maps must be saved as uint16, not as a visualisation."
        )
    return (raw.astype(np.float64) / scale).astype(np.float32)


def save_depth_npy(depth_m: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write an H×W depth map as float32 metres in ``.npy`` (values kept as they are, NaN included)."""
    depth = _as_depth_map(depth_m).astype(np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, depth)


# --------------------------------------------------------------------------------------------- colour


def _colormap_lut(cmap: str) -> np.ndarray:
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise ConfigError(
            f"unknown colour map {cmap!r}; use a matplotlib name such as 'turbo', 'viridis', 'magma'"
        ) from exc
    return np.rint(colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)


def depth_range(depth_m: np.ndarray) -> tuple[float, float]:
    """(min, max) of the valid (finite, > 0) depths in metres; (0, 1) when there are none."""
    depth = _as_depth_map(depth_m)
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        return 0.0, 1.0
    return float(valid.min()), float(valid.max())


def colorize_depth(
    depth_m: np.ndarray,
    *,
    cmap: str = "turbo",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
) -> np.ndarray:
    """Render an H×W depth map (metres) as an H×W'×3 uint8 RGB image.

    The colour map runs backwards so that near is the warm/bright end (red with ``turbo``) and far
    the cold end; depth is mapped linearly between ``vmin`` and ``vmax`` (metres; default: the min and
    max valid depth, so pass fixed values to keep colours stable across video frames). Invalid pixels
    (NaN, inf, ≤ 0) are black. With ``colorbar=True`` a bar labelled in metres is appended on the
    right, so W' > W; otherwise W' = W.

    Raises:
        ConfigError: ``cmap`` is not a matplotlib colour map.
    """
    depth = _as_depth_map(depth_m)
    lo, hi = depth_range(depth)
    vmin = lo if vmin is None else float(vmin)
    vmax = hi if vmax is None else float(vmax)
    if vmax <= vmin:
        vmax = vmin + 1e-6
    lut = _colormap_lut(cmap)
    valid = np.isfinite(depth) & (depth > 0)
    t = np.clip((np.where(valid, depth, vmax) - vmin) / (vmax - vmin), 0.0, 1.0)
    rgb = lut[np.rint((1.0 - t) * 255.0).astype(np.intp)]
    rgb[~valid] = 0
    if not colorbar:
        return rgb
    bar = _render_colorbar(depth.shape[0], cmap, round(vmin, 6), round(vmax, 6))
    return np.concatenate([rgb, bar], axis=1)


@functools.lru_cache(maxsize=8)
def _render_colorbar(height: int, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """height×w×3 uint8 white panel with a vertical bar, near (vmin) at the bottom; cached for video."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    dpi = 100
    fontsize = float(np.clip(height / 40.0, 5.0, 12.0))
    width = int(np.clip(fontsize * 9.0, 48, 120))
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    margin = min(0.06, 0.6 * fontsize / height)  # room for the end tick labels
    ax = fig.add_axes((0.12, margin, 0.18, 1.0 - 2 * margin))
    bar = ColorbarBase(ax, cmap=matplotlib.colormaps[cmap].reversed(), norm=Normalize(vmin, vmax))
    bar.ax.tick_params(labelsize=fontsize, length=fontsize / 3, pad=1)
    bar.set_label("depth (m)", fontsize=fontsize, labelpad=1)
    bar.outline.set_linewidth(0.5)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[:, :, :3]
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    h, w = min(height, image.shape[0]), min(width, image.shape[1])
    out[:h, :w] = image[:h, :w]
    out.flags.writeable = False
    return out
