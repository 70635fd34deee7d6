"""Atomic writes: a file appears under its final name whole or not at all."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

NAME_MAX = 255
"""Longest file name, in bytes, on the file systems in use (ext4, XFS, APFS, NTFS in UTF-16 units)."""


def temporary_name(name: str, *, suffix: str = "") -> str:
    """A hidden, unique name for a file that becomes ``name`` once complete: ``.<stem>.<random>.tmp<suffix>``.

    Never longer than :data:`NAME_MAX` bytes when ``name`` is not: the stem is shortened (by whole characters)
    to make room for the marks, so a file whose final name is allowed never fails for its temporary one.
    """
    marks = f".{secrets.token_hex(6)}.tmp{suffix}"
    stem = name[: len(name) - len(suffix)] if suffix and name.endswith(suffix) else name
    room = NAME_MAX - 1 - len(marks.encode())
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return f".{stem}{marks}"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file lives in the same folder (so ``os.replace`` is atomic) and has the same suffix
    (so writers that pick a format from the suffix still work), and a name no longer than the limit when
    ``path``'s is (:func:`temporary_name`). Missing parent folders are created.
    If the block raises, the temporary file is removed and ``path`` is left untouched. This guards
    against partial files from crashes and interrupts; it does not fsync.

    Example::

        with atomic_path(out / "depth.png") as tmp:
            Image.fromarray(array).save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temporary_name(path.name, suffix=path.suffix))
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


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON (trailing newline) through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object that :func:`atomic_write_json` stored at ``path``; None when the file is missing,
    unreadable, not valid JSON or not an object.

    For the caches and markers a command can rebuild (an evaluation's ``metrics.json``, a finished run's
    record): a damaged one is treated as absent, with a warning, instead of ending the command.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s is unreadable (%s); it is treated as missing and rebuilt", path, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("%s holds no JSON object; it is treated as missing and rebuilt", path)
        return None
    return data
