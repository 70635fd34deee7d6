"""``clip2depth reproduce``: data → training with the paper recipe → standard evaluation → results table.

Stages, each resumable (re-running continues where the last run stopped):

1. data: the split lists are checked against the data root; with ``download`` what is missing is
   fetched (:func:`clip2depth.data.prepare.get_dataset`).
2. train: ``<out>/train`` with the built-in recipe; an interrupted run is resumed from ``last/``; a
   finished one (``<out>/train/finished.json``) is not touched again.
3. evaluate: ``<out>/train/best`` on the test split with the recipe's protocol into ``<out>/eval``, and
   the DepthCLIP zero-shot baseline into ``<out>/eval-depthclip`` when its weights can be loaded;
   skipped when ``metrics.json`` is already there.
4. ``<out>/results.md``: our row next to the numbers the papers report.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from clip2depth.data import build_dataset
from clip2depth.data.base import packaged_list, parse_list, read_list
from clip2depth.data.check import LIST_FILES, check_part
from clip2depth.data.prepare import KITTI_GT_DIR, disk_needed, download_plan, get_dataset
from clip2depth.errors import Clip2DepthError, DataError
from clip2depth.evaluation.metrics import METRIC_KEYS
from clip2depth.evaluation.protocol import evaluate, write_outputs
from clip2depth.io.atomic import atomic_write_bytes, atomic_write_json, read_json_object
from clip2depth.io.outputs import writable_folder
from clip2depth.models.factory import create_model, resolve_device
from clip2depth.models.profiling import count_flops, count_parameters
from clip2depth.training.config import Recipe, build_recipe
from clip2depth.training.resume import find_last
from clip2depth.training.trainer import train

logger = logging.getLogger(__name__)

ASSUMED_TFLOPS = 100.0
"""Sustained training throughput assumed for the GPU-hour estimate: 100 TFLOP/s, about a third of an
A100's bf16 peak (312) or a seventh of an H100's (990), typical of a data-loading-bound ViT-B/16 run."""

TRAIN_FLOPS_FACTOR = 1.1
"""A training step costs about one forward pass of the frozen encoder (no backward through it) plus
forward and backward of the small decoder and text path: about 1.1× the inference FLOPs per image."""


@dataclass(frozen=True)
class Reported:
    """Numbers a paper reports for itself (or that are derived from what it reports)."""

    system: str
    source: str
    frozen: str
    nyu: tuple[float, float, float] | None  # AbsRel, RMSE, δ1
    kitti: tuple[float, float, float] | None
    note: str = ""


REPORTED: tuple[Reported, ...] = (
    Reported("CLIP2Depth (paper)", "CLIP Can Understand Depth (arXiv 2024)", "CLIP frozen",
             None, None, "reports AbsRel only relative to Auty et al.: −68.7 % NYU (≈ 0.100), −75.6 % KITTI"),
    Reported("DepthCLIP", "Zhang et al., Can Language Understand Depth?, ACM MM 2022", "zero-shot",
             (0.388, 1.167, 0.394), None, "its own NYU crop and flip TTA"),
    Reported("Auty et al. (7 bins)", "Auty & Mikolajczyk, Learning to Prompt CLIP for Monocular Depth "
             "Estimation, ICCV Workshops 2023", "CLIP frozen", (0.319, 0.970, 0.465), (0.303, 6.322, 0.550)),
    Reported("Auty et al. (256 log bins)", "same paper", "CLIP frozen", (0.298, 0.933, 0.485),
             (0.238, 5.756, 0.652)),
    Reported("SPACE-CLIP", "SPACE-CLIP (arXiv preprint), frozen CLIP ViT-B/16, 12 M trainable", "CLIP frozen",
             (0.104, 0.385, 0.896), (0.090, 3.845, 0.909), "NYU without crop"),
    Reported("BTS", "Lee et al., From Big to Small, arXiv 2019 (DenseNet-161)", "fully trained",
             (0.110, 0.392, 0.885), (0.060, 2.798, 0.955)),
    Reported("AdaBins", "Bhat et al., AdaBins, CVPR 2021", "fully trained", (0.103, 0.364, 0.903),
             (0.058, 2.360, 0.964)),
    Reported("NeWCRFs", "Yuan et al., Neural Window Fully-connected CRFs, CVPR 2022", "fully trained",
             (0.095, 0.331, 0.923), (0.052, 2.072, 0.975)),
)
"""The comparison rows of ``results.md`` (see docs/method.md#baselines)."""


@dataclass
class ReproduceOptions:
    """What ``clip2depth reproduce`` was asked to do."""

    dataset: str
    out: Path
    data_root: Path
    download: bool = False
    mirror: str | None = None
    model: str | None = None
    overrides: list[str] = field(default_factory=list)
    train_list: str | None = None
    test_list: str | None = None
    nyu_splits: str | None = None
    depthclip: str | None = "openai"  # CLIP weights for the DepthCLIP baseline; None: skip it
    device: str = "auto"
    show_progress: bool = True


def recipe_for(opts: ReproduceOptions) -> Recipe:
    """The paper recipe for the dataset with the data root, split lists and user overrides applied."""
    extra: list[str] = []
    for key in ("kwargs", "val_kwargs"):
        if opts.dataset == "kitti":
            extra.append(f"data.{key}.gt_root={opts.data_root / KITTI_GT_DIR}")
        lst = opts.train_list if key == "kwargs" else opts.test_list
        if lst:
            extra.append(f"data.{key}.list_file={Path(lst).resolve()}")
    return build_recipe(opts.dataset, data_root=str(opts.data_root), model=opts.model,
                        overrides=[*extra, *opts.overrides])


# --------------------------------------------------------------------------------------------------
# Stages.


def stage_data(opts: ReproduceOptions) -> str:
    """Make sure train and test data are complete; returns a line for the log."""
    lists = {"train": opts.train_list, "test": opts.test_list}

    def incomplete() -> list[str]:
        return [part for part in ("train", "test")
                if not check_part(opts.dataset, opts.data_root, part, list_file=lists[part],
                                  show_progress=opts.show_progress).complete]

    missing = incomplete()
    if not missing:
        return f"data: {opts.dataset} under {opts.data_root} is complete"
    if not opts.download:
        raise DataError(f"{opts.dataset} under {opts.data_root} is incomplete ({', '.join(missing)}); pass "
                        f"--download, or run: clip2depth data check {opts.dataset} --root {opts.data_root}")
    result = get_dataset(opts.dataset, opts.data_root, mirror=opts.mirror, train_list=opts.train_list,
                         test_list=opts.test_list,
                         splits_file=opts.nyu_splits, show_progress=opts.show_progress)
    missing = incomplete()
    if missing:
        raise DataError(f"{opts.dataset} under {opts.data_root} is still incomplete after the download "
                        f"({', '.join(missing)}); run clip2depth data check {opts.dataset} --root {opts.data_root}")
    return f"data: fetched {len(result.done)} files into {opts.data_root}"


def stage_train(opts: ReproduceOptions, recipe: Recipe) -> tuple[dict[str, Any] | None, str | None]:
    """Train (or resume, or skip when finished); returns (summary of the finished run, None) or
    (None, why it stopped early)."""
    run_dir = opts.out / "train"
    finished = run_dir / "finished.json"
    done = read_json_object(finished)
    if done is not None:
        return done, None
    resume = find_last(run_dir) is not None
    summary = train(recipe, run_dir, resume=resume, progress=opts.show_progress)
    if summary.stopped:
        return None, summary.stopped
    info = {"state": asdict(summary.state), "total_steps": summary.total_steps,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU",
            "gpus": max(1, torch.cuda.device_count())}
    atomic_write_json(finished, info)
    return info, None


def _metrics_complete(out_dir: Path) -> dict[str, Any] | None:
    data = read_json_object(out_dir / "metrics.json")
    if data is not None and data.get("count", 0) > 0 and set(METRIC_KEYS) <= set(data.get("metrics", {})):
        return data
    return None


def _evaluate_into(model: torch.nn.Module, opts: ReproduceOptions, recipe: Recipe, out_dir: Path,
                   label: str) -> dict[str, Any]:
    d = recipe.data
    dataset = build_dataset(d.dataset, split="test", root=d.root, **d.val_kwargs)
    settings = recipe.eval.settings()
    settings.png_scale = dataset.png_scale
    result = evaluate(model, dataset, settings, progress=opts.show_progress)
    if result.count == 0:
        raise DataError(f"{label}: no test image could be evaluated ({len(result.failed)} failed); run "
                        f"clip2depth data check {opts.dataset} --root {opts.data_root}")
    write_outputs(result, out_dir, extra={"model": label, "dataset": opts.dataset, "split": "test"})
    return _metrics_complete(out_dir) or {}


def stage_eval(opts: ReproduceOptions, recipe: Recipe) -> dict[str, Any]:
    """Evaluate ``train/best`` with the standard protocol (skipped when done); returns metrics.json."""
    out_dir = opts.out / "eval"
    done = _metrics_complete(out_dir)
    if done:
        return done
    model = create_model(str(opts.out / "train" / "best"), device=resolve_device(opts.device))
    return _evaluate_into(model, opts, recipe, out_dir, "CLIP2Depth (this run)")


def stage_depthclip(opts: ReproduceOptions, recipe: Recipe) -> tuple[dict[str, Any] | None, str]:
    """The DepthCLIP baseline under the same protocol, when its CLIP weights load; (metrics or None, note)."""
    out_dir = opts.out / "eval-depthclip"
    done = _metrics_complete(out_dir)
    if done:
        return done, ""
    if opts.depthclip is None:
        return None, "DepthCLIP not evaluated (--depthclip none)"
    if opts.dataset != "nyu":
        return None, "DepthCLIP not evaluated: its depth bins (1–3 m) and prompts are made for indoor scenes"
    try:
        model = create_model("depthclip-rn50", pretrained=opts.depthclip, device=resolve_device(opts.device))
    except (Clip2DepthError, OSError, RuntimeError) as exc:
        return None, f"DepthCLIP not evaluated: its weights ({opts.depthclip}) could not be loaded ({exc})"
    return _evaluate_into(model, opts, recipe, out_dir, "DepthCLIP (our harness)"), ""


# --------------------------------------------------------------------------------------------------
# Cost and the results table.


def cost(recipe: Recipe, *, train_items: int, test_items: int) -> dict[str, float]:
    """Trainable parameters, GFLOPs per image at the training crop, and the GPU-hour estimate.

    Estimate: ``steps × batch × GFLOPs × TRAIN_FLOPS_FACTOR`` for training plus one forward per test
    image, at :data:`ASSUMED_TFLOPS`. Validation during training is not counted.
    """
    # Random CLIP weights count the same FLOPs; their "random weights" warnings would only mislead here.
    logging.disable(logging.WARNING)
    try:
        model = create_model(recipe.model, pretrained=None, **recipe.model_overrides)
    finally:
        logging.disable(logging.NOTSET)
    trainable, _ = count_parameters(model)
    h, w = (int(v) for v in recipe.augment.crop_size)
    gflops = count_flops(model, h, w)["per_image"]
    t = recipe.train
    batch = t.batch_size
    steps = t.max_steps if t.max_steps else t.epochs * max(train_items // batch, 1)
    total = steps * batch * gflops * TRAIN_FLOPS_FACTOR + test_items * gflops
    return {"trainable_params": float(trainable), "gflops": gflops, "steps": float(steps),
            "gpu_hours": total * 1e9 / (ASSUMED_TFLOPS * 1e12) / 3600}


def _fmt(values: tuple[float, float, float] | None) -> list[str]:
    return ["–", "–", "–"] if values is None else [f"{values[0]:.3f}", f"{values[1]:.3f}", f"{values[2]:.3f}"]


def _ours(metrics: dict[str, Any]) -> tuple[float, float, float]:
    m = metrics["metrics"]
    return (m["abs_rel"], m["rmse"], m["d1"])


def results_markdown(opts: ReproduceOptions, recipe: Recipe, *, ours: dict[str, Any],
                     depthclip: dict[str, Any] | None, depthclip_note: str, train_info: dict[str, Any],
                     cost_info: dict[str, float]) -> str:
    """``results.md``: our measured row, the DepthCLIP baseline in our harness, and the reported rows."""
    state = train_info["state"]
    gpu_hours = state["elapsed_s"] / 3600 * train_info.get("gpus", 1)
    crop = recipe.eval.crop
    lines = [
        f"# Reproduction on {'NYU Depth v2' if opts.dataset == 'nyu' else 'KITTI (Eigen split)'}",
        "",
        f"Protocol: test split ({ours['count']} images evaluated, {ours.get('skipped_count', 0)} without valid "
        f"ground truth), crop `{crop}`, depth range ({recipe.eval.min_depth}, {recipe.eval.max_depth}) m "
        "(docs/method.md#evaluation-protocol). Rows marked *reported* are the numbers each paper gives for "
        "itself, not measured here.",
        "",
        "| system | source | AbsRel ↓ | RMSE ↓ | δ1 ↑ | backbone | trainable params | GFLOPs / image | GPU "
        "| GPU hours |",
        "|---|---|---:|---:|---:|---|---:|---:|---|---:|",
        "| **CLIP2Depth (this run)** | measured | " + " | ".join(_fmt(_ours(ours))) + " | CLIP frozen | "
        f"{cost_info['trainable_params'] / 1e6:.2f} M | {cost_info['gflops']:.1f} | {train_info.get('gpu', '?')} "
        f"×{train_info.get('gpus', 1)} | {gpu_hours:.2f} |",
    ]
    if depthclip is not None:
        lines.append("| DepthCLIP (our harness) | measured, zero-shot | " + " | ".join(_fmt(_ours(depthclip)))
                     + " | zero-shot | 0 | – | – | – |")
    for row in REPORTED:
        values = row.nyu if opts.dataset == "nyu" else row.kitti
        note = f" ({row.note})" if row.note else ""
        lines.append(f"| {row.system} | reported: {row.source}{note} | " + " | ".join(_fmt(values))
                     + f" | {row.frozen} | – | – | – | – |")
    lines += [
        "",
        f"Training: {state['step']} steps ({train_info['total_steps']} planned), best validation AbsRel "
        f"{state['best_abs_rel']:.4f} at step {state['best_step']}; model `{recipe.model}`. GFLOPs are one "
        f"forward pass at the {'×'.join(str(v) for v in recipe.augment.crop_size)} training crop.",
    ]
    if depthclip_note:
        lines += ["", depthclip_note + "."]
    return "\n".join(lines) + "\n"


def _count_list(dataset: str, part: str, list_file: str | None) -> int:
    source = list_file or LIST_FILES[dataset][part]
    parsed = parse_list(read_list(list_file) if list_file else packaged_list(source), str(source))
    return len(parsed.entries) + parsed.skipped_no_gt


def dry_run_plan(opts: ReproduceOptions) -> str:
    """The plan, sizes and GPU-hour estimate, computed without network or training."""
    recipe = recipe_for(opts)
    writable_folder(opts.out, "output folder", create=False)
    plan = download_plan(opts.dataset, opts.data_root, mirror=opts.mirror, train_list=opts.train_list,
                         test_list=opts.test_list, online=False)
    to_fetch = sum(size for _, size, _ in plan)
    c = cost(recipe, train_items=_count_list(opts.dataset, "train", opts.train_list),
             test_items=_count_list(opts.dataset, "test", opts.test_list))
    t = recipe.train
    fetch_line = (f"download {len(plan)} files, about {to_fetch / 1e9:.1f} GB, "
                  f"{disk_needed(plan) / 1e9:.1f} GB free disk needed" if opts.download and plan else
                  "check the data (pass --download to fetch what is missing)" if plan else "data already unpacked")
    return "\n".join([
        f"reproduce {opts.dataset} into {opts.out} (data root {opts.data_root}):",
        f"  1. data: {fetch_line}",
        f"  2. train: recipe {opts.dataset}, model {recipe.model}, {int(c['steps'])} steps of batch "
        f"{t.batch_size} at {'×'.join(str(v) for v in recipe.augment.crop_size)} → {opts.out}/train",
        f"  3. evaluate {opts.out}/train/best on the test split (crop {recipe.eval.crop}) → {opts.out}/eval"
        + ("" if opts.depthclip is None or opts.dataset != "nyu"
           else f"; DepthCLIP ({opts.depthclip} weights) → {opts.out}/eval-depthclip"),
        f"  4. write {opts.out}/results.md",
        f"cost: {c['trainable_params'] / 1e6:.2f} M trainable parameters, {c['gflops']:.1f} GFLOPs per image; "
        f"estimate {c['gpu_hours']:.1f} GPU hours of compute",
        f"  (a lower bound: assumes {ASSUMED_TFLOPS:.0f} TFLOP/s sustained and a training step costing "
        f"{TRAIN_FLOPS_FACTOR}× one forward pass per image, since the frozen CLIP gets no backward pass; "
        "validation during training and image decoding are not counted and often dominate)",
    ])


def reproduce(opts: ReproduceOptions) -> dict[str, Any]:
    """Run every stage (see the module docstring); returns ``{"stopped": reason or None, "results": path}``."""
    recipe = recipe_for(opts)
    writable_folder(opts.out, "output folder")
    if opts.download:  # before any model or download: the data lands there
        writable_folder(opts.data_root, "data root", create=False)
    logger.info(stage_data(opts))
    train_info, stopped = stage_train(opts, recipe)
    if train_info is None:
        return {"stopped": stopped, "results": None}
    ours = stage_eval(opts, recipe)
    depthclip, note = stage_depthclip(opts, recipe)
    c = cost(recipe, train_items=0, test_items=0)
    text = results_markdown(opts, recipe, ours=ours, depthclip=depthclip, depthclip_note=note,
                            train_info=train_info, cost_info=c)
    path = opts.out / "results.md"
    atomic_write_bytes(path, text.encode())
    return {"stopped": None, "results": path, "metrics": ours["metrics"], "note": note}
