"""The paper's ablations in one run: train and evaluate variants of a recipe that differ in one model field.

Every variant is the same recipe (data, schedule, seed) with a few :class:`~clip2depth.models.config.ModelConfig`
fields changed through ``model_overrides``:

==================  =====================================================================
``prompt=MODE``     ``prompt_mode`` = ``mirror``, ``language``, ``concat`` or ``none``
``mirror_length=N`` ``prompt_mode=mirror``, ``mirror_length`` = N
``finetune=K``      ``prompt_mode=mirror``, ``unfreeze_image_blocks`` = K (the last K CLIP image blocks
                    that run are trained too: the "fine-tuning CLIP" comparison)
``backbone=PRESET`` the frozen CLIP of another preset (e.g. ``clip2depth-eva02-b-16``): its
                    :data:`BACKBONE_FIELDS`; decoder, prompt mode and depth range stay the recipe's
==================  =====================================================================

Each variant trains into ``<out>/<variant>/`` (a normal run directory) and its ``best/`` (or ``last/``)
model is evaluated on the recipe's validation split into ``<out>/<variant>/eval/``. A rerun skips what is
done: a finished training is not repeated, an interrupted one is resumed, an evaluation of the same
weights with the same settings is read back. Two variants that resolve to the same model (e.g.
``prompt=mirror`` and ``mirror_length=64`` for the ViT-B/16 preset) are trained once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip2depth.errors import ConfigError
from clip2depth.evaluation.metrics import METRIC_KEYS, lower_is_better
from clip2depth.io.atomic import atomic_path, atomic_write_json, read_json_object
from clip2depth.io.figures import figure, save_png
from clip2depth.io.outputs import writable_folder
from clip2depth.models.checkpoint import is_model_dir, read_model_dir
from clip2depth.models.config import PROMPT_MODES, list_models, load_preset
from clip2depth.training.config import Recipe, read_recipe_file

logger = logging.getLogger(__name__)

REPORT_OUTPUTS: tuple[str, ...] = ("ablation.md", "ablation.csv", "ablation.png")
"""The files an ablation writes into its output folder (besides one run folder per variant)."""

DEFAULT_VARIANTS: tuple[str, ...] = (
    "prompt=mirror",
    "prompt=language",
    "prompt=concat",
    "prompt=none",
    "mirror_length=1",
    "mirror_length=4",
    "mirror_length=16",
    "mirror_length=64",
    "finetune=1",
)
"""The variants run when none are named: the paper's prompt modes, mirror lengths and fine-tuning."""

TEMPORAL_KEYS: tuple[str, ...] = ("flicker", "change_error", "scale_drift")
"""Columns added by ``temporal_frames`` (see :func:`clip2depth.evaluation.temporal.temporal_metrics`)."""

BACKBONE_FIELDS: tuple[str, ...] = (
    "clip_model", "clip_pretrained", "clip_quick_gelu", "blocks", "decoder_stride", "head_strides", "mirror_length",
)
"""What ``backbone=PRESET`` takes from the preset: the CLIP, its feature levels, and the mirror length its
text context allows."""

# Train fields that cannot change the trained weights: a run differing only in these is reused.
_NEUTRAL_TRAIN_KEYS = ("num_workers", "log_every", "tensorboard", "time_limit_s")
_MARKER = "ablation_run.json"


def variant_overrides(name: str) -> dict[str, Any]:
    """The ``model_overrides`` of a variant name (see the module docstring)."""
    key, sep, value = name.partition("=")
    if not sep:
        raise ConfigError(f"variant {name!r}: expected prompt=MODE, mirror_length=N, finetune=K or backbone=PRESET")
    if key == "prompt":
        if value not in PROMPT_MODES:
            raise ConfigError(f"variant {name!r}: prompt mode must be one of {', '.join(PROMPT_MODES)}")
        return {"prompt_mode": value}
    if key in ("mirror_length", "finetune"):
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"variant {name!r}: {key} needs an integer") from None
        field_name = "mirror_length" if key == "mirror_length" else "unfreeze_image_blocks"
        return {"prompt_mode": "mirror", field_name: number}
    if key == "backbone":
        if value not in list_models():
            raise ConfigError(f"variant {name!r}: backbone must be a preset name, one of {', '.join(list_models())}")
        preset = load_preset(value).to_dict()
        return {field_name: preset[field_name] for field_name in BACKBONE_FIELDS}
    raise ConfigError(f"unknown variant {name!r}; use prompt=MODE, mirror_length=N, finetune=K or backbone=PRESET")


