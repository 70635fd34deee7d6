"""``clip2depth demo``: train the tiny model on built-in synthetic scenes, evaluate, write a report."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from clip2depth.cli.options import add_out, add_pretrained, add_resume_or_overwrite, add_set, positive_int

NAME = "demo"
HELP = "train + evaluate the tiny model on built-in synthetic scenes (about 70 s on 2 CPU cores)"

logger = logging.getLogger(__name__)

DEMO_OUTPUTS = ("report.md", "curves.png", "samples.png", "summary.json")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP + ". Writes report.md, curves.png, samples.png "
                              "and summary.json (model vs the mean-training-depth baseline).")
    add_out(p, default="demo_out")
    add_pretrained(p)
    p.add_argument("--test-scenes", type=positive_int, default=48, help="held-out synthetic test scenes (default 48)")
    add_set(p)
    add_resume_or_overwrite(p)
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.data import build_dataset
    from clip2depth.evaluation.protocol import evaluate, markdown_table
    from clip2depth.io.atomic import atomic_write_json
    from clip2depth.io.outputs import claim_output_dir
    from clip2depth.models.constant import ConstantDepth, mean_training_depth
    from clip2depth.models.factory import create_model
    from clip2depth.reporting.report import plot_curves, plot_samples, read_log, write_report
    from clip2depth.training.config import build_recipe
    from clip2depth.training.trainer import RUN_OUTPUTS, Trainer

    start = time.perf_counter()
    out = Path(args.out)
    recipe = build_recipe("synthetic", pretrained=args.pretrained, overrides=args.overrides)
    if not args.resume:
        claim_output_dir(out, [*RUN_OUTPUTS, *DEMO_OUTPUTS], overwrite=args.overwrite, resumable=True)
    trainer = Trainer(recipe, out, resume=args.resume)
    summary = trainer.run()
    if summary.stopped:
        print(f"demo interrupted at step {summary.state.step}; continue with: "
              f"clip2depth demo --out {out} --resume")
        return 130

    data = recipe.data
    size = tuple(data.val_kwargs.get("size", data.kwargs.get("size", (240, 320))))
    test_set = build_dataset("synthetic", split="test", size=size, length=args.test_scenes)
    settings = trainer.eval_settings  # the recipe's protocol, as used for validation
    model = create_model(str(out / "best"), pretrained=recipe.pretrained)
    result = evaluate(model, test_set, settings, keep_predictions=4)
    baseline_depth = mean_training_depth(trainer.train_set.base)  # every training scene (cached)
    baseline = evaluate(ConstantDepth(baseline_depth), test_set, settings, progress=False)

    plot_curves(read_log(out / "log.jsonl"), out / "curves.png")
    plot_samples(result.examples, out / "samples.png", max_depth=model.max_depth)
    seconds = time.perf_counter() - start
    ratio = result.metrics["abs_rel"] / baseline.metrics["abs_rel"]
    results = {"clip2depth (tiny, synthetic)": result.metrics,
               f"baseline: mean training depth {baseline_depth:.2f} m": baseline.metrics}
    write_report(out, title="clip2depth demo: tiny model on built-in synthetic scenes", results=results, notes=[
        f"{summary.state.step} training steps, {result.count} held-out test scenes, "
        f"{seconds:.0f} s in total",
        f"AbsRel ratio model / baseline: {ratio:.3f}",
        f"CLIP weights: {recipe.pretrained or 'random (no download needed)'}",
    ])
    atomic_write_json(out / "summary.json", {
        "model": result.metrics, "baseline": baseline.metrics, "seconds": round(seconds, 1),
        "baseline_depth_m": baseline_depth, "steps": summary.state.step, "test_scenes": result.count})
    print(markdown_table(results))
    print(f"\nAbsRel model/baseline = {ratio:.3f}; {seconds:.0f} s; report: {out / 'report.md'}")
    return 0
