"""Progress bars: shown on an interactive terminal, silent in files, pipes and with ``-q``.

Every long loop in the package goes through :func:`progress`, so one switch (:func:`set_progress`)
turns them all off, and nothing writes carriage-return redraws into a log file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

_enabled = True


def set_progress(enabled: bool) -> None:
    """Turn every progress bar of this process on (the default: on a terminal only) or off."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    return _enabled


def progress(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A :class:`tqdm` bar over ``iterable`` (or a manual one with ``total=``), on stderr.

    ``enabled=False`` (a caller's own switch) or :func:`set_progress(False) <set_progress>` hides it;
    otherwise it is shown only when stderr is a terminal (tqdm's ``disable=None``).
    """
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=None if (enabled and _enabled) else True, **kwargs)