def variant_recipe(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """``recipe`` with ``overrides`` merged into its ``model_overrides`` (checked by the model config).

    A variant on another CLIP (``backbone=PRESET``) trains on that CLIP's own pretrained tag when the
    recipe asks for real weights (:meth:`Recipe.replace`): the recipe's tag names weights of its own CLIP only.
    """
    return recipe.replace(model_overrides={**recipe.model_overrides, **overrides})


def resolved_model_config(recipe: Recipe) -> dict[str, Any] | None:
    """The full model config a recipe trains; None when the model is remote."""
    config = recipe.model_spec.config
    return None if config is None else config.to_dict()


def _comparable(recipe: Recipe) -> dict[str, Any]:
    plain = recipe.to_dict()
    for key in _NEUTRAL_TRAIN_KEYS:
        plain["train"].pop(key, None)
    return plain


@dataclass
class VariantResult:
    """One row of the ablation table."""

    name: str
    overrides: dict[str, Any]
    run_dir: str
    checkpoint: str = ""
    step: int = 0
    complete: bool = False  # trained to the recipe's last step
    same_as: str | None = None  # the variant whose run this one shares
    trainable_params: int = 0
    train_seconds: float = math.nan
    count: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)  # spatial / temporal columns


def _read_resume_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "last" / "resume.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["state"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); delete {run_dir} to retrain this variant") from exc


