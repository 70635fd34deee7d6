"""Run reports: ``curves.png`` (loss and AbsRel against step), ``samples.png`` and ``report.md``.

Figures come from :mod:`clip2depth.io.figures` (headless, written atomically).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from clip2depth.evaluation.protocol import markdown_table
from clip2depth.io.atomic import atomic_path
from clip2depth.io.colour import colorize_depth
from clip2depth.io.figures import figure, save_png

logger = logging.getLogger(__name__)

DEPTH_CMAP = "turbo"
"""The colour map of depth images (run backwards by :func:`colorize_depth`: near is red)."""


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl`` (empty if it does not exist).

    The log is appended line by line, so a run killed mid-write can leave a partial line: such lines are
    left out with a warning rather than losing the report.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records, broken = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            broken += 1
    if broken:
        logger.warning("%s: %d unreadable line(s) left out (a run interrupted while writing its log)", path, broken)
    return records


def plot_curves(log: list[dict[str, Any]], path: str | Path) -> None:
    """Training loss and validation AbsRel against step, side by side."""
    train = [r for r in log if "loss" in r]
    val = [r for r in log if "val_abs_rel" in r]
    fig = figure(9, 3.2)
    axes = fig.subplots(1, 2)
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    axes[0].set(xlabel="step", ylabel="SILog loss", title="training loss")
    axes[1].plot([r["step"] for r in val], [r["val_abs_rel"] for r in val], "o-", color="tab:red")
    axes[1].set(xlabel="step", ylabel="AbsRel", title="validation AbsRel")
    for ax in axes:
        ax.grid(alpha=0.3)
    save_png(fig, path)


def plot_samples(examples: list[tuple[dict[str, Any], np.ndarray]], path: str | Path, *,
                 max_depth: float) -> None:
    """Rows of RGB | ground truth | prediction | |error| for a few validation images.

    Ground truth and prediction of a row share one depth scale (0 to the row's largest valid
    ground-truth depth, else ``max_depth``), shown by a colour bar in metres; the error has its own.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n = len(examples)
    fig = figure(13, 2.6 * max(n, 1), dpi=90)
    axes = fig.subplots(max(n, 1), 4, squeeze=False)
    for row, (sample, pred) in enumerate(examples):
        rgb = sample["image"].permute(1, 2, 0).numpy()
        gt = sample["depth"][0].numpy()
        valid = gt > 0
        error = np.where(valid, np.abs(pred - gt), 0.0)
        vmax = float(gt[valid].max()) if valid.any() else max_depth
        depth_scale = ScalarMappable(norm=Normalize(0.0, vmax), cmap=f"{DEPTH_CMAP}_r")
        axes[row, 0].imshow(rgb)
        for col, depth in ((1, gt), (2, pred)):
            axes[row, col].imshow(colorize_depth(depth, cmap=DEPTH_CMAP, vmin=0.0, vmax=vmax))
            fig.colorbar(depth_scale, ax=axes[row, col], fraction=0.035, label="m" if col == 2 else None)
        im = axes[row, 3].imshow(error, cmap="magma", vmin=0.0, vmax=max(vmax / 4, 1e-3))
        fig.colorbar(im, ax=axes[row, 3], fraction=0.035, label="m")
        for col, title in enumerate(("RGB", "ground truth (m)", "prediction (m)", "|error| (m)")):
            axes[row, col].set_title(title if row == 0 else "")
            axes[row, col].axis("off")
    save_png(fig, path)


def write_report(run_dir: str | Path, *, title: str, results: dict[str, dict[str, float]],
                 notes: list[str] | None = None) -> Path:
    """``report.md`` that links ``curves.png`` and ``samples.png`` (when present) and tabulates results."""
    run_dir = Path(run_dir)
    lines = [f"# {title}", ""]
    lines += [markdown_table(results), ""]
    for note in notes or []:
        lines.append(f"- {note}")
    if notes:
        lines.append("")
    if (run_dir / "curves.png").is_file():
        lines += ["## Training curves", "", "![curves](curves.png)", ""]
    if (run_dir / "samples.png").is_file():
        lines += ["## Test samples (RGB | ground truth | prediction | error; colour bars in metres)", "",
                  "![samples](samples.png)", ""]
    path = run_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path
