"""Image files PIL cannot write, built byte by byte for tests."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def png16_rgb(array: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (bytes) holding the H×W×3 uint16 ``array``."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_rgb(path) -> np.ndarray:
    """H×W×3 uint8 pixels of the PNG at ``path`` (asserts it is one): how figure tests read what was drawn."""
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def count_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    """How many pixels of ``pixels`` are exactly ``colour`` (e.g. one of matplotlib's series colours)."""
    return int(np.all(pixels == colour, axis=-1).sum())
