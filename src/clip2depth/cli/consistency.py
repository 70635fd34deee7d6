"""``clip2depth consistency``: temporal consistency of per-frame depth on a video or frame sequence."""

from __future__ import annotations

import argparse
import math

from clip2depth.errors import ConfigError
from clip2depth.models.infer import PRECISIONS

NAME = "consistency"
HELP = "temporal consistency (flicker; with ground truth: AbsRel and scale stability) over a frame sequence"

OUTPUTS = ("consistency.json", "consistency.png")
"""What ``consistency`` writes into ``--out``."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help=HELP,
        description=HELP + ". Writes consistency.json and consistency.png; definitions in docs/analyses.md.",
    )
    p.add_argument("--model", required=True, help="trained-model directory, preset, hf-hub:org/name or depthclip-rn50")
    p.add_argument("--pretrained", default=None, help="CLIP weights (open_clip tag or file); default: the model's")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", default=None, metavar="FILE", help="a video file (needs PyAV)")
    source.add_argument("--frames", default=None, metavar="DIR", help="a folder of frames, in sorted name order")
    source.add_argument("--synthetic", type=int, default=None, metavar="N",
                        help="render N frames of a synthetic camera path (exact ground truth)")
    p.add_argument("--depth-dir", default=None, metavar="DIR",
                   help="ground truth per frame: <name>.npy (metres) or <name>.png (uint16, see --depth-scale); "
                        "<name> is the frame's file stem, or its 6-digit index for a video")
    p.add_argument("--depth-scale", type=float, default=1000.0, help="PNG ground-truth units per metre (default 1000)")
    p.add_argument("--max-frames", type=int, default=300, help="use at most this many frames (default 300)")
    p.add_argument("--stride", type=int, default=1, help="use every k-th frame of a video or folder (default 1)")
    p.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"),
                   help="--synthetic: frame size (default 240 320)")
    p.add_argument("--motion", type=float, default=1.0,
                   help="--synthetic: camera motion scale (default 1; 0 = a still camera, flicker must be 0)")
    p.add_argument("--seed", type=int, default=0, help="--synthetic: scene seed (default 0)")
    p.add_argument("--tau", type=float, default=None,
                   help="largest RGB change (0..1) of a 'static' pixel (default 0.02, about 5/255)")
    p.add_argument("--min-depth", type=float, default=1e-3, help="predictions are clamped to [min, max] (default 1e-3)")
    p.add_argument("--max-depth", type=float, default=None, help="default: the model's max_depth, else 10")
    p.add_argument("--max-side", type=int, default=None, help="predict larger frames downscaled to this longest side")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="inference precision: fp32 (default) or autocast to bf16 / fp16")
    p.add_argument("--batch-size", type=int, default=8, help="frames predicted together (default 8)")
    p.add_argument("--out", default="runs/consistency",
                   help="output folder (default runs/consistency); one that already holds consistency.json or "
                        "consistency.png is refused without --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N, mps or auto (default: cuda, else mps, else cpu)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse numeric flag values that cannot work, before any frame or model is loaded."""
    for flag, value in (("--stride", args.stride), ("--max-frames", args.max_frames),
                        ("--batch-size", args.batch_size), ("--max-side", args.max_side)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    if min(args.size) < 1:
        raise ConfigError(f"--size {args.size[0]} {args.size[1]}: height and width must be positive")
    if args.depth_scale <= 0:
        raise ConfigError(f"--depth-scale {args.depth_scale}: must be positive (ground-truth units per metre)")
    if args.tau is not None and not 0 < args.tau <= 1:
        raise ConfigError(f"--tau {args.tau}: give an RGB change between 0 and 1 (e.g. 0.02)")
    if args.min_depth < 0 or (args.max_depth is not None and args.max_depth <= 0):
        raise ConfigError("--min-depth must not be negative and --max-depth must be positive")


def run(args: argparse.Namespace) -> int:
    from clip2depth.evaluation.temporal import (
        STATIC_TAU,
        analyse_sequence,
        depth_reader,
        folder_frames,
        plot_temporal,
        synthetic_sequence,
        video_frames,
    )
    from clip2depth.io.atomic import atomic_write_json
    from clip2depth.io.outputs import claim_output_dir
    from clip2depth.models.factory import create_model, resolve_device

    check_args(args)
    ground_truth = depth_reader(args.depth_dir, depth_scale=args.depth_scale) if args.depth_dir else None
    if args.synthetic is not None:
        if args.synthetic < 2:
            raise ConfigError("--synthetic N: temporal metrics need at least 2 frames")
        frames, depths = synthetic_sequence(args.synthetic, size=tuple(args.size), motion=args.motion,
                                            seed=args.seed)
        source = (f"synthetic(seed={args.seed}, frames={args.synthetic}, size={args.size[0]}x{args.size[1]}, "
                  f"motion={args.motion})")
        if ground_truth is None:
            ground_truth = {name: depth for (name, _), depth in zip(frames, depths, strict=True)}.__getitem__
    elif args.video:
        frames, source = video_frames(args.video, max_frames=args.max_frames, stride=args.stride), args.video
    else:
        frames, source = folder_frames(args.frames, max_frames=args.max_frames, stride=args.stride), args.frames

    out = claim_output_dir(args.out, OUTPUTS, overwrite=args.overwrite)
    model = create_model(args.model, pretrained=args.pretrained, device=resolve_device(args.device))
    max_depth = args.max_depth or float(getattr(model, "max_depth", 10.0))
    if args.min_depth >= max_depth:
        raise ConfigError(f"--min-depth {args.min_depth} must be below the maximum depth {max_depth}")
    tau = STATIC_TAU if args.tau is None else args.tau
    result = analyse_sequence(model, frames, ground_truth, batch_size=args.batch_size, max_side=args.max_side,
                              precision=args.precision, tau=tau, min_depth=args.min_depth, max_depth=max_depth)

    report = {
        "model": args.model,
        "source": source,
        "settings": {"tau": tau, "min_depth": args.min_depth, "max_depth": max_depth, "max_side": args.max_side,
                     "stride": args.stride, "precision": args.precision},
        **result,
    }
    atomic_write_json(out / "consistency.json", report)
    plot_temporal(result, out / "consistency.png", title=f"{args.model}\n{source}")

    summary = result["summary"]
    print(f"{summary['frames']} frames of {source}")
    for key, value in summary.items():
        if key != "frames":
            print(f"  {key:<16} {'nan' if math.isnan(value) else f'{value:.4f}'}")
    print(f"results in {out}/ (consistency.json, consistency.png)")
    return 0