def train_variant(recipe: Recipe, run_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train ``recipe`` into ``run_dir`` unless it is already trained there; returns the run's marker.

    The marker (``ablation_run.json``) records the run's total steps once training ended. A run directory
    trained with a different recipe is refused, never overwritten.
    """
    from clip2depth.training.trainer import train

    marker_path = run_dir / _MARKER
    state = _read_resume_state(run_dir)
    if state is not None:
        saved = run_dir / "config.yaml"
        if not saved.is_file() or _comparable(read_recipe_file(saved)) != _comparable(recipe):
            raise ConfigError(f"{run_dir} holds a run with other settings than this ablation's; pass another --out "
                              f"or delete {run_dir}")
        marker = read_json_object(marker_path) or {}
        if marker.get("total_steps") is not None and state["step"] >= marker["total_steps"]:
            logger.info("%s: already trained (%d steps), not retrained", run_dir.name, state["step"])
            return marker
        logger.info("%s: resuming at step %d", run_dir.name, state["step"])
        summary = train(recipe, run_dir, resume=True, progress=progress)
    else:  # a config.yaml without a checkpoint: interrupted before the first one, so start from step 0
        summary = train(recipe, run_dir, resume=(run_dir / "config.yaml").is_file(), progress=progress)
    marker = {"total_steps": None if summary.stopped else summary.total_steps, "stopped": summary.stopped}
    atomic_write_json(marker_path, marker)
    if summary.interrupted:  # the user wants the whole ablation to stop, not this variant
        raise KeyboardInterrupt
    return marker


def evaluate_variant(
    recipe: Recipe,
    model_dir: Path,
    out_dir: Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    spatial: bool = False,
    temporal_frames: int = 0,
    progress: bool = True,
) -> tuple[dict[str, Any], int]:
    """Evaluate ``model_dir`` with the recipe's evaluation settings; ``(metrics.json content, trainable)``.

    A ``metrics.json`` in ``out_dir`` for the same weights and settings is returned instead of
    re-evaluating.
    """
    from clip2depth.data import build_dataset
    from clip2depth.evaluation.protocol import evaluate, write_outputs
    from clip2depth.models.factory import create_model, resolve_device
    from clip2depth.models.profiling import count_parameters
    from clip2depth.training.datasets import build_datasets

    plain = recipe.to_dict()
    d, e = plain["data"], plain["eval"]
    limit = limit if limit is not None else recipe.eval.limit
    key = {"weights_sha256": read_model_dir(model_dir).get("weights_sha256"), "split": split, "limit": limit,
           "spatial": spatial, "temporal_frames": temporal_frames, "data": d, "eval": e}
    cached = out_dir / "metrics.json"
    data = read_json_object(cached)
    if data is not None and data.get("ablation_key") == json.loads(json.dumps(key)):
        return data, int(data["trainable_params"])

    model = create_model(model_dir, device=resolve_device("auto"))
    trainable, _ = count_parameters(model)
    if split is None:  # the run's own validation images (for folder data: its held-out part too)
        dataset = build_datasets(recipe.data, seed=recipe.train.seed)[1]
    else:
        dataset = build_dataset(recipe.data.dataset, split=split, root=recipe.data.root, **recipe.data.val_kwargs)
    settings = recipe.eval.settings()
    extra_metrics = None
    if spatial:
        from functools import partial

        from clip2depth.evaluation.spatial import spatial_metrics

        extra_metrics = partial(spatial_metrics, period=model.patch_size, min_depth=settings.min_depth)
    result = evaluate(model, dataset, settings, limit=limit, progress=progress, extra_metrics=extra_metrics)
    temporal: dict[str, float] = {}
    if temporal_frames:
        from clip2depth.evaluation.temporal import analyse_sequence, synthetic_sequence

        size = tuple(recipe.data.val_kwargs.get("size", (240, 320)))
        frames, depths = synthetic_sequence(temporal_frames, size=size, seed=recipe.train.seed)
        truth = {name: depth for (name, _), depth in zip(frames, depths, strict=True)}
        # native: the sequence is measured at the size the variants were validated at, as before
        summary = analyse_sequence(model, frames, truth.__getitem__, native=True, min_depth=settings.min_depth,
                                   max_depth=settings.max_depth)["summary"]
        temporal = {k: summary[k] for k in TEMPORAL_KEYS}
    write_outputs(result, out_dir, extra={"model": str(model_dir), "split": split or recipe.data.val_split,
                                          "trainable_params": trainable,
                                          "temporal_metrics": temporal, "ablation_key": key})
    return json.loads(cached.read_text()), trainable


def run_ablation(
    recipe: Recipe,
    out_dir: str | Path,
    variants: list[str] | None = None,
    *,
    checkpoint: str = "best",
    split: str | None = None,
    eval_limit: int | None = None,
    spatial: bool = False,
    temporal_frames: int = 0,
    progress: bool = True,
) -> list[VariantResult]:
    """Train (or reuse) and evaluate every variant, then write the report into ``out_dir``.

    Args:
        recipe: the base recipe (after ``--set`` overrides); every variant shares it but for its model fields.
        variants: names as in :data:`DEFAULT_VARIANTS` (default: all of those).
        checkpoint: ``best`` (lowest validation AbsRel, the default) or ``last``.
        split: evaluation split (default: the recipe's ``data.val_split``).
        spatial: add ``dbe_acc``, ``dbe_comp``, ``patch_artifact`` (:mod:`clip2depth.evaluation.spatial`).
        temporal_frames: >0 adds flicker, change error and scale drift on a synthetic camera path of that
            many frames (:mod:`clip2depth.evaluation.temporal`).

    Returns:
        One :class:`VariantResult` per variant, in the order given.
    """
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    names = list(dict.fromkeys(variants or DEFAULT_VARIANTS))
    out_dir = Path(out_dir)
    planned = []
    for name in names:  # resolve every variant first: a bad one fails before hours of training
        overrides = variant_overrides(name)
        vrecipe = variant_recipe(recipe, overrides)
        planned.append((name, overrides, vrecipe, resolved_model_config(vrecipe)))

    results: list[VariantResult] = []
    trained: dict[str, tuple[str, Recipe]] = {}  # identity of (model config, rest of recipe) → variant
    for i, (name, overrides, vrecipe, config) in enumerate(planned, 1):
        rest = {k: v for k, v in _comparable(vrecipe).items() if k != "model_overrides"}
        identity = json.dumps([config or vrecipe.model_overrides, rest], sort_keys=True, default=str)
        result = VariantResult(name=name, overrides=overrides, run_dir=str(out_dir / name))
        if identity in trained:
            twin, twin_recipe = trained[identity]
            logger.info("[%d/%d] %s: the same model as %s, not trained again", i, len(planned), name, twin)
            result.same_as, result.run_dir, vrecipe = twin, str(out_dir / twin), twin_recipe
        else:
            logger.info("[%d/%d] %s: model_overrides %s", i, len(planned), name, vrecipe.model_overrides)
            trained[identity] = (name, vrecipe)
            train_variant(vrecipe, out_dir / name, progress=progress)
        run_dir = Path(result.run_dir)
        state = _read_resume_state(run_dir) or {}
        marker = read_json_object(run_dir / _MARKER) or {}
        model_dir = run_dir / checkpoint if is_model_dir(run_dir / checkpoint) else run_dir / "last"
        data, trainable = evaluate_variant(vrecipe, model_dir, run_dir / "eval", split=split, limit=eval_limit,
                                           spatial=spatial, temporal_frames=temporal_frames, progress=progress)
        result.checkpoint = model_dir.name
        result.step = int((read_model_dir(model_dir).get("best") or {}).get("step", state.get("step", 0)))
        result.complete = marker.get("total_steps") is not None
        result.trainable_params = trainable
        result.train_seconds = float(state.get("elapsed_s", math.nan))
        result.count = int(data["count"])
        result.metrics = data["metrics"]
        result.extra = {**data.get("extra_metrics", {}), **data.get("temporal_metrics", {})}
        results.append(result)
    write_report(results, out_dir, recipe)
    return results


# ------------------------------------------------------------------------------------------ report


def _columns(results: list[VariantResult]) -> list[str]:
    extra = list(dict.fromkeys(k for r in results for k in r.extra))
    return [*METRIC_KEYS, *extra]


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def write_report(results: list[VariantResult], out_dir: str | Path, recipe: Recipe) -> None:
    """``ablation.csv`` (every number), ``ablation.md`` (the table, best value per column in bold) and
    ``ablation.png`` (AbsRel and δ1 per variant)."""
    out_dir = writable_folder(out_dir, "output folder")
    columns = _columns(results)
    rows = [{**r.metrics, **r.extra} for r in results]

    with atomic_path(out_dir / "ablation.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "model_overrides", "same_as", "checkpoint", "step", "complete", "count",
                         *columns, "trainable_params", "train_seconds"])
        for r, row in zip(results, rows, strict=True):
            writer.writerow([r.name, json.dumps(r.overrides), r.same_as or "", r.checkpoint, r.step, r.complete,
                             r.count, *[row.get(c, math.nan) for c in columns], r.trainable_params,
                             round(r.train_seconds, 2)])

    best: dict[str, float] = {}
    for c in columns:
        values = [row[c] for row in rows if c in row and math.isfinite(row[c])]
        if values:
            higher = c in METRIC_KEYS and not lower_is_better(c)
            best[c] = max(values) if higher else min(values)
    t = recipe.train
    lines = [
        "# Ablation",
        "",
        f"Recipe: model `{recipe.model}`, data `{recipe.data.dataset}`, seed {t.seed}, "
        f"{t.max_steps or str(t.epochs) + ' epochs'} steps, batch {t.batch_size}; every variant "
        "identical but for its model fields. Metrics on the evaluation split (BTS protocol); lower is better except "
        "δ1–δ3. Best value per column in bold.",
        "",
        "| variant | trainable | train s | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for r, row in zip(results, rows, strict=True):
        cells = []
        for c in columns:
            text = _fmt(row.get(c, math.nan))
            cells.append(f"**{text}**" if c in best and row.get(c) == best[c] and len(results) > 1 else text)
        notes = []
        if r.same_as:
            notes.append(f"same run as {r.same_as}")
        if not r.complete:
            notes.append("training incomplete")
        label = r.name + (f" ({'; '.join(notes)})" if notes else "")
        lines.append(f"| {label} | {r.trainable_params:,} | {r.train_seconds:.0f} | " + " | ".join(cells) + " |")
    lines += ["", f"Checkpoint evaluated: {results[0].checkpoint if results else '-'}; images: "
                  f"{results[0].count if results else 0}. Per-variant runs and metrics in `<variant>/` and "
                  "`<variant>/eval/`."]
    with atomic_path(out_dir / "ablation.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    plot_ablation(results, out_dir / "ablation.png")


def plot_ablation(results: list[VariantResult], path: str | Path) -> None:
    """Horizontal bars of AbsRel (lower is better) and δ1 (higher is better) per variant."""
    names = [r.name for r in results]
    fig = figure(9, 0.45 * len(names) + 1.2)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, title in ((axes[0], "abs_rel", "AbsRel (lower is better)"), (axes[1], "d1", "δ1 (higher is better)")):
        values = [r.metrics.get(key, math.nan) for r in results]
        bars = ax.barh(range(len(names)), values, color=["C0" if not r.same_as else "C7" for r in results])
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_title(title, fontsize=9)
        ax.margins(x=0.2)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    save_png(fig, path)
