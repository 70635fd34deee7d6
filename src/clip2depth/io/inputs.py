"""Finding users' inputs (files, folders, glob patterns) and naming their outputs.

Folders and ``**`` patterns are walked with symbolic links followed, but every real folder is entered
once and every real file listed once, so a link pointing back up the tree (a loop) ends the walk there
instead of recursing until the path is too long.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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

_MAGIC = re.compile(r"[*?[]")


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _is_media(path: str | os.PathLike[str]) -> bool:
    return is_image_path(path) or is_video_path(path)


@dataclass(frozen=True)
class FoundFile:
    """An input file and its output name.

    Attributes:
        path: the file, as reached from the input (not resolved: names keep the user's spelling).
        name: output name without extension (:func:`output_stem` relative to ``root``).
        root: the folder or glob root it was found under; None for a file given by name.
    """

    path: Path
    name: str
    root: Path | None = None


def walk_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Every non-hidden file below ``folder``, sorted per folder, following links, each real folder once.

    Hidden entries (name starting with ``.``, e.g. macOS ``._img.jpg``) are skipped. A link to a folder
    that was already entered (a loop, or a second way into the same folder) is not entered again.
    """
    visited: set[str] = set()

    def walk(directory: Path) -> Iterator[Path]:
        real = os.path.realpath(directory)
        if real in visited:
            logger.debug("not entering %s again (it is %s, already visited)", directory, real)
            return
        visited.add(real)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            logger.warning("cannot list %s (%s); skipping it", directory, exc.strerror or exc)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(directory, entry.name)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:  # a dangling or looping link
                continue
            if is_dir:
                yield from walk(path)
            elif is_file:
                yield path

    yield from walk(Path(folder))


def unreadable_folder(folder: str | os.PathLike[str]) -> str | None:
    """Why the folder ``folder`` cannot be listed (``"Permission denied"``), or None when it can.

    So that a folder the user may not read is reported as such, not as a folder without images.
    """
    try:
        with os.scandir(folder):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _glob_root(pattern: str) -> Path:
    """The longest leading folder of ``pattern`` without glob characters (``.`` for none)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _translate(pattern: str) -> re.Pattern[str]:
    """Regex for a glob pattern over ``/``-separated paths: ``**`` spans folders, other parts one name."""
    parts = pattern.split("/")
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _translate_name(part) + ("" if last else "/")
    return re.compile(regex + r"\Z", re.DOTALL)


def _translate_name(part: str) -> str:
    """Regex for one path component: ``*`` and ``?`` never cross a ``/``; ``[...]`` is a character class."""
    out, i = "", 0
    while i < len(part):
        ch = part[i]
        end = part.find("]", i + 2) if ch == "[" else -1
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif end > 0:
            body = part[i + 1 : end]
            body = body.replace("\\", "\\\\")
            out += "[" + ("^" + body[1:] if body.startswith("!") else body.replace("^", "\\^", 1)) + "]"
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return out


def _glob(pattern: str) -> tuple[list[Path], Path]:
    """Files matching ``pattern`` (sorted) and the root folder they are named relative to."""
    root = _glob_root(pattern)
    if "**" not in pattern:  # bounded depth: the standard glob cannot loop
        return [Path(m) for m in sorted(glob.glob(pattern)) if os.path.isfile(m)], root
    rx = _translate(Path(pattern).as_posix())
    found = []
    for path in walk_files(root):
        if rx.match(path.as_posix()):
            found.append(path)
    return found, root


def find_files(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[FoundFile], list[tuple[str, str]]]:
    """Turn command-line inputs (files, folders, glob patterns) into files with their output names.

    - A file is taken as given, whatever its extension (reading it reports whether it is an image),
      and named by its stem: ``shots/img.jpg`` → ``img``.
    - A folder is walked recursively (:func:`walk_files`) for image and video extensions and each file is
      named by its path below the folder: ``shots/`` finds ``shots/a/b/img.jpg`` → ``a__b__img``.
    - Anything else containing ``*``, ``?`` or ``[`` is a glob pattern (``**`` spans folders; hidden
      names are matched only by a pattern that starts with ``.``); it keeps the image and video files,
      named by their path below the pattern's fixed leading folder (``shots/**/*.jpg`` → as ``shots/``).

    So a file's output name depends only on the input it was found through, never on the other inputs.
    Files are checked only by name: a corrupt ``.jpg`` is still listed so the caller reports it. A real
    file reached twice (named and inside a named folder, or through a link) is listed once, first position.

    Returns:
        ``(files, problems)``: ``problems`` holds ``(input, reason)`` for each input that does not
        exist or matches no image or video.
    """
    files: list[FoundFile] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(found: Path, root: Path | None) -> None:
        key = os.path.normcase(os.path.realpath(found))
        if key not in seen:
            seen.add(key)
            files.append(FoundFile(found, output_stem(found, root), root))

    for item in inputs:
        raw = str(item)
        path = Path(raw).expanduser()
        if path.is_file():
            add(path, None)
        elif path.is_dir():
            reason = unreadable_folder(path)
            if reason is not None:
                problems.append((raw, f"folder cannot be read ({reason}); check its permissions"))
                continue
            found = [f for f in walk_files(path) if _is_media(f)]
            if not found:
                problems.append((raw, "folder contains no image or video files"))
            for f in found:
                add(f, path)
        elif _MAGIC.search(raw):
            matches, root = _glob(os.path.expanduser(raw))
            found = [f for f in matches if _is_media(f)]
            reason = unreadable_folder(root) if not found and root.is_dir() else None
            if reason is not None:
                problems.append((raw, f"folder {root} cannot be read ({reason}); check its permissions"))
                continue
            if not found:
                problems.append((raw, "pattern matches no image or video files"))
            for f in found:
                add(f, root)
        else:
            problems.append((raw, "no such file or folder"))
    return files, problems


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files of :func:`find_files`, without their output names."""
    files, problems = find_files(inputs)
    return [f.path for f in files], problems


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
