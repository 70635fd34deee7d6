"""The one figure helper (headless Agg figure, atomic PNG) and the plots drawn with it: size and pixels."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

from clip2depth.analysis.ablation import VariantResult, plot_ablation
from clip2depth.analysis.mirror import plot_convergence, plot_overlays
from clip2depth.evaluation.temporal import plot_temporal
from clip2depth.io import figures
from clip2depth.io.colour import colorize_depth
from clip2depth.reporting.report import plot_curves, plot_samples
from imagefiles import count_colour, png_rgb

BLUE = (31, 119, 180)  # matplotlib's C0 / tab:blue
RED = (214, 39, 40)  # C3 / tab:red
PURPLE = (148, 103, 189)  # C4



def test_figure_is_saved_at_its_size_with_what_was_drawn(tmp_path):
    fig = figures.figure(2.0, 1.5, dpi=50, tight=False)
    ax = fig.add_axes((0.0, 0.0, 0.5, 1.0))
    ax.set_axis_off()
    ax.add_patch(matplotlib.patches.Rectangle((0, 0), 1, 1, color="#ff0000"))
    figures.save_png(fig, tmp_path / "sub" / "plot.png")

    pixels = png_rgb(tmp_path / "sub" / "plot.png")
    assert pixels.shape == (75, 100, 3)
    assert (pixels[5:70, 5:45] == (255, 0, 0)).all()  # the drawn left half
    assert (pixels[:, 55:] == 255).all()  # a white background elsewhere
    np.testing.assert_array_equal(figures.render_rgb(fig), pixels)


def test_a_failed_save_keeps_the_previous_png(tmp_path, monkeypatch):
    path = tmp_path / "plot.png"
    figures.save_png(figures.figure(1, 1, dpi=20), path)
    before = path.read_bytes()
    fig = figures.figure(2, 2, dpi=20)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError):
        figures.save_png(fig, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_figures_never_touch_pyplot_or_the_backend(tmp_path, monkeypatch):
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("matplotlib.use() called"))
    before = matplotlib.get_backend()
    figures.save_png(figures.figure(1, 1), tmp_path / "a.png")
    assert matplotlib.get_backend() == before


def test_curves_plot_loss_left_and_abs_rel_right(tmp_path):
    log = [{"step": s, "loss": 1.0 / s} for s in range(1, 20)] + [{"step": s, "val_abs_rel": 0.5 - s / 100}
                                                                   for s in (5, 10, 15)]
    plot_curves(log, tmp_path / "curves.png")
    pixels = png_rgb(tmp_path / "curves.png")
    assert pixels.shape == (320, 900, 3)
    assert count_colour(pixels[:, :450], BLUE) > 100 and count_colour(pixels[:, 450:], BLUE) == 0
    assert count_colour(pixels[:, 450:], RED) > 100 and count_colour(pixels[:, :450], RED) == 0


def test_samples_show_rgb_and_coloured_depth_rows(tmp_path):
    rgb = torch.zeros(3, 40, 50)
    rgb[1] = 1.0  # a green image
    gt = torch.linspace(1.0, 4.0, 50).expand(1, 40, 50).clone()
    examples = [({"image": rgb, "depth": gt}, gt[0].numpy() * 1.1)] * 2
    plot_samples(examples, tmp_path / "samples.png", max_depth=10.0)
    pixels = png_rgb(tmp_path / "samples.png")
    assert pixels.shape == (2 * 234, 1170, 3)
    assert count_colour(pixels, (0, 255, 0)) > 2 * 500  # the RGB panel of both rows
    depth_colours = colorize_depth(gt[0].numpy(), vmin=0.0, vmax=4.0).reshape(-1, 3)
    assert count_colour(pixels, tuple(depth_colours[0])) > 0  # the nearest ground-truth colour is drawn


@pytest.mark.parametrize("with_gt", [False, True])
def test_temporal_plot_has_one_panel_or_three(tmp_path, with_gt):
    rows = [{"frame": i, "flicker": 0.01 * i} for i in range(6)]
    if with_gt:
        for r in rows:
            r.update(abs_rel=0.1, scale=1.0 + 0.01 * r["frame"], gt_flicker=0.0, change_error=0.01)
    plot_temporal({"per_frame": rows}, tmp_path / "t.png", title="walk")
    pixels = png_rgb(tmp_path / "t.png")
    assert pixels.shape == ((550 if with_gt else 300), 700, 3)
    assert count_colour(pixels, BLUE) > 50
    assert (count_colour(pixels, PURPLE) > 50) == with_gt  # the scale panel only with ground truth


def test_ablation_plot_has_a_bar_per_variant(tmp_path):
    results = [VariantResult(name=f"v{i}", overrides={}, run_dir="", metrics={"abs_rel": 0.1 * (i + 1), "d1": 0.5})
               for i in range(3)]
    results[2].same_as = "v0"
    plot_ablation(results, tmp_path / "ablation.png")
    pixels = png_rgb(tmp_path / "ablation.png")
    assert pixels.shape == (round(100 * (0.45 * 3 + 1.2)), 900, 3)
    grey = (127, 127, 127)  # C7: a variant sharing another's run
    assert count_colour(pixels, BLUE) > 4 * count_colour(pixels, grey) / 3 > 0


def test_mirror_plots(tmp_path):
    image = np.zeros((16, 24, 3))
    image[..., 2] = 1.0  # blue
    depth = np.linspace(1, 3, 16 * 24).reshape(16, 24).astype(np.float32)
    maps = [{"depth": depth, "reference_depth": depth * 1.2, "delta": np.abs(np.log(1.2)) * np.ones_like(depth),
             "mean_delta": float(np.log(1.2))}]
    plot_overlays([image], maps, tmp_path / "overlays.png")
    pixels = png_rgb(tmp_path / "overlays.png")
    assert pixels.shape == (round(80 * (2.6 + 0.4)), 960, 3)
    assert count_colour(pixels, (0, 0, 255)) > 200

    rows = [{"step": s, "prompt_cos": {"p": 0.1 * s}, "q_cos_final": 0.2 * s, "mean_delta": math.nan}
            for s in (1, 2, 3)]
    plot_convergence(rows, tmp_path / "convergence.png", prompts=["p"])
    pixels = png_rgb(tmp_path / "convergence.png")
    assert pixels.shape == (700, 1100, 3)
    assert count_colour(pixels, BLUE) > 50


def test_colour_bar_is_drawn_beside_the_depth(tmp_path):
    depth = np.linspace(1.0, 5.0, 120 * 80).reshape(120, 80).astype(np.float32)
    plain = colorize_depth(depth, vmin=1.0, vmax=5.0)
    with_bar = colorize_depth(depth, vmin=1.0, vmax=5.0, colorbar=True)
    assert with_bar.shape[0] == 120 and with_bar.shape[1] > 80
    np.testing.assert_array_equal(with_bar[:, :80], plain)
    bar = with_bar[:, 80:].astype(int)
    coloured = bar.max(axis=-1) - bar.min(axis=-1) > 60  # the bar itself, not the white panel or grey text
    column = int(np.argmax(coloured.sum(axis=0)))
    rows = np.nonzero(coloured[:, column])[0]
    assert rows.size > 100  # the bar spans almost the full height
    near, far = plain[0, 0].astype(int), plain[-1, -1].astype(int)  # 1 m (dark red) and 5 m (dark blue)
    top, bottom = bar[rows.min() + 2, column], bar[rows.max() - 2, column]

    def dist(a, b):
        return int(np.abs(a - b).sum())

    assert dist(bottom, near) < dist(bottom, far) and dist(top, far) < dist(top, near)  # near at the bottom
