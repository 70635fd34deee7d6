"""``clip2depth ablate``: the paper's ablations (prompt modes, mirror lengths, fine-tuning) in one command."""

from __future__ import annotations

import argparse

from clip2depth.cli.train import add_pretrained_flag

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
    p.add_argument("--recipe", default="synthetic", help="built-in recipe name or YAML file (default: synthetic)")
    p.add_argument("--variants", nargs="+", default=None, metavar="VARIANT", help="variants to run (default: all)")
    p.add_argument("--out", default=None, help="output folder (default: runs/ablation-<recipe>)")
    p.add_argument("--data-root", default=None, help="dataset root (sets data.root)")
    p.add_argument("--model", default=None, help="preset to start from (sets model)")
    add_pretrained_flag(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field for every variant, e.g. train.max_steps=2000")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="which model of each run to evaluate (default: best validation AbsRel)")
    p.add_argument("--split", default=None, help="evaluation split (default: the recipe's data.val_split)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--spatial", action="store_true",
                   help="add depth-boundary errors and the patch-artefact score (docs/analyses.md)")
    p.add_argument("--temporal", type=int, default=0, metavar="N",
                   help="add flicker, change error and scale drift on an N-frame synthetic camera path")
    p.add_argument("--resume", action="store_true", help="continue the ablation in --out (done variants are kept)")
    p.add_argument("--overwrite", action="store_true", help="start the ablation in --out again, deleting its outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clip2depth.analysis.ablation import DEFAULT_VARIANTS, REPORT_OUTPUTS, run_ablation, variant_overrides
    from clip2depth.errors import ConfigError
    from clip2depth.io.outputs import claim_output_dir
    from clip2depth.training.config import build_recipe

    if args.temporal == 1 or args.temporal < 0:
        raise ConfigError("--temporal N: a camera path needs at least 2 frames")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: needs at least 1 image")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the ablation in --out, --overwrite starts it again: pass one of them")
    recipe = build_recipe(args.recipe, data_root=args.data_root, model=args.model, pretrained=args.pretrained,
                          overrides=args.overrides)
    variants = list(args.variants or DEFAULT_VARIANTS)
    for name in variants:
        variant_overrides(name)  # a misspelt variant fails before anything is written
    out = Path(args.out or f"runs/ablation-{Path(args.recipe).stem}")
    if not args.resume:
        claim_output_dir(out, [*REPORT_OUTPUTS, *variants], overwrite=args.overwrite, resumable=True)
    results = run_ablation(recipe, out, variants, checkpoint=args.checkpoint, split=args.split,
                           eval_limit=args.limit, spatial=args.spatial, temporal_frames=args.temporal,
                           progress=not args.no_progress)
    print((out / "ablation.md").read_text())
    incomplete = [r.name for r in results if not r.complete]
    if incomplete:
        print(f"training incomplete for {', '.join(incomplete)}: rerun the same command with --resume to continue")
    print(f"results in {out}/ (ablation.md, ablation.csv, ablation.png; runs in <variant>/)")
    return 0
