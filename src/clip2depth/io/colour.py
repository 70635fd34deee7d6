"""Depth maps as colour images (matplotlib colour maps), with an optional colour bar."""

from __future__ import annotations

import functools
import logging

import numpy as np

from clip2depth.errors import ConfigError
from clip2depth.io.depth import as_depth_map
from clip2depth.io.figures import figure, render_rgb

logger = logging.getLogger(__name__)


def _colormap_lut(cmap: str) -> np.ndarray:
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise ConfigError(
            f"unknown colour map {cmap!r}; use a matplotlib name such as 'turbo', 'viridis', 'magma'"
        ) from exc
    return np.rint(colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)


def depth_range(depth_m: np.ndarray) -> tuple[float, float]:
    """(min, max) of the valid (finite, > 0) depths in metres; (0, 1) when there are none."""
    depth = as_depth_map(depth_m)
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        return 0.0, 1.0
    return float(valid.min()), float(valid.max())


def colorize_depth(
    depth_m: np.ndarray,
    *,
    cmap: str = "turbo",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
) -> np.ndarray:
    """Render an H×W depth map (metres) as an H×W'×3 uint8 RGB image.

    The colour map runs backwards so that near is the warm/bright end (red with ``turbo``) and far
    the cold end; depth is mapped linearly between ``vmin`` and ``vmax`` (metres; default: the min and
    max valid depth, so pass fixed values to keep colours stable across video frames). Invalid pixels
    (NaN, inf, ≤ 0) are black. With ``colorbar=True`` a bar labelled in metres is appended on the
    right, so W' > W; otherwise W' = W.

    Raises:
        ConfigError: ``cmap`` is not a matplotlib colour map.
    """
    depth = as_depth_map(depth_m)
    lo, hi = depth_range(depth)
    vmin = lo if vmin is None else float(vmin)
    vmax = hi if vmax is None else float(vmax)
    if vmax <= vmin:
        vmax = vmin + 1e-6
    lut = _colormap_lut(cmap)
    valid = np.isfinite(depth) & (depth > 0)
    t = np.clip((np.where(valid, depth, vmax) - vmin) / (vmax - vmin), 0.0, 1.0)
    rgb = lut[np.rint((1.0 - t) * 255.0).astype(np.intp)]
    rgb[~valid] = 0
    if not colorbar:
        return rgb
    bar = _render_colorbar(depth.shape[0], cmap, round(vmin, 6), round(vmax, 6))
    return np.concatenate([rgb, bar], axis=1)


@functools.lru_cache(maxsize=8)
def _render_colorbar(height: int, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """height×w×3 uint8 white panel with a vertical bar, near (vmin) at the bottom; cached for video."""
    import matplotlib
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize

    dpi = 100
    fontsize = float(np.clip(height / 40.0, 5.0, 12.0))
    width = int(np.clip(fontsize * 9.0, 48, 120))
    fig = figure(width / dpi, height / dpi, dpi=dpi, tight=False)
    margin = min(0.06, 0.6 * fontsize / height)  # room for the end tick labels
    ax = fig.add_axes((0.12, margin, 0.18, 1.0 - 2 * margin))
    bar = ColorbarBase(ax, cmap=matplotlib.colormaps[cmap].reversed(), norm=Normalize(vmin, vmax))
    bar.ax.tick_params(labelsize=fontsize, length=fontsize / 3, pad=1)
    bar.set_label("depth (m)", fontsize=fontsize, labelpad=1)
    bar.outline.set_linewidth(0.5)
    image = render_rgb(fig)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    h, w = min(height, image.shape[0]), min(width, image.shape[1])
    out[:h, :w] = image[:h, :w]
    out.flags.writeable = False
    return out
