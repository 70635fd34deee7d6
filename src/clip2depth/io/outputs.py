"""Output folders: a command never silently replaces what an earlier run wrote there."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from clip2depth.errors import ConfigError


def writable_folder(path: str | os.PathLike[str], what: str, *, create: bool = True) -> Path:
    """``path`` as a folder this process can write into, created (with its parents) unless ``create`` is False.

    Raises :class:`ConfigError` naming ``what`` (e.g. ``"dataset root"``) and ``path`` when it is an existing
    file, when a folder above it is a file, or when the nearest existing folder is not writable, instead of
    the bare "File exists" / "Not a directory" / "Permission denied" of ``mkdir``.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise ConfigError(f"{what} {path} is an existing file, not a folder; pass a folder path (it is created "
                          "when missing)")
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {probe} is a file, not a folder; pass another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: no permission to write in {probe}; choose a folder you can write to "
                          "or change its permissions")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{what} {path} cannot be created ({exc.strerror or exc}); choose another folder or "
                              "fix the one above it") from None
    return path


def claim_output_dir(
    path: str | os.PathLike[str],
    outputs: Sequence[str],
    *,
    overwrite: bool = False,
    resumable: bool = False,
) -> Path:
    """Make ``path`` ready for a command that writes ``outputs`` (file or folder names) into it.

    A missing or empty folder, or one holding none of ``outputs``, is used as it is (and created).
    If any of ``outputs`` already exists there, the command would replace an earlier run's results:
    with ``overwrite`` those outputs are deleted first (nothing else in the folder is touched),
    otherwise :class:`ConfigError` names the folder, what it holds, and the flags that decide
    (``--overwrite``, and ``--resume`` for commands that can continue a run). A path that is a file,
    lies below a file or cannot be written is refused as :func:`writable_folder` describes.

    Returns:
        The folder as a :class:`~pathlib.Path`.
    """
    path = writable_folder(path, "output folder", create=False)
    present = [name for name in outputs if (path / name).exists() or (path / name).is_symlink()]
    if present and not overwrite:
        shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
        how = "--resume to continue that run, or --overwrite" if resumable else "--overwrite"
        raise ConfigError(
            f"{path} already holds the outputs of an earlier run ({shown}); "
            f"pass {how} to replace them, or choose another output folder"
        )
    for name in present:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    return writable_folder(path, "output folder")
