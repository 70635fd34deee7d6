"""``clip2depth consistency``: temporal consistency of per-frame depth on a video or frame sequence."""

from __future__ import annotations

import argparse
import math

from clip2depth.cli.options import (
    add_batch_size,
    add_depth_range,
    add_depth_scale,
    add_device,
    add_model,
    add_out,
    add_overwrite,
    add_precision,
    add_pretrained,
    add_scale,
    add_synthetic,
    add_synthetic_scene,
    fraction,
    positive_int,
)
from clip2depth.errors import ConfigError

NAME = "consistency"
HELP = "temporal consistency (flicker; with ground truth: AbsRel and scale stability) over a frame sequence"

OUTPUTS = ("consistency.json", "consistency.png")
"""What ``consistency`` writes into ``--out``."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help=HELP,
        description=HELP + ". Writes consistency.json and consistency.png; definitions in docs/analyses.md. Frames "
        "are predicted at the model's own scale (the pixel count of the size it was trained at, aspect kept, sides "
        "rounded to the patch size) unless --max-side, --size or --native says otherwise; depth comes back at "
        "each frame's full size.",
    )
    add_model(p)
    add_pretrained(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", default=None, metavar="FILE", help="a video file (needs PyAV)")
    source.add_argument("--frames", default=None, metavar="DIR", help="a folder of frames, in sorted name order")
    add_synthetic(source, unset="none; here N >= 2 frames along one camera path")
    p.add_argument("--depth-dir", default=None, metavar="DIR",
                   help="ground truth per frame: <name>.npy (metres) or <name>.png (uint16, see --depth-scale); "
                        "<name> is the frame's file stem, or its 6-digit index for a video")
    add_depth_scale(p)
    p.add_argument("--max-frames", type=positive_int, default=300, help="use at most this many frames (default 300)")
    p.add_argument("--stride", type=positive_int, default=1,
                   help="use every k-th frame of a video or folder (default 1)")
    add_synthetic_scene(p)
    p.add_argument("--motion", type=float, default=1.0,
                   help="--synthetic: camera motion scale (default 1; 0 = a still camera, flicker must be 0)")
    p.add_argument("--tau", type=fraction, default=None,
                   help="largest RGB change (0..1) of a 'static' pixel (default 0.02, about 5/255)")
    add_depth_range(p, min_default=1e-3, max_unset="the model's max_depth, else 10")
    add_scale(p)
    add_precision(p)
    add_batch_size(p)
    add_out(p, default="runs/consistency")
    add_overwrite(p)
    add_device(p)
    return p


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

    ground_truth = depth_reader(args.depth_dir, depth_scale=args.depth_scale) if args.depth_dir else None
    if args.synthetic is not None:
        if args.synthetic < 2:
            raise ConfigError("--synthetic N: temporal metrics need at least 2 frames")
        h, w = args.synthetic_size
        frames, depths = synthetic_sequence(args.synthetic, size=(h, w), motion=args.motion, seed=args.seed)
        source = f"synthetic(seed={args.seed}, frames={args.synthetic}, size={h}x{w}, motion={args.motion})"
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
    size = tuple(args.size) if args.size else None
    result = analyse_sequence(model, frames, ground_truth, batch_size=args.batch_size, max_side=args.max_side,
                              size=size, native=args.native, precision=args.precision, tau=tau,
                              min_depth=args.min_depth, max_depth=max_depth)

    report = {
        "model": args.model,
        "source": source,
        "settings": {"tau": tau, "min_depth": args.min_depth, "max_depth": max_depth, "max_side": args.max_side,
                     "size": size, "native": args.native,
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
