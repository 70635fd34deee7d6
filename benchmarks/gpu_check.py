"""The GPU parts of benchmarks/gpu_check.sh: bf16 training steps and predict throughput, written to BENCHMARKS.md.

1. ``--steps`` (20) training steps of the paper's architecture (``clip2depth-vit-b-16``, random CLIP weights)
   through the real trainer on the built-in synthetic scenes, bf16 autocast (``train.amp=bf16``); the check
   fails unless every logged loss is finite and the mean of the last five is below the mean of the first five.
2. Predict throughput of the same model at batch 1, 8 and 32 (480×640 images, ``predict_depth``: the
   ``predict`` path without file reading), fp32 and bf16: images per second over ``--repeats`` timed
   batches after one warm-up batch, and the peak CUDA memory of a batch (``max_memory_allocated`` above
   what was allocated before it). A batch that does not fit is reported as out of memory.

``--dry-run`` runs both on the CPU at toy sizes (the ``tiny`` preset, batches 1 and 2), to check the
script without a GPU; it writes nothing unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from speed import _quiet_random_weight_warnings, update_report

import clip2depth
from clip2depth.errors import is_out_of_memory
from clip2depth.models.infer import predict_depth
from clip2depth.training.config import apply_overrides, load_recipe
from clip2depth.training.trainer import train

logger = logging.getLogger("benchmarks.gpu_check")
SECTION_KEY = "gpu-check"


def training_losses(preset: str, steps: int, amp: str, size: tuple[int, int], batch: int) -> list[float]:
    """Losses of ``steps`` steps of the real trainer on synthetic scenes (one record per step)."""
    h, w = size
    recipe = apply_overrides(load_recipe("synthetic"), [
        f"model={preset}", f"train.amp={amp}", f"train.max_steps={steps}", f"train.batch_size={batch}",
        "train.log_every=1", f"train.val_every={steps}", "train.num_workers=0",
        f"data.kwargs.size=[{h}, {w}]", f"data.kwargs.length={steps * batch}", f"data.val_kwargs.size=[{h}, {w}]",
        "data.val_kwargs.length=2", f"augment.crop_size=[{h}, {w}]",
    ])  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, _quiet_random_weight_warnings():
        train(recipe, Path(folder) / "run", progress=False)
        records = [json.loads(line) for line in (Path(folder) / "run" / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def losses_fall(losses: list[float]) -> bool:
    k = min(5, len(losses) // 2)
    return all(math.isfinite(x) for x in losses) and statistics.mean(losses[-k:]) < statistics.mean(losses[:k])


def throughput(model: clip2depth.Clip2Depth, batch: int, precision: str, size: tuple[int, int],
               repeats: int) -> tuple[float | None, int | None]:
    """(images per second, peak bytes above the start) of ``predict_depth`` on one batch; None when out of memory."""
    device = model.device
    images = torch.rand(batch, 3, *size, device=device)
    cuda = device.type == "cuda"
    try:
        predict_depth(model, images, precision=precision)  # warm-up (kernels, caches)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        for _ in range(repeats):
            predict_depth(model, images, precision=precision)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        return None, None
    peak = torch.cuda.max_memory_allocated(device) - base if cuda else None
    return batch * repeats / seconds, peak


def render(args: argparse.Namespace, losses: list[float], rows: list[tuple]) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run else "CPU (dry run)"
    lines = [
        f"<!-- bench:{SECTION_KEY} -->",
        "## GPU",
        "",
        f"`benchmarks/gpu_check.sh` ({datetime.date.today().isoformat()}): {device}, torch {torch.__version__}; "
        f"preset `{args.preset}` with random CLIP weights. The GPU tests (`pytest -m gpu`) ran first: CUDA predict "
        "equals the CPU within 1e-3 (fp32, per pixel) and 1e-2 (bf16, mean), a CUDA resume is exact, CUDA out of "
        "memory in predict is a listed skip.",
        "",
        f"{len(losses)} training steps, bf16 autocast, synthetic scenes: loss "
        f"{' → '.join(f'{x:.3f}' for x in (losses[0], losses[len(losses) // 2], losses[-1]))} "
        f"({'finite and falling' if losses_fall(losses) else 'NOT finite and falling'}).",
        "",
        f"Predict throughput, {args.size[0]}×{args.size[1]} images, {args.repeats} timed batches after one warm-up:",
        "",
        "| batch | precision | images/s | peak memory MiB |",
        "|---:|---|---:|---:|",
    ]
    for batch, precision, rate, peak in rows:
        lines.append(f"| {batch} | {precision} | {'out of memory' if rate is None else f'{rate:.1f}'} | "
                     f"{'n/a' if peak is None else f'{peak / 2**20:,.0f}'} |")  # fmt: skip
    lines += ["", "The table against other depth models on this GPU is the section after this one.",
              f"<!-- /bench:{SECTION_KEY} -->", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="clip2depth-vit-b-16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, toy sizes: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="report to update (default BENCHMARKS.md on a GPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    if args.dry_run:
        args.preset, args.batches, args.size, args.repeats = "tiny", [1, 2], [64, 96], 1
        torch.set_num_threads(1)  # toy sizes: thread barriers would cost more than they save
    elif not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; use --dry-run to check the script on the CPU")
    device = "cpu" if args.dry_run else "cuda"
    size = tuple(args.size)

    logger.info("%d training steps of %s, bf16 autocast", args.steps, args.preset)
    losses = training_losses(args.preset, args.steps, "bf16", (192, 256) if not args.dry_run else size,
                             8 if not args.dry_run else 4)  # fmt: skip
    logger.info("losses: %s", ", ".join(f"{x:.3f}" for x in losses))

    with _quiet_random_weight_warnings():
        model = clip2depth.create_model(args.preset, device=device).eval()
    rows = []
    for precision in ("fp32", "bf16"):
        for batch in args.batches:
            rate, peak = throughput(model, batch, precision, size, args.repeats)
            logger.info("batch %d %s: %s images/s, peak %s bytes", batch, precision, rate, peak)
            rows.append((batch, precision, rate, peak))

    section = render(args, losses, rows)
    print(section)
    out = args.out or (None if args.dry_run else Path("BENCHMARKS.md"))
    if out is not None:
        update_report(out, SECTION_KEY, section)
    if not losses_fall(losses):
        logger.error("the training loss is not finite and falling: %s", losses)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
