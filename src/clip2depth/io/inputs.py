"""Finding users' inputs (files, folders, glob patterns) and naming their outputs."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm"}
)
"""Lower-case suffixes collected from folders and glob patterns as images (first frame for GIF/TIFF)."""

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
)
"""Lower-case suffixes collected from folders and glob patterns as videos."""


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
