"""``clip2depth eval``: the community evaluation protocol on a dataset, for any model or baseline."""

from __future__ import annotations

import argparse
import logging

from clip2depth.cli.options import (
    SIZE,
    BoxAction,
    add_dataset,
    add_depth_range,
    add_device,
    add_flip_tta,
    add_limit,
    add_max_side,
    add_model,
    add_out,
    add_overwrite,
    add_precision,
    add_pretrained,
    add_spatial,
    dataset_kwargs,
    non_negative_int,
)
from clip2depth.errors import ConfigError, DataError
from clip2depth.evaluation.metrics import CROPS

NAME = "eval"
HELP = "evaluate a model on NYU, KITTI, your own data or the synthetic scenes (BTS protocol)"

OUTPUTS = ("metrics.json", "per_image.csv")
"""What ``eval`` writes into ``--out``."""

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP + ". Writes metrics.json and per_image.csv. "
                              "--model also takes depthclip-rn50, the zero-shot DepthCLIP baseline.")
    add_model(p)
    add_pretrained(p)
    add_dataset(p)
    add_out(p, unset="runs/eval-<dataset>")
    add_overwrite(p)
    p.add_argument("--save-png", default=None, metavar="DIR",
                   help="write 16-bit prediction PNGs named as the BTS evaluator expects (KITTI ×256, otherwise "
                        "the dataset's depth scale, NYU ×1000), at the ground truth's full size: for KITTI the "
                        "KB-crop prediction sits on a zero canvas, so run BTS's evaluator without --do_kb_crop. "
                        "Images without valid ground truth get no PNG. A folder already holding PNGs is "
                        "refused without --overwrite")
    add_flip_tta(p)
    p.add_argument("--crop", default="default", choices=["default", "none", *CROPS],
                   help="evaluation crop (default: the dataset's own, listed under --dataset)")
    add_depth_range(p, min_default=None, min_unset="the dataset's", max_unset="the dataset's")
    p.add_argument("--input-size", **SIZE, default=None,
                   help="resize inputs to this network size, multiples of the model's patch size "
                        "(default: own size rounded to the patch size)")
    p.add_argument("--input-box", nargs=4, type=non_negative_int, action=BoxAction, default=None,
                   metavar=("TOP", "LEFT", "H", "W"),
                   help="predict only inside this window of the image and evaluate only there")
    add_max_side(p, unset="none, the evaluation protocol's own sizes")
    add_precision(p)
    p.add_argument("--protocol", default="standard", choices=["standard", "depthclip"],
                   help="'depthclip' reproduces DepthCLIP's own NYU table: flip TTA, input window rows "
                        "56:472 cols 60:604, crop nyu_depthclip (explicit flags still win)")
    add_limit(p)
    add_spatial(p)
    add_device(p)
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.data import build_dataset
    from clip2depth.evaluation.protocol import EvalSettings, evaluate, markdown_table, write_outputs
    from clip2depth.io.outputs import claim_output_dir, writable_folder
    from clip2depth.models.depthclip import NYU_INPUT_BOX
    from clip2depth.models.factory import create_model, resolve_device

    device = resolve_device(args.device)
    dataset = build_dataset(args.dataset, split=args.split, root=args.data_root, **dataset_kwargs(args))
    if args.save_png:
        png_dir = writable_folder(args.save_png, "--save-png", create=False)
        if not args.overwrite and png_dir.is_dir() and next(png_dir.rglob("*.png"), None) is not None:
            raise ConfigError(f"--save-png {png_dir} already holds PNGs of an earlier run; pass --overwrite to "
                              "replace them, or choose another folder")
    out = claim_output_dir(args.out or f"runs/eval-{args.dataset}", OUTPUTS, overwrite=args.overwrite)
    crop = {"default": dataset.default_crop, "none": None}.get(args.crop, args.crop)
    input_box = args.input_box
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
