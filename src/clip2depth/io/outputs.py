"""Output folders: a command never silently replaces what an earlier run wrote there."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from clip2depth.errors import ConfigError


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
    (``--overwrite``, and ``--resume`` for commands that can continue a run).

    Returns:
        The folder as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output folder {path} is an existing file; pass a folder path")
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
    path.mkdir(parents=True, exist_ok=True)
    return path
