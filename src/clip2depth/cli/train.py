"""``clip2depth train``: a recipe on NYU, KITTI, your own files or synthetic scenes; resumable; torchrun-ready."""

from __future__ import annotations

import argparse
from pathlib import Path

from clip2depth.cli.options import (
    add_data_root,
    add_model,
    add_out,
    add_pretrained,
    add_recipe,
    add_resume_run_or_overwrite,
    add_set,
)

NAME = "train"
HELP = "train the mirror and decoder with a recipe (nyu, kitti, folder, synthetic or a YAML file)"

EPILOG = """examples:
  clip2depth train --recipe synthetic --out runs/synth
  clip2depth train --recipe nyu --data-root /data/nyu --out runs/nyu --set train.batch_size=16
  clip2depth train --recipe folder --set data.train_list=mydata/train.txt --out runs/mine
  clip2depth train --resume runs/nyu       # after an interruption; a finished run is left as it is
  torchrun --nproc_per_node 4 -m clip2depth train --recipe nyu --data-root /data/nyu --out runs/nyu

Every recipe field can be set with --set SECTION.KEY=VALUE (sections: data, augment, eval, train; top-level
keys: model, pretrained, model_overrides.FIELD). Values are checked before any model is built.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe(p)
    add_data_root(p, unset="the recipe's data.root, else the dataset's environment variable")
    add_model(p, unset="the recipe's model; a preset or model directory to start from. On another CLIP than the "
                        "recipe's model, the recipe's CLIP weights give way to the model's own (a preset's tag, random "
                        "for tiny; a directory's recorded weights) unless --pretrained is given")
    add_pretrained(p)
    add_out(p, unset="runs/<recipe>")
    add_set(p)
    add_resume_run_or_overwrite(p)
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.errors import ConfigError
    from clip2depth.training.config import apply_overrides, build_recipe, read_recipe_file
    from clip2depth.training.trainer import CONFIG_NAME, train

    if args.resume:
        run_dir = Path(args.resume)
        if args.recipe or args.model or args.data_root or args.pretrained or args.out:
            raise ConfigError("--resume continues a run with its own config.yaml; drop --recipe/--model/"
                              "--data-root/--pretrained/--out (use --set only for e.g. train.num_workers)")
        config = run_dir / CONFIG_NAME
        if not run_dir.is_dir():
            what = "is a file, not a run folder" if run_dir.exists() else "does not exist"
            raise ConfigError(f"--resume {run_dir} {what}; pass the folder of an earlier run (its --out)")
        if not config.is_file():
            raise ConfigError(f"--resume {run_dir}: no {CONFIG_NAME} there; is it a clip2depth run directory?")
        recipe = apply_overrides(read_recipe_file(config), args.overrides)
        resume = True
    else:
        name = args.recipe or "synthetic"
        recipe = build_recipe(name, data_root=args.data_root, model=args.model, pretrained=args.pretrained,
                              overrides=args.overrides)
        run_dir = Path(args.out or f"runs/{Path(name).stem}")
        resume = False
    summary = train(recipe, run_dir, resume=resume, overwrite=args.overwrite)
    state = summary.state
    if summary.already_finished:
        print(f"{run_dir} is finished: its checkpoint is at step {state.step} of {summary.total_steps}; nothing was "
              f"changed. To train longer: --set train.max_steps=N (N > {state.step}); to start again: "
              f"--out {run_dir} --overwrite")
        return 0
    if summary.stopped:
        print(f"stopped ({summary.stopped}) at step {state.step}/{summary.total_steps}; "
              f"continue with: clip2depth train --resume {run_dir}")
        return 130 if summary.interrupted else 0
    print(f"done: {state.step} steps in {state.elapsed_s:.0f} s; best val AbsRel "
          f"{state.best_abs_rel:.4f} at step {state.best_step}; models in {run_dir}/best and {run_dir}/last")
    if state.nonfinite_total:
        print(f"{state.nonfinite_total} steps skipped for a non-finite loss")
    if state.skipped_samples:
        print(f"{state.skipped_samples} training samples skipped (unreadable or too small; see the warnings)")
    return 0
