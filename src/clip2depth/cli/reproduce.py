"""``clip2depth reproduce``: from an empty folder to the paper's table in one resumable command."""

from __future__ import annotations

import argparse
from pathlib import Path

from clip2depth.cli.options import (
    add_data_root,
    add_device,
    add_download_source,
    add_dry_run,
    add_model,
    add_out,
    add_set,
    add_split_lists,
)

NAME = "reproduce"
HELP = "get the data, train with the paper recipe, evaluate, and write results.md next to the papers' numbers"

EPILOG = """examples:
  clip2depth reproduce nyu --out runs/repro-nyu --download --dry-run    # plan, sizes, GPU-hour estimate
  clip2depth reproduce nyu --out runs/repro-nyu --download
  clip2depth reproduce kitti --out runs/repro-kitti --data-root data/kitti
run the same command again to continue after an interruption: finished stages are skipped.
--device is where the evaluations run; training picks its device as train does (CUDA when present).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["nyu", "kitti"], help="which benchmark")
    add_out(p)
    add_data_root(p, unset="data/<dataset>")
    p.add_argument("--download", action="store_true", help="download whatever the data check finds missing")
    add_download_source(p)
    add_dry_run(p)
    add_model(p, unset="the recipe's model; a preset to train instead (e.g. tiny for a smoke test). On another "
                        "CLIP, the recipe's CLIP weights (openai) give way to the preset's own tag (none for tiny: "
                        "random weights) unless --set pretrained=... is given")
    add_set(p)
    add_split_lists(p)
    p.add_argument("--depthclip", default="openai", metavar="WEIGHTS",
                   help="CLIP RN50 weights for the DepthCLIP baseline: open_clip tag or file, or 'none' to skip "
                        "(default: openai; skipped with a note when they cannot be loaded)")
    add_device(p)
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.analysis.reproduce import ReproduceOptions, dry_run_plan, reproduce
    from clip2depth.io.progress import progress_enabled

    opts = ReproduceOptions(
        dataset=args.dataset, out=Path(args.out), data_root=Path(args.data_root or f"data/{args.dataset}"),
        download=args.download, mirror=args.mirror, model=args.model, overrides=args.overrides,
        train_list=args.train_list, test_list=args.test_list, nyu_splits=args.nyu_splits,
        depthclip=None if args.depthclip == "none" else args.depthclip, device=args.device,
        show_progress=progress_enabled(),
    )
    if args.dry_run:
        print(dry_run_plan(opts))
        return 0
    summary = reproduce(opts)
    if summary["stopped"]:
        print(f"training stopped ({summary['stopped']}); run the same command again to continue")
        return 130
    m = summary["metrics"]
    print(f"AbsRel {m['abs_rel']:.4f}  RMSE {m['rmse']:.4f}  d1 {m['d1']:.4f}; table in {summary['results']}")
    if summary["note"]:
        print(summary["note"])
    return 0
