"""``clip2depth train``: the paper recipe on NYU, KITTI or the synthetic scenes; resumable; torchrun-ready."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "train"
HELP = "train the mirror and decoder with a recipe (nyu, kitti, synthetic or a YAML file)"

EPILOG = """examples:
  clip2depth train --recipe synthetic --out runs/synth
  clip2depth train --recipe nyu --data-root /data/nyu --out runs/nyu --set train.batch_size=16
  clip2depth train --resume runs/nyu
  torchrun --nproc_per_node 4 -m clip2depth train --recipe nyu --data-root /data/nyu --out runs/nyu
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=None, help="built-in recipe name or YAML file (default: synthetic)")
    p.add_argument("--data-root", default=None, help="dataset root (sets data.root)")
    p.add_argument("--model", default=None, help="preset or model directory to start from (sets model)")
    p.add_argument("--clip-pretrained", default=None, metavar="TAG_OR_PATH",
                   help="CLIP weights: open_clip tag or local file (sets clip_pretrained)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<recipe>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. train.lr=1e-4 or model_overrides.mirror_length=16")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run exactly (reads RUN_DIR/config.yaml and RUN_DIR/last)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return p


def run(args: argparse.Namespace) -> int:
    import yaml

    from clip2depth.errors import ConfigError
    from clip2depth.training.config import apply_overrides, build_recipe
    from clip2depth.training.trainer import train

    if args.resume:
        run_dir = Path(args.resume)
        config = run_dir / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a clip2depth run directory?")
        recipe = yaml.safe_load(config.read_text())
        if args.recipe or args.model or args.data_root or args.clip_pretrained:
            raise ConfigError("--resume continues a run with its own config.yaml; drop --recipe/--model/"
                              "--data-root/--clip-pretrained (use --set only for e.g. train.num_workers)")
        recipe = apply_overrides(recipe, args.overrides)
        resume = True
    else:
        name = args.recipe or "synthetic"
        recipe = build_recipe(name, data_root=args.data_root, model=args.model,
                              clip_pretrained=args.clip_pretrained, overrides=args.overrides)
        run_dir = Path(args.out or f"runs/{Path(name).stem}")
        resume = False
    summary = train(recipe, run_dir, resume=resume, progress=not args.no_progress)
    state = summary["state"]
    if summary["stopped"]:
        print(f"stopped ({summary['stopped']}) at step {state['step']}/{summary['total_steps']}; "
              f"continue with: clip2depth train --resume {run_dir}")
        return 130 if summary["stopped"] in ("SIGINT", "SIGTERM") else 0
    print(f"done: {state['step']} steps in {state['elapsed_s']:.0f} s; best val AbsRel "
          f"{state['best_abs_rel']:.4f} at step {state['best_step']}; models in {run_dir}/best and {run_dir}/last")
    if state["nonfinite_total"]:
        print(f"{state['nonfinite_total']} steps skipped for a non-finite loss")
    return 0
