"""Checksums of files: what checkpoints, resume state and downloads are verified with."""

from __future__ import annotations

import hashlib
import os

_BLOCK = 1 << 20


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of the file at ``path`` (``sha256``, ``md5`` or any :func:`hashlib.new` name), read by the MiB."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
