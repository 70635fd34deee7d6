"""``clip2depth predict``: depth maps, colour images, point clouds and depth videos for your own files."""

from __future__ import annotations

import argparse
import logging
import sys

from clip2depth.cli.options import (
    add_batch_size,
    add_depth_scale,
    add_device,
    add_flip_tta,
    add_max_side,
    add_model,
    add_out,
    add_precision,
    add_pretrained,
    add_skip_existing_or_overwrite,
    non_negative_float,
)
from clip2depth.errors import ConfigError, DataError
from clip2depth.inference.outputs import DEFAULT_FORMATS, FORMATS

NAME = "predict"
HELP = "depth for images, folders, glob patterns and videos: 16-bit PNG, .npy, colour image, point cloud"

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help=HELP, description=HELP + ". Outputs are named after the inputs; see docs/predict.md."
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, folders (searched recursively) or quoted glob patterns "
                        "('shots/**/*.jpg')")
    add_model(p)
    add_pretrained(p)
    add_out(p, default="predictions")
    add_skip_existing_or_overwrite(p)
    p.add_argument("--format", dest="formats", default=",".join(DEFAULT_FORMATS), metavar="FORMATS",
                   help=f"comma-separated outputs from {','.join(FORMATS)} (default: %(default)s): "
                        "png16 = <stem>.png, uint16 depth × --depth-scale; npy = <stem>.npy, float32 metres; "
                        "color = <stem>_color.png (videos: <stem>_depth.mp4); ply = <stem>.ply, coloured points, "
                        "and <stem>_camera.json, the intrinsics used")
    add_depth_scale(p)
    camera = p.add_argument_group(
        "camera for point clouds", "in pixels of the upright image; default: the photo's EXIF 35 mm equivalent "
                                   "focal length, else a 60° horizontal field of view; principal point at the "
                                   "image centre")  # fmt: skip
    camera.add_argument("--fx", type=float, default=None, help="horizontal focal length (alone: also sets fy)")
    camera.add_argument("--fy", type=float, default=None, help="vertical focal length (default: fx)")
    camera.add_argument("--cx", type=float, default=None, help="principal point column (default: (W-1)/2)")
    camera.add_argument("--cy", type=float, default=None, help="principal point row (default: (H-1)/2)")
    camera.add_argument("--fov", dest="fov_deg", type=float, default=None, metavar="DEG",
                        help="horizontal field of view in degrees, instead of --fx/--fy")
    add_batch_size(p)
    add_device(p)
    add_precision(p)
    add_max_side(p)
    colour = p.add_argument_group("colour outputs")
    colour.add_argument("--cmap", default="turbo", help="matplotlib colour map (default turbo; near = warm end)")
    colour.add_argument("--vmin", type=non_negative_float, default=None, metavar="METRES",
                        help="depth at the near end of the colour map (default: each image's own minimum)")
    colour.add_argument("--vmax", type=non_negative_float, default=None, metavar="METRES",
                        help="depth at the far end of the colour map (default: each image's own maximum)")
    colour.add_argument("--colorbar", action="store_true",
                        help="append a depth scale in metres on the right (the colour image gets wider)")
    add_flip_tta(p)
    p.add_argument("--save-frames", dest="video_frames", action="store_true",
                   help="videos: also write png16/npy/ply per frame as <stem>_frames/NNNNNN.* "
                        "(default: only the colour depth video)")
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.inference.camera import CameraSpec
    from clip2depth.inference.outputs import OutputOptions
    from clip2depth.inference.plan import plan_predictions
    from clip2depth.inference.run import PredictOptions, run_plan
    from clip2depth.models.factory import create_model, resolve_device

    # Everything a user can get wrong is checked before the (slow) model load.
    camera = CameraSpec(fx=args.fx, fy=args.fy, cx=args.cx, cy=args.cy, fov_deg=args.fov_deg)
    outputs = OutputOptions(formats=args.formats, depth_scale=args.depth_scale, camera=camera, cmap=args.cmap,
                            vmin=args.vmin, vmax=args.vmax, colorbar=args.colorbar, video_frames=args.video_frames)
    options = PredictOptions(batch_size=args.batch_size, max_side=args.max_side, flip_tta=args.flip_tta,
                             precision=args.precision)  # fmt: skip
    plan = plan_predictions(args.inputs, args.out, outputs, skip_existing=args.skip_existing)
    if not plan.matched:
        reasons = "; ".join(f"{r.input}: {r.reason}" for r in plan.refused)
        raise DataError(f"no input matched ({reasons}); pass image or video files, folders or glob patterns")
    if plan.existing and not (args.skip_existing or args.overwrite):
        raise ConfigError(
            f"{args.out} already holds {len(plan.existing)} output(s) of these inputs (e.g. {plan.existing[0]}); "
            "pass --skip-existing to keep them and predict the rest, or --overwrite to replace them"
        )
    if "ply" in outputs.formats and camera.focal_unknown:
        logger.info("point clouds use each photo's EXIF 35 mm equivalent focal length, or else a %g° horizontal "
                    "field of view; give the camera (--fov, or --fx/--fy/--cx/--cy) for true geometry",
                    camera.default_fov_deg)  # fmt: skip
    model = create_model(args.model, pretrained=args.pretrained, device=resolve_device(args.device))
    report = run_plan(model, plan, options)
    print(report.summary(args.out))
    if report.failed:
        print(f"{len(report.failed)} failed:", file=sys.stderr)
    for path, reason in report.failed:
        print(f"  {path}: {reason}", file=sys.stderr)
    if report.out_of_memory:
        print(f"{len(report.out_of_memory)} ran out of memory: a smaller --batch-size or --max-side may fit",
              file=sys.stderr)
    if report.exit_code:
        raise DataError(f"none of the {report.matched} inputs could be predicted; the reasons are listed above")
    return 0
