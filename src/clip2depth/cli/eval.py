"""``clip2depth eval``: the community evaluation protocol on a dataset, for any model or baseline."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from clip2depth.data.base import LIST_FORMAT
from clip2depth.data.registry import DATASETS
from clip2depth.errors import ConfigError, DataError
from clip2depth.evaluation.metrics import CROPS
from clip2depth.models.infer import PRECISIONS

NAME = "eval"
HELP = "evaluate a model on NYU, KITTI, your own data or the synthetic scenes (BTS protocol)"

OUTPUTS = ("metrics.json", "per_image.csv")
"""What ``eval`` writes into ``--out``."""

logger = logging.getLogger(__name__)


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """Dataset flags shared by the commands that read datasets; names and defaults from the registry."""
    p.add_argument("--dataset", default="synthetic", choices=list(DATASETS),
                   help="dataset (default: synthetic, needs no files); "
                        + "; ".join(spec.describe() for spec in DATASETS.values()))
    p.add_argument("--data-root", default=None,
                   help="dataset root (default: the dataset's environment variable above); for nyu-mat the "
                        ".mat file or its folder; for folder a root holding <split>.txt")
    p.add_argument("--gt-root", default=None, help="KITTI ground-truth root (default: $CLIP2DEPTH_KITTI_GT_ROOT)")
    p.add_argument("--list-file", default=None,
                   help=f"list file overriding the packaged split list (required for folder without a root): "
                        f"{LIST_FORMAT}; paths are relative to the root or the list's folder. Malformed lines "
                        "are reported with their numbers and left out")
    p.add_argument("--split", default="test", help="split to read (default: test)")
    p.add_argument("--depth-scale", type=float, default=1000.0,
                   help="folder dataset: depth-PNG value per metre (default 1000); prediction PNGs use it too")
    p.add_argument("--filled", action="store_true", help="nyu-mat: use the filled 'depths' instead of rawDepths")
    p.add_argument("--synthetic", type=int, default=None, metavar="N", help="synthetic: number of scenes")
    p.add_argument("--synthetic-length", type=int, dest="synthetic", help=argparse.SUPPRESS)
    p.add_argument("--synthetic-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="synthetic: image size (default 240 320)")
    p.add_argument("--seed", type=int, default=0, help="synthetic: scene seed")


def dataset_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`clip2depth.data.build_dataset` from the dataset flags."""
    if args.dataset == "synthetic":
        kw = {"seed": args.seed}
        if args.synthetic is not None:
            kw["length"] = args.synthetic
        if args.synthetic_size is not None:
            kw["size"] = tuple(args.synthetic_size)
        return kw
    kw = {}
    if args.list_file:
        kw["list_file"] = args.list_file
    if args.dataset == "kitti" and args.gt_root:
        kw["gt_root"] = args.gt_root
    if args.dataset == "folder":
        kw["depth_scale"] = args.depth_scale
    if args.dataset == "nyu-mat":
        kw["filled"] = args.filled
    return kw


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP + ". Writes metrics.json and per_image.csv.")
    p.add_argument("--model", required=True, help="preset, trained-model directory, hf-hub:org/name, or "
                                                  "depthclip-rn50 for the zero-shot baseline")
    p.add_argument("--pretrained", default=None, help="CLIP weights: open_clip tag (openai) or local file")
    add_dataset_args(p)
    p.add_argument("--out", default=None, help="output directory (default: runs/eval-<dataset>); one that already "
                                               "holds metrics.json or per_image.csv is refused without --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of an earlier eval in --out (and PNGs in --save-png)")
    p.add_argument("--save-png", default=None, metavar="DIR",
                   help="write 16-bit prediction PNGs named as the BTS evaluator expects (KITTI ×256, otherwise "
                        "the dataset's depth scale, NYU ×1000), at the ground truth's full size: for KITTI the "
                        "KB-crop prediction sits on a zero canvas, so run BTS's evaluator without --do_kb_crop. "
                        "Images without valid ground truth get no PNG. A folder already holding PNGs is "
                        "refused without --overwrite")
    p.add_argument("--flip-tta", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--crop", default="default", choices=["default", "none", *CROPS],
                   help="evaluation crop (default: the dataset's own, listed under --dataset)")
    p.add_argument("--min-depth", type=float, default=None, help="valid-depth minimum (default: dataset's)")
    p.add_argument("--max-depth", type=float, default=None, help="valid-depth maximum / cap (default: dataset's)")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize inputs to this network size, multiples of the model's patch size "
                        "(default: own size rounded to the patch size)")
    p.add_argument("--input-box", type=int, nargs=4, default=None, metavar=("TOP", "LEFT", "H", "W"),
                   help="predict only inside this window of the image and evaluate only there")
    p.add_argument("--max-side", type=int, default=None, metavar="N",
                   help="predict images longer than N pixels on their longest side at reduced size, depth resized "
                        "back to the ground truth (default: no limit, the protocol's own size)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="inference precision: fp32 (default) or autocast to bf16 / fp16")
    p.add_argument("--protocol", default="standard", choices=["standard", "depthclip"],
                   help="'depthclip' reproduces DepthCLIP's own NYU table: flip TTA, input window rows "
                        "56:472 cols 60:604, crop nyu_depthclip (explicit flags still win)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N items (N >= 1)")
    p.add_argument("--spatial", action="store_true",
                   help="also report depth-boundary accuracy/completeness (dbe_acc, dbe_comp, pixels) and the "
                        "patch-grid artefact score (patch_artifact) under extra_metrics; see docs/analyses.md")
    p.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loader worker processes (0 = load in the main process)")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N, mps or auto (default: cuda, else mps, else cpu)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse numeric flag values that cannot work, before any data or model is loaded."""
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give a number of items of at least 1, or leave it out for all")
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers {args.num_workers}: give 0 (load in the main process) or more")
    if args.max_side is not None and args.max_side < 1:
        raise ConfigError(f"--max-side {args.max_side}: give a longest side in pixels of at least 1, or leave it out")
    if args.input_size is not None and min(args.input_size) < 1:
        raise ConfigError(f"--input-size {' '.join(map(str, args.input_size))}: height and width must be positive")
    if args.input_box is not None:
        top, left, h, w = args.input_box
        if top < 0 or left < 0 or h < 1 or w < 1:
            raise ConfigError(f"--input-box {top} {left} {h} {w}: TOP and LEFT must be >= 0, H and W positive")
    if args.synthetic is not None and args.synthetic < 1:
        raise ConfigError(f"--synthetic {args.synthetic}: give a number of scenes of at least 1")
    if args.depth_scale <= 0:
        raise ConfigError(f"--depth-scale {args.depth_scale}: must be positive (depth-PNG value per metre)")
    if args.min_depth is not None and args.min_depth < 0:
        raise ConfigError(f"--min-depth {args.min_depth}: must not be negative")
    if args.max_depth is not None and args.max_depth <= 0:
        raise ConfigError(f"--max-depth {args.max_depth}: must be positive")


def run(args: argparse.Namespace) -> int:
    from clip2depth.data import build_dataset
    from clip2depth.evaluation.protocol import EvalSettings, evaluate, markdown_table, write_outputs
    from clip2depth.io.outputs import claim_output_dir
    from clip2depth.models.depthclip import NYU_INPUT_BOX
    from clip2depth.models.factory import create_model, resolve_device

    check_args(args)
    device = resolve_device(args.device)
    dataset = build_dataset(args.dataset, split=args.split, root=args.data_root, **dataset_kwargs(args))
    if args.save_png:
        png_dir = Path(args.save_png)
        if png_dir.exists() and not png_dir.is_dir():
            raise ConfigError(f"--save-png {png_dir} is an existing file; pass a folder path")
        if not args.overwrite and png_dir.is_dir() and next(png_dir.rglob("*.png"), None) is not None:
            raise ConfigError(f"--save-png {png_dir} already holds PNGs of an earlier run; pass --overwrite to "
                              "replace them, or choose another folder")
    out = claim_output_dir(args.out or f"runs/eval-{args.dataset}", OUTPUTS, overwrite=args.overwrite)
    crop = {"default": dataset.default_crop, "none": None}.get(args.crop, args.crop)
    input_box = tuple(args.input_box) if args.input_box else None
    flip_tta = args.flip_tta
    if args.protocol == "depthclip":
        crop = "nyu_depthclip" if args.crop == "default" else crop
        input_box = input_box or NYU_INPUT_BOX
        flip_tta = True
    settings = EvalSettings(
        min_depth=args.min_depth if args.min_depth is not None else dataset.min_depth,
        max_depth=args.max_depth if args.max_depth is not None else dataset.max_depth,
        crop=crop,
        flip_tta=flip_tta,
        input_size=tuple(args.input_size) if args.input_size else None,
        input_box=input_box,
        png_scale=dataset.png_scale,
        max_side=args.max_side,
        precision=args.precision,
    )
    if settings.min_depth >= settings.max_depth:
        raise ConfigError(f"valid depth range ({settings.min_depth}, {settings.max_depth}) m is empty: "
                          "--min-depth must be below --max-depth")
    model = create_model(args.model, pretrained=args.pretrained, device=device)
    if settings.input_size is not None and any(v % model.patch_size for v in settings.input_size):
        raise ConfigError(f"--input-size {settings.input_size[0]} {settings.input_size[1]}: height and width must "
                          f"be multiples of the model's patch size {model.patch_size}")
    extra_metrics = None
    if args.spatial:
        from functools import partial

        from clip2depth.evaluation.spatial import spatial_metrics

        extra_metrics = partial(spatial_metrics, period=model.patch_size, min_depth=settings.min_depth)
    result = evaluate(model, dataset, settings, save_png=args.save_png, limit=args.limit,
                      num_workers=args.num_workers, extra_metrics=extra_metrics)
    write_outputs(result, out, extra={"model": args.model, "dataset": args.dataset, "split": args.split,
                                      "clip_pretrained": args.pretrained})
    label = f"{args.model}{' (flip TTA)' if flip_tta else ''}"
    print(markdown_table({label: result.metrics}))
    print(f"\n{result.count} images evaluated, {len(result.skipped)} skipped (no valid ground truth), "
          f"{len(result.failed)} failed, {len(result.bad_lines)} malformed list lines; crop={crop}, "
          f"depth range ({settings.min_depth}, {settings.max_depth}) m; results in {out}/")
    for line in result.bad_lines:
        print(f"  bad list line {line['line']}: {line['reason']}")
    for item in result.failed:
        print(f"  failed: {item['reason']}")
    out_of_memory = sum(bool(item.get("out_of_memory")) for item in result.failed)
    if out_of_memory:
        print(f"{out_of_memory} images ran out of memory: --max-side N predicts large images at a reduced size")
    if result.extra:
        print("spatial: " + ", ".join(f"{k} {v:.4f}" for k, v in result.extra.items()))
    if result.count == 0:
        raise DataError(f"no image was evaluated ({len(result.failed)} failed, {len(result.skipped)} without valid "
                        f"ground truth); the reasons are listed above and in {out / 'metrics.json'}")
    return 0
