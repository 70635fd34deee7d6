"""Run reports: ``curves.png`` (loss and AbsRel against step), ``samples.png`` and ``report.md``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from clip2depth.evaluation.protocol import markdown_table
from clip2depth.io.atomic import atomic_path
from clip2depth.io.colour import colorize_depth


def read_log(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(log: list[dict[str, Any]], path: str | Path) -> None:
    """Training loss and validation AbsRel against step, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in log if "loss" in r]
    val = [r for r in log if "val_abs_rel" in r]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    axes[0].set(xlabel="step", ylabel="SILog loss", title="training loss")
    axes[1].plot([r["step"] for r in val], [r["val_abs_rel"] for r in val], "o-", color="tab:red")
    axes[1].set(xlabel="step", ylabel="AbsRel", title="validation AbsRel")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot_samples(examples: list[tuple[dict[str, Any], np.ndarray]], path: str | Path, *,
                 max_depth: float) -> None:
    """Rows of RGB | ground truth | prediction | |error| for a few validation images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(examples)
    fig, axes = plt.subplots(n, 4, figsize=(12, 2.6 * n), dpi=90, squeeze=False)
    for row, (sample, pred) in enumerate(examples):
        rgb = sample["image"].permute(1, 2, 0).numpy()
        gt = sample["depth"][0].numpy()
        valid = gt > 0
        error = np.where(valid, np.abs(pred - gt), 0.0)
        vmax = float(gt[valid].max()) if valid.any() else max_depth
        panels = [
            (rgb, "RGB"),
            (colorize_depth(gt, vmin=0.0, vmax=vmax), "ground truth"),
            (colorize_depth(pred, vmin=0.0, vmax=vmax), "prediction"),
            (None, "|error| (m)"),
        ]
        for col, (img, title) in enumerate(panels):
            ax = axes[row, col]
            if img is None:
                im = ax.imshow(error, cmap="magma", vmin=0.0, vmax=max(vmax / 4, 1e-3))
                fig.colorbar(im, ax=ax, fraction=0.035)
            else:
                ax.imshow(img)
            ax.set_title(title if row == 0 else "")
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


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
        lines += ["## Validation samples (RGB | ground truth | prediction | error)", "",
                  "![samples](samples.png)", ""]
    path = run_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def best_of(log: list[dict[str, Any]]) -> float:
    vals = [r["val_abs_rel"] for r in log if "val_abs_rel" in r and math.isfinite(r["val_abs_rel"])]
    return min(vals) if vals else math.nan
