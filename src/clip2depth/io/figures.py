"""Figures without a display: a matplotlib :class:`~matplotlib.figure.Figure` on its own Agg canvas.

Every plot of the package (run reports, analyses, the colour bar of depth images) is drawn on a figure from
:func:`figure`, never through ``pyplot``, so a caller's matplotlib backend and global state are left alone;
:func:`save_png` writes it atomically, so a plot is never half-written.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from clip2depth.io.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def figure(width: float, height: float, *, dpi: int = 100, tight: bool = True) -> Figure:
    """A white ``width``×``height`` inch figure at ``dpi`` (``width·dpi``×``height·dpi`` pixels) on an Agg canvas.

    ``tight``: lay the axes out with matplotlib's tight layout when the figure is drawn; ``False`` for
    figures whose axes are placed by hand.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, facecolor="white", layout="tight" if tight else None)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` as a PNG at its own size and dpi, atomically (missing folders are created)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def render_rgb(fig: Figure) -> np.ndarray:
    """Draw ``fig`` and return its pixels: ``height·dpi``×``width·dpi``×3 uint8 RGB."""
    fig.canvas.draw()
    return np.array(fig.canvas.buffer_rgba())[:, :, :3]
