"""``clip2depth ablate``: the paper's ablations (prompt modes, mirror lengths, fine-tuning) in one command."""

from __future__ import annotations

import argparse

from clip2depth.cli.options import (
    add_data_root,
    add_limit,
    add_model,
    add_out,
    add_pretrained,
    add_recipe,
    add_resume_or_overwrite,
    add_set,
    add_spatial,
    add_split,
    non_negative_int,
)

NAME = "ablate"
HELP = "train and evaluate prompt modes, mirror lengths and a fine-tuned CLIP with otherwise identical settings"

EPILOG = """variants (default: all of these):
  prompt=mirror prompt=language prompt=concat prompt=none
  mirror_length=1 mirror_length=4 mirror_length=16 mirror_length=64
  finetune=1            (any prompt=MODE, mirror_length=N, finetune=K is accepted;
                         backbone=PRESET swaps in another preset's CLIP, e.g. backbone=clip2depth-eva02-b-16)

examples:
  clip2depth ablate --recipe synthetic --out runs/ablation
  clip2depth ablate --recipe nyu --data-root /data/nyu --variants prompt=mirror prompt=concat finetune=1
  clip2depth ablate --recipe synthetic --spatial --temporal 16   # add spatial and temporal columns

Rerun with --resume and the same --out to continue: finished variants are not retrained, interrupted
ones resume. --overwrite starts the ablation in --out again.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                              description=HELP + ". Writes ablation.md, ablation.csv and ablation.png.")
    add_recipe(p)
    p.add_argument("--variants", nargs="+", default=None, metavar="VARIANT", help="variants to run (default: all)")
    add_out(p, unset="runs/ablation-<recipe>")
    add_data_root(p, unset="the recipe's data.root, else the dataset's environment variable")
    add_model(p, unset="the recipe's model; a preset or model directory to start from")
    add_pretrained(p)
    add_set(p)
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="which model of each run to evaluate (default: best validation AbsRel)")
    add_split(p, unset="the recipe's data.val_split")
    add_limit(p)
    add_spatial(p)
    p.add_argument("--temporal", type=non_negative_int, default=0, metavar="N",
                   help="add flicker, change error and scale drift on an N-frame synthetic camera path (N >= 2)")
    add_resume_or_overwrite(p)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clip2depth.analysis.ablation import DEFAULT_VARIANTS, REPORT_OUTPUTS, run_ablation, variant_overrides
    from clip2depth.errors import ConfigError
    from clip2depth.io.outputs import claim_output_dir
    from clip2depth.training.config import build_recipe

    if args.temporal == 1:
        raise ConfigError("--temporal 1: a camera path needs at least 2 frames")
    recipe_name = args.recipe or "synthetic"
    recipe = build_recipe(recipe_name, data_root=args.data_root, model=args.model, pretrained=args.pretrained,
                          overrides=args.overrides)
    variants = list(args.variants or DEFAULT_VARIANTS)
    for name in variants:
        variant_overrides(name)  # a misspelt variant fails before anything is written
    out = Path(args.out or f"runs/ablation-{Path(recipe_name).stem}")
    if not args.resume:
        claim_output_dir(out, [*REPORT_OUTPUTS, *variants], overwrite=args.overwrite, resumable=True)
    results = run_ablation(recipe, out, variants, checkpoint=args.checkpoint, split=args.split,
                           eval_limit=args.limit, spatial=args.spatial, temporal_frames=args.temporal)
    print((out / "ablation.md").read_text())
    incomplete = [r.name for r in results if not r.complete]
    if incomplete:
        print(f"training incomplete for {', '.join(incomplete)}: rerun the same command with --resume to continue")
    print(f"results in {out}/ (ablation.md, ablation.csv, ablation.png; runs in <variant>/)")
    return 0
