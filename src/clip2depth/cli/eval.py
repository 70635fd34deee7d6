"""``clip2depth eval``: the community evaluation protocol on a dataset, for any model or baseline."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

NAME = "eval"
HELP = "evaluate a model on NYU, KITTI, your own data or the synthetic scenes (BTS protocol)"

logger = logging.getLogger(__name__)

CROP_CHOICES = ["default", "none", "nyu_eigen", "nyu_depthclip", "kitti_garg", "kitti_eigen"]


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """Dataset flags shared by the commands that read datasets."""
    p.add_argument("--dataset", default="synthetic", choices=["nyu", "nyu-mat", "kitti", "folder", "synthetic"],
                   help="dataset layout (default: synthetic, needs no files)")
    p.add_argument("--data-root", default=None,
                   help="dataset root (env: CLIP2DEPTH_NYU_ROOT / CLIP2DEPTH_KITTI_ROOT); for nyu-mat the "
                        ".mat file or its folder; for folder a root holding <split>.txt")
    p.add_argument("--gt-root", default=None, help="KITTI ground-truth root (env: CLIP2DEPTH_KITTI_GT_ROOT)")
    p.add_argument("--list-file", default=None, help="list file of 'rgb depth [focal]' lines (overrides the "
                                                     "packaged split list; required for folder without a root)")
    p.add_argument("--split", default="test", help="split to read (default: test)")
    p.add_argument("--depth-scale", type=float, default=1000.0,
                   help="folder dataset: PNG depth value per metre (default 1000)")
    p.add_argument("--filled", action="store_true", help="nyu-mat: use the filled 'depths' instead of rawDepths")
    p.add_argument("--synthetic-length", type=int, default=None, help="synthetic: number of scenes")
    p.add_argument("--synthetic-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="synthetic: image size (default 240 320)")
    p.add_argument("--seed", type=int, default=0, help="synthetic: scene seed")


def dataset_kwargs(args: argparse.Namespace) -> dict:
    if args.dataset == "synthetic":
        kw = {"seed": args.seed}
        if args.synthetic_length is not None:
            kw["length"] = args.synthetic_length
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
    p.add_argument("--out", default=None, help="output directory (default: runs/eval-<dataset>)")
    p.add_argument("--save-png", default=None, metavar="DIR",
                   help="write 16-bit prediction PNGs named as the BTS evaluator expects (NYU ×1000, KITTI ×256)")
    p.add_argument("--flip-tta", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--crop", default="default", choices=CROP_CHOICES,
                   help="evaluation crop (default: the dataset's standard: NYU eigen, KITTI garg, none otherwise)")
    p.add_argument("--min-depth", type=float, default=None, help="valid-depth minimum (default: dataset's)")
    p.add_argument("--max-depth", type=float, default=None, help="valid-depth maximum / cap (default: dataset's)")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize inputs to this network size (default: own size rounded to the patch size)")
    p.add_argument("--input-box", type=int, nargs=4, default=None, metavar=("TOP", "LEFT", "H", "W"),
                   help="predict only inside this window of the image and evaluate only there")
    p.add_argument("--protocol", default="standard", choices=["standard", "depthclip"],
                   help="'depthclip' reproduces DepthCLIP's own NYU table: flip TTA, input window rows "
                        "56:472 cols 60:604, crop nyu_depthclip (explicit flags still win)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    p.add_argument("--spatial", action="store_true",
                   help="also report depth-boundary accuracy/completeness (dbe_acc, dbe_comp, pixels) and the "
                        "patch-grid artefact score (patch_artifact) under extra_metrics; see docs/analyses.md")
    p.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1), help="data loader workers")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.data import build_dataset
    from clip2depth.evaluation.protocol import EvalSettings, evaluate, markdown_table, write_outputs
    from clip2depth.models.depthclip import NYU_INPUT_BOX
    from clip2depth.models.factory import create_model, resolve_device

    device = resolve_device(args.device)
    dataset = build_dataset(args.dataset, split=args.split, root=args.data_root, **dataset_kwargs(args))
    model = create_model(args.model, pretrained=args.pretrained, device=device)
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
        png_scale=256.0 if args.dataset == "kitti" else 1000.0,
    )
    extra_metrics = None
    if args.spatial:
        from functools import partial

        from clip2depth.evaluation.spatial import spatial_metrics

        extra_metrics = partial(spatial_metrics, period=model.patch_size, min_depth=settings.min_depth)
    result = evaluate(model, dataset, settings, save_png=args.save_png, limit=args.limit,
                      num_workers=args.num_workers, extra_metrics=extra_metrics)
    out = Path(args.out or f"runs/eval-{args.dataset}")
    write_outputs(result, out, extra={"model": args.model, "dataset": args.dataset, "split": args.split,
                                      "clip_pretrained": args.pretrained})
    label = f"{args.model}{' (flip TTA)' if flip_tta else ''}"
    print(markdown_table({label: result.metrics}))
    print(f"\n{result.count} images evaluated, {len(result.skipped)} skipped (no valid ground truth), "
          f"{len(result.failed)} failed; crop={crop}, depth range ({settings.min_depth}, {settings.max_depth}) m; "
          f"results in {out}/")
    for item in result.failed:
        print(f"  failed: {item['reason']}")
    if result.extra:
        print("spatial: " + ", ".join(f"{k} {v:.4f}" for k, v in result.extra.items()))
    return 0 if result.count > 0 else 1
