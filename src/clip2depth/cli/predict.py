"""``clip2depth predict``: depth maps, colour images, point clouds and depth videos for your own files."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from clip2depth.cli.options import (
    add_batch_size,
    add_depth_scale,
    add_device,
    add_flip_tta,
    add_model,
    add_out,
    add_precision,
    add_pretrained,
    add_runtime,
    add_scale,
    add_skip_existing_or_overwrite,
    non_negative_float,
    positive_int,
)
from clip2depth.errors import Clip2DepthError, ConfigError, DataError
from clip2depth.inference.outputs import DEFAULT_FORMATS, FORMATS

if TYPE_CHECKING:
    from clip2depth.inference.outputs import OutputOptions
    from clip2depth.inference.plan import PredictionPlan
    from clip2depth.inference.raydata import RayOptions
    from clip2depth.inference.storage import Location
    from clip2depth.inference.torchrun import Shard

NAME = "predict"
HELP = "depth for images, folders, glob patterns and videos: 16-bit PNG, .npy, colour image, point cloud"

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help=HELP, description=HELP + ". Outputs are named after the inputs; see docs/predict.md. Inputs, "
        "--out and --manifest may be fsspec URLs (s3://bucket/prefix/, gs://...). Under torchrun each process "
        "predicts its share of the inputs; see README 'Scale out'. Images are predicted at the model's own scale "
        "(the pixel count of the size it was trained at, e.g. 480x640, each image's aspect kept, sides rounded to "
        "the patch size; smaller images are scaled up, larger ones down) unless --max-side, --size or --native "
        "says otherwise; depth always comes back at each input's full size."
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, folders (searched recursively) or quoted glob patterns "
                        "('shots/**/*.jpg'); or URLs of objects, prefixes or patterns in object storage")
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
    add_scale(p)
    add_runtime(p)
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
    scale = p.add_argument_group("scale out", "torchrun needs no flag: 'torchrun --nproc_per_node N -m clip2depth "
                                              "predict ...' shares the inputs among its processes")  # fmt: skip
    scale.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process (each torchrun process: its share); ray: a Ray Data pipeline "
                            "(pip install 'clip2depth[ray]') (default: local)")
    scale.add_argument("--ray-address", dest="address", default=None, metavar="ADDR",
                       help="--engine ray: join this Ray cluster (default: RAY_ADDRESS, else a new local instance)")
    scale.add_argument("--workers", type=positive_int, default=None, metavar="N",
                       help="--engine ray: predicting actors, each loading the model once (default: the cluster's "
                            "GPUs / --gpus-per-worker, or without GPUs its CPUs less one)")
    scale.add_argument("--gpus-per-worker", dest="gpus_per_worker", type=non_negative_float, default=None,
                       metavar="G", help="--engine ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    scale.add_argument("--manifest", default=None, metavar="FILE",
                       help="write one row per input (input, outputs, height, width, min/median/max depth, seconds, "
                            "status, error) to FILE, .parquet or .jsonl (default: OUT/manifest.parquet for Ray and "
                            "torchrun runs, none otherwise)")
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.inference.camera import CameraSpec
    from clip2depth.inference.manifest import (
        carry_over,
        check_manifest_path,
        default_manifest,
        read_manifest,
        write_manifest,
    )
    from clip2depth.inference.outputs import OutputOptions
    from clip2depth.inference.plan import PredictReport
    from clip2depth.inference.run import PredictOptions, run_plan
    from clip2depth.inference.storage import location
    from clip2depth.inference.torchrun import current_shard, gather_records, process_group, shard_device, shard_plan
    from clip2depth.models.factory import create_model, resolve_device
    from clip2depth.models.spec import resolve_model

    # Everything a user can get wrong is checked before the (slow) model load.
    camera = CameraSpec(fx=args.fx, fy=args.fy, cx=args.cx, cy=args.cy, fov_deg=args.fov_deg)
    outputs = OutputOptions(formats=args.formats, depth_scale=args.depth_scale, camera=camera, cmap=args.cmap,
                            vmin=args.vmin, vmax=args.vmax, colorbar=args.colorbar, video_frames=args.video_frames)
    options = PredictOptions(batch_size=args.batch_size, max_side=args.max_side,
                             size=tuple(args.size) if args.size else None, native=args.native,
                             flip_tta=args.flip_tta, precision=args.precision)  # fmt: skip
    shard = current_shard()
    ray_options = _ray_options(args, torchrun=shard is not None)
    scaled_out = shard is not None or ray_options is not None
    manifest = location(args.manifest) if args.manifest else default_manifest(location(args.out)) if scaled_out \
        else None  # fmt: skip
    if manifest is not None:
        check_manifest_path(manifest)
    if args.runtime == "onnx":
        from clip2depth.inference.onnx_runtime import check_onnx_runtime

        check_onnx_runtime(device="cpu" if args.device == "auto" else args.device, precision=args.precision,
                           engine=args.engine)  # fmt: skip
    if ray_options is not None:
        device = args.device  # each Ray actor resolves it; run_ray checks its form
    elif args.runtime == "onnx":
        device = "cpu"
    else:
        device = resolve_device(args.device if shard is None else shard_device(args.device, shard))
    with process_group(shard):
        plan = _agreed_plan(args, outputs, manifest, shard)
        if plan is None:  # another process reported why
            return 1
        if "ply" in outputs.formats and camera.focal_unknown:
            logger.info("point clouds use each photo's EXIF 35 mm equivalent focal length, or else a %g° horizontal "
                        "field of view; give the camera (--fov, or --fx/--fy/--cx/--cy) for true geometry",
                        camera.default_fov_deg)  # fmt: skip
        if ray_options is not None:
            from clip2depth.inference.raydata import run_ray

            report = run_ray(plan, args.model, options, ray_options, pretrained=args.pretrained, device=device,
                             verbose=args.verbose)  # fmt: skip
        else:
            model = None
            if plan.jobs:
                model = create_model(args.model, pretrained=args.pretrained, device=device)
            else:  # every input skipped or refused: the name is checked, nothing is loaded
                resolve_model(args.model, pretrained=args.pretrained, download=False)
            if model is not None and args.runtime == "onnx":
                from clip2depth.inference.onnx_runtime import OnnxRuntimeModel

                model = OnnxRuntimeModel.from_model(model)
            report = run_plan(model, plan if shard is None else shard_plan(plan, shard), options)
            if shard is not None:
                records = gather_records(report.records, shard)
                if records is None:  # rank 0 reports for every process
                    return 0
                report = PredictReport(plan.matched, records)
    if manifest is not None:
        previous = read_manifest(manifest) if args.skip_existing else None
        write_manifest(manifest, carry_over(report.records, previous or []))
        logger.info("manifest: %s", manifest)
    print(report.summary(args.out))
    if report.failed:
        print(f"{len(report.failed)} failed:", file=sys.stderr)
    for path, reason in report.failed:
        print(f"  {path}: {reason}", file=sys.stderr)
    if report.out_of_memory:
        print(f"{len(report.out_of_memory)} ran out of memory: a smaller --batch-size or --size may fit",
              file=sys.stderr)
    if report.exit_code:
        raise DataError(f"none of the {report.matched} inputs could be predicted; the reasons are listed above")
    return 0


def _ray_options(args: argparse.Namespace, *, torchrun: bool) -> RayOptions | None:
    """The Ray engine's options for ``--engine ray`` (Ray must be installed), else None; its flags need it."""
    from clip2depth.inference.raydata import RayOptions, import_ray

    if args.engine != "ray":
        given = [flag for flag, value in (("--ray-address", args.address), ("--workers", args.workers),
                                          ("--gpus-per-worker", args.gpus_per_worker)) if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --engine ray; add --engine ray or leave them out")
        return None
    if torchrun:
        raise ConfigError("--engine ray starts its own workers: run it as 'clip2depth predict ... --engine ray', "
                          "not under torchrun")  # fmt: skip
    import_ray()
    return RayOptions(address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker)


def _plan(args: argparse.Namespace, outputs: OutputOptions, manifest: Location | None) -> PredictionPlan:
    """Find the inputs and plan the run; refuse a folder holding outputs of these inputs (or a manifest)
    unless ``--skip-existing`` or ``--overwrite`` says what to do with them."""
    from clip2depth.inference.plan import plan_predictions
    from clip2depth.inference.storage import exists

    plan = plan_predictions(args.inputs, args.out, outputs, skip_existing=args.skip_existing)
    if not plan.matched:
        reasons = "; ".join(f"{r.input}: {r.reason}" for r in plan.refused)
        raise DataError(f"no input matched ({reasons}); pass image or video files, folders or glob patterns")
    if args.skip_existing or args.overwrite:
        return plan
    if plan.existing:
        raise ConfigError(
            f"{args.out} already holds {len(plan.existing)} output(s) of these inputs (e.g. {plan.existing[0]}); "
            "pass --skip-existing to keep them and predict the rest, or --overwrite to replace them"
        )
    if manifest is not None and exists(manifest):
        raise ConfigError(f"{manifest} is the manifest of an earlier run; pass --skip-existing to keep that run's "
                          "outputs and predict the rest, or --overwrite to replace them")  # fmt: skip
    return plan


def _agreed_plan(
    args: argparse.Namespace, outputs: OutputOptions, manifest: Location | None, shard: Shard | None
) -> PredictionPlan | None:
    """:func:`_plan`; under torchrun every process plans, and they compare plans before anyone writes.

    Returns None on a process other than rank 0 when some process cannot go on (rank 0 says why).
    """
    from clip2depth.inference.torchrun import agree

    if shard is None or shard.world == 1:
        return _plan(args, outputs, manifest)
    plan, error = None, None
    try:
        plan = _plan(args, outputs, manifest)
    except Clip2DepthError as exc:
        error = exc
    problem = agree(shard, plan, str(error) if error else None)
    if problem is None:
        return plan
    if not shard.is_main:
        return None
    if error is not None:
        raise error
    raise DataError(problem)
