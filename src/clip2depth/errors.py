"""Errors a user can cause, and the one test for running out of memory. Imports nothing of ours (nor torch).

The CLI prints a :class:`Clip2DepthError`'s message (no traceback) and exits non-zero.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable


class Clip2DepthError(Exception):
    """Base class: the message names the offending thing and what to do about it.

    A message about the value of a parameter names it as the caller wrote it, ``name=value``
    (``fov_deg=200``, ``device='cuda:3'``), and lists ``name`` in :attr:`params`. A front end that sets
    the parameter under another name rewrites those mentions: the command line shows ``--fov 200``.

    Attributes:
        params: names of the keyword arguments or fields whose values the message is about.
    """

    def __init__(self, message: str = "", *, params: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.params = tuple(params)


class ConfigError(Clip2DepthError):
    """A preset, recipe, flag or override value is unknown or invalid."""


class CheckpointError(Clip2DepthError):
    """A checkpoint directory or weights file is missing, corrupt or made for another model."""


class DataError(Clip2DepthError):
    """An input file (image, depth map, list file, dataset root) is missing, unreadable or inconsistent."""


_ALLOCATOR_MESSAGES = ("out of memory", "DefaultCPUAllocator: can't allocate memory",
                       "Storage size calculation overflowed", "Caught MemoryError in DataLoader worker")
"""What allocation failures say when they arrive as a plain RuntimeError (CUDA before torch 2.1 named its
own class, MPS, HIP and the CPU allocator still do not). Also a tensor too large to even count its bytes,
which smaller inputs avoid just the same, and a MemoryError of a DataLoader worker, which torch raises
again as a RuntimeError when it cannot rebuild NumPy's own subclass."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure, CPU or GPU, which smaller inputs or batches may avoid.

    True for :class:`MemoryError` (NumPy, Python), ``torch.OutOfMemoryError`` and a ``RuntimeError`` whose
    message is an allocator's. torch is looked up only if something has imported it already.
    """
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _ALLOCATOR_MESSAGES)
