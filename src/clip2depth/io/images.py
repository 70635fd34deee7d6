"""Reading images: any file, mode or array becomes H×W×3 uint8 RGB, upright as a viewer shows it."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from clip2depth.errors import DataError
from clip2depth.io.inputs import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

# Image modes whose samples do not fit in 8 bits; PIL's own convert("RGB") clips these instead of
# scaling them, so they go through numpy.
PNG16_MAX = 65535

HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

_EXIF_IFD = 0x8769  # the Exif sub-IFD, where camera settings live
_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm


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
        raise DataError(f"{path}: no such file. Check the path (for a dataset: the data root and the list file).")
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
    except PermissionError as exc:  # the file is fine; this user may not read it
        raise DataError(f"{path}: no permission to read it ({exc.strerror}); check its permissions") from exc
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
    if img.mode in HIGH_BIT_MODES:
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


FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
"""Diagonal of a 36×24 mm frame, against which "35 mm equivalent" focal lengths are stated."""


def exif_focal_35mm(path: str | os.PathLike[str]) -> float | None:
    """The EXIF ``FocalLengthIn35mmFilm`` of an image file in millimetres, or None when absent or unreadable."""
    try:
        with Image.open(path) as img:
            value = img.getexif().get_ifd(_EXIF_IFD).get(_FOCAL_35MM)
    except Exception as exc:  # EXIF is optional metadata: any failure to read it means "not known"
        logger.debug("%s: no EXIF focal length (%s: %s)", path, type(exc).__name__, exc)
        return None
    try:
        focal = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return focal if focal is not None and math.isfinite(focal) and focal > 0 else None


def focal_pixels_from_35mm(focal_35mm: float, width: int, height: int) -> float:
    """Focal length in pixels of a ``width``×``height`` image whose 35 mm equivalent focal length is known.

    The equivalent focal length gives the same diagonal field of view on a 36×24 mm frame, so
    ``f_px = focal_35mm × diagonal_px / 43.27`` (for a 3:2 image this is ``focal_35mm × width / 36``).
    """
    return focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
