"""Images per second of ``clip2depth predict``'s engines, and how they scale from one worker to two.

Cases, each the real command on a folder of generated photos (``--format png16``), one thread per worker
(``OMP_NUM_THREADS=1``):

- ``local``: ``clip2depth predict`` in one process;
- ``torchrun 1`` / ``torchrun 2``: ``torchrun --nproc_per_node 1|2 -m clip2depth predict`` (gloo);
- ``ray 1`` / ``ray 2``: ``clip2depth predict --engine ray --workers 1|2`` on a local Ray instance that the
  command starts (it advertises one CPU more than the workers take, for the read and write tasks).

Each case runs twice, over ``N1`` and then ``N2`` images (``--images N1 N2``), and images/s is
``(N2 - N1) / (t2 - t1)`` from the two wall times: start-up (imports, model load, rendezvous, starting Ray
and its actors) costs the same in both runs and cancels out. Scaling efficiency is the 2-worker images/s over
twice the 1-worker images/s of the same engine (torchrun 2 vs torchrun 1, Ray 2 vs Ray 1); the goal for
ViT-B/16 is at least 0.8. Weights are random (speed does not depend on them).

``--gpu`` adds the local engine on CUDA in bf16 at ``--gpu-batches`` (default 1 8 32), same method.

The report goes to ``--out`` (default ``BENCHMARKS.md``) as the section ``scale`` (``scale-gpu`` for ``--gpu``);
other sections are kept. The figures in BENCHMARKS.md come from (about 15 minutes on 2 CPU cores)::

    python benchmarks/scale.py --presets tiny clip2depth-vit-b-16 --images 8 24 --size 224 288

(``--repeats 3`` takes the median of three runs, for a machine that other work shares), and the smallest run
that exercises every case (a smoke test, not figures: start-up noise exceeds the work)::

    python benchmarks/scale.py --presets tiny --images 2 4 --size 64 96
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from speed import update_report

import clip2depth

logger = logging.getLogger("benchmarks.scale")

EFFICIENCY_GOAL = 0.8
TORCHRUN = Path(sys.executable).with_name("torchrun")


@dataclass(frozen=True)
class Case:
    name: str
    engine: str  # local, torchrun, ray
    workers: int
    device: str = "cpu"
    batch_size: int = 1
    precision: str = "fp32"


@dataclass(frozen=True)
class Result:
    case: Case
    preset: str
    seconds: tuple[float, float]  # median wall time over N1 and over N2 images
    images: tuple[int, int]

    @property
    def images_per_second(self) -> float | None:
        """None when the extra images took no measurable time (start-up noise exceeds the work: use more images)."""
        extra = self.seconds[1] - self.seconds[0]
        return (self.images[1] - self.images[0]) / extra if extra > 0 else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_photos(folder: Path, count: int, height: int, width: int) -> Path:
    """``count`` smooth photos (varied, small files) in ``folder``."""
    folder.mkdir(parents=True)
    rows, cols = np.mgrid[0:height, 0:width]
    for i in range(count):
        rgb = np.stack([(rows * 3 + 11 * i) % 256, (cols * 2 + 5 * i) % 256, (rows + cols + i) % 256], axis=-1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"photo{i:04d}.png")
    return folder


def command(case: Case, model: Path, photos: Path, out: Path) -> list[str]:
    predict = ["-m", "clip2depth", "-q", "predict", str(photos), "--model", str(model), "--out", str(out),
               "--format", "png16", "--batch-size", str(case.batch_size), "--device", case.device,
               "--precision", case.precision]  # fmt: skip
    if case.engine == "torchrun":
        return [str(TORCHRUN), "--nproc_per_node", str(case.workers), "--master_addr", "127.0.0.1", "--master_port",
                str(_free_port()), *predict]  # fmt: skip
    if case.engine == "ray":
        return [sys.executable, *predict, "--engine", "ray", "--workers", str(case.workers)]
    return [sys.executable, *predict]


def time_case(case: Case, preset: str, model: Path, folders: tuple[Path, Path], images: tuple[int, int],
              scratch: Path, repeats: int) -> Result:  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if case.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    seconds = []
    for folder in folders:
        times = []
        for _ in range(repeats):
            out = scratch / "out"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            result = subprocess.run(command(case, model, folder, out), env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if result.returncode != 0:
                raise SystemExit(f"error: {case.name} failed:\n{result.stderr[-3000:]}")
        seconds.append(statistics.median(times))
    outcome = Result(case, preset, (seconds[0], seconds[1]), images)
    logger.info("%s %s: %.1f s / %.1f s for %d / %d images: %s images/s", preset, case.name, *seconds, *images,
                _rate(outcome.images_per_second))  # fmt: skip
    return outcome


def _rate(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def efficiency(results: list[Result], preset: str, engine: str) -> float | None:
    by_workers = {r.case.workers: r.images_per_second for r in results
                  if r.preset == preset and r.case.engine == engine}  # fmt: skip
    if by_workers.get(1) is None or by_workers.get(2) is None:
        return None
    return by_workers[2] / (2 * by_workers[1])


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _load() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.1f}"
    return "n/a"


def render(key: str, title: str, args: argparse.Namespace, results: list[Result], load: tuple[str, str]) -> str:
    import ray

    lines = [f"<!-- bench:{key} -->", f"## {title}", "",
             f"Written by `benchmarks/scale.py` (its docstring explains the method), {datetime.date.today()}: "
             f"`python benchmarks/scale.py {' '.join(args.argv)}`. torch {torch.__version__}, Ray {ray.__version__}; "
             f"{os.cpu_count()} logical CPUs ({_cpu_name()}); system load average (1 min) at start / end: "
             f"{load[0]} / {load[1]}. Images {args.size[0]}×{args.size[1]}, random weights, png16 outputs; "
             f"images/s = (N2 − N1) / (t2 − t1) over {args.images[0]} and {args.images[1]} images, median of "
             f"{args.repeats} run(s) each; n/a: start-up noise exceeded the work.", "",
             "| preset | engine | workers | device | batch | precision | t(N1) s | t(N2) s | images/s |",
             "|---|---|---:|---|---:|---|---:|---:|---:|"]  # fmt: skip
    for r in results:
        c = r.case
        lines.append(f"| `{r.preset}` | {c.engine} | {c.workers} | {c.device} | {c.batch_size} | {c.precision} | "
                     f"{r.seconds[0]:.1f} | {r.seconds[1]:.1f} | {_rate(r.images_per_second)} |")
    rows = []
    for preset in dict.fromkeys(r.preset for r in results):
        for engine in ("torchrun", "ray"):
            value = efficiency(results, preset, engine)
            if value is not None:
                verdict = f" ({'ok' if value >= EFFICIENCY_GOAL else 'under'} {EFFICIENCY_GOAL})" \
                    if "vit-b-16" in preset else ""  # fmt: skip
                rows.append(f"| `{preset}` | {engine} | {value:.2f}{verdict} |")
    if rows:
        lines += ["", "Scaling efficiency, 2 workers' images/s over twice 1 worker's (goal for ViT-B/16: "
                      f"≥ {EFFICIENCY_GOAL}):", "", "| preset | engine | efficiency |", "|---|---|---:|",
                  *rows]  # fmt: skip
    lines += [f"<!-- /bench:{key} -->", ""]
    return "\n".join(lines)


def cpu_cases(batch_size: int) -> list[Case]:
    return [Case("local", "local", 1, batch_size=batch_size),
            Case("torchrun 1", "torchrun", 1, batch_size=batch_size),
            Case("torchrun 2", "torchrun", 2, batch_size=batch_size),
            Case("ray 1", "ray", 1, batch_size=batch_size), Case("ray 2", "ray", 2, batch_size=batch_size)]


def gpu_cases(batches: list[int]) -> list[Case]:
    return [Case(f"local cuda bf16 batch {b}", "local", 1, device="cuda", batch_size=b, precision="bf16")
            for b in batches]


@contextlib.contextmanager
def quiet_random_weights() -> Iterator[None]:
    # Random weights are intended here; open_clip and clip2depth warn about them on every build.
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("clip2depth").setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("clip2depth").setLevel(logging.NOTSET)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--presets", nargs="+", default=["tiny", "clip2depth-vit-b-16"], help="model presets")
    parser.add_argument("--images", nargs=2, type=int, default=[8, 24], metavar=("N1", "N2"),
                        help="images of the two timed runs of each case (default 8 24)")
    parser.add_argument("--size", nargs=2, type=int, default=[224, 288], metavar=("H", "W"),
                        help="photo size (default 224 288)")
    parser.add_argument("--batch-size", type=int, default=1, help="--batch-size of the CPU cases (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per image count; the median time counts")
    parser.add_argument("--gpu", action="store_true", help="CUDA cases instead: the local engine in bf16")
    parser.add_argument("--gpu-batches", nargs="+", type=int, default=[1, 8, 32], help="batch sizes of --gpu")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report to update")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not 0 < args.images[0] < args.images[1]:
        parser.error("--images N1 N2 needs 0 < N1 < N2")
    if args.repeats < 1 or args.batch_size < 1:
        parser.error("--repeats and --batch-size must be at least 1")
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu: no CUDA device is available")
    if not TORCHRUN.exists():
        parser.error(f"torchrun is not installed next to {sys.executable}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cases = gpu_cases(args.gpu_batches) if args.gpu else cpu_cases(args.batch_size)
    load_start = _load()
    results = []
    with tempfile.TemporaryDirectory(prefix="clip2depth-scale-") as tmp:
        scratch = Path(tmp)
        folders = (make_photos(scratch / "n1", args.images[0], *args.size),
                   make_photos(scratch / "n2", args.images[1], *args.size))  # fmt: skip
        for preset in args.presets:
            model = scratch / f"model-{preset}"
            torch.manual_seed(0)
            with quiet_random_weights():
                clip2depth.create_model(preset).save_pretrained(str(model))
            for case in cases:
                results.append(time_case(case, preset, model, folders, tuple(args.images), scratch, args.repeats))
    key, title = ("scale-gpu", f"Engines on CUDA: {torch.cuda.get_device_name()}") if args.gpu else \
        ("scale", "Engines: images/s and scaling on the CPU, one thread per worker")  # fmt: skip
    section = render(key, title, args, results, (load_start, _load()))
    print(section)
    update_report(args.out, key, section)
    logger.info("updated %s (section %s)", args.out, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
