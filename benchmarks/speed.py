"""Speed and memory of CLIP2Depth against a full open_clip ``encode_image`` (docs/method.md#cost-model cost model).

For each input size and batch, four cases are timed (median wall time of ``--repeats`` rounds after
``--warmup`` rounds; a round runs every case once, interleaved) and their peak memory measured:

(a) open_clip's full ``encode_image`` of the same CLIP architecture: the yardstick;
(b) ``model.image_encoder(x)``: our frozen encoder alone (blocks up to the deepest used one);
(c) ``model(x)`` under ``torch.no_grad()`` in eval mode, with the query ``q`` cached: inference;
(d) one training step: forward, a SILog loss on a random target, backward, AdamW step over
    ``model.trainable_parameters()`` only (``q`` is recomputed, as in training);
(e) in an fp32 run: (c) under bfloat16 autocast (``precision="bf16"`` of ``model.infer`` and
    ``--precision bf16`` of the commands), with the mean relative depth deviation from (c)'s output.

docs/method.md#cost-model expects (c)/(a) ≈ 0.75 and (d)/(a) ≈ 1 plus a few percent; the targets checked here are
(c)/(a) ≤ 0.80 and (d)/(a) ≤ 1.3. Ratios are the median over rounds of the ratio within a round, so
load from other processes that drifts between rounds cancels out. A case that misses its target
gets a ``torch.profiler`` table of its top operators in the report.

On a CPU shared with other processes, use ``--threads 1``: with more threads than free cores, every
parallel operator waits for a descheduled thread at its barrier, which costs milliseconds per
operator and inflates the many small decoder operators far beyond their FLOPs.

Memory is the peak above what was resident just before each timed run (weights, and the optimizer
state that the warm-up created), i.e. what the case itself needs: activations, gradients, workspaces;
the largest over the rounds is reported.

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory, not
  the caching allocator's reserve).
- CPU (Linux): the process's peak resident set size, ``VmHWM`` in ``/proc/self/status``, reset by
  writing ``5`` to ``/proc/self/clear_refs`` before the case and taken relative to ``VmRSS`` then
  (after ``malloc_trim`` hands freed heap back). ``tracemalloc`` does not see tensor memory, and
  ``torch.profiler``'s memory columns sum per-operator allocations rather than giving a peak. This
  RSS figure includes allocator slack, so read it as an upper bound. Elsewhere memory is ``n/a``.

Weights are random (timing does not depend on them). The report goes to ``--out`` (default
``BENCHMARKS.md``) as one section per device and precision; sections of other devices are kept.

Example (ViT-B/16 at 416×544 took 3.4 s per image for encode_image on this 2-core CPU, idle, 2 threads;
batch 8 at both sizes makes the run take about 20 minutes)::

    python benchmarks/speed.py --device cpu --threads 2 --batches 1 8 --repeats 3 --warmup 1
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import logging
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

import clip2depth
from clip2depth.io.atomic import atomic_write_bytes
from clip2depth.models.clip_backbone import register_clip_configs, resolve_quick_gelu
from clip2depth.models.infer import precision_context
from clip2depth.models.profiling import count_flops

logger = logging.getLogger("benchmarks.speed")

CASES = {
    "a": "open_clip encode_image",
    "b": "image_encoder",
    "c": "inference",
    "d": "train step",
    "e": "inference, bf16 autocast",
}
INFERENCE_TARGET = 0.80  # (c)/(a)
TRAIN_TARGET = 1.3  # (d)/(a)
PROFILE_ROWS = 15
HEADER = """# Benchmarks

Written by `benchmarks/speed.py` (its docstring explains each case and how memory is measured). One
section per device and precision; rerunning on a device replaces only that device's section.

- **(a)** open_clip's full `encode_image` (all blocks, `ln_post`, projection) of the same CLIP: the yardstick.
- **(b)** `model.image_encoder(x)`: the frozen CLIP blocks up to the deepest used one.
- **(c)** `model(x)` in eval mode under `torch.no_grad()`, query cached: inference.
- **(d)** one training step: forward, SILog loss, backward, AdamW over the mirror and decoder.
- **(e)** (c) under bfloat16 autocast (`--precision bf16`), timed in the same rounds as (a)–(d); its depth
  deviation is the mean of |bf16 − fp32| / fp32 over the pixels.

Targets (docs/method.md#cost-model): (c)/(a) ≤ 0.80, (d)/(a) ≤ 1.3. Times are medians of wall time over rounds that
interleave the cases; ratios are medians of the per-round ratios. Memory is the peak above what was
resident before the case (weights, optimizer state).
"""


# ------------------------------------------------------------------------------------------ memory


class PeakMemory:
    """Peak memory of a block of work, in bytes above what was in use when :meth:`start` ran."""

    name = "n/a"

    def start(self) -> None:
        """Begin a measurement."""

    def peak(self) -> int | None:
        """Bytes above the start level, or ``None`` when this platform cannot tell."""
        return None


class CudaPeakMemory(PeakMemory):
    name = "torch.cuda.max_memory_allocated"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)

    def peak(self) -> int | None:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self.base


class RssPeakMemory(PeakMemory):
    """Linux only: VmHWM (peak RSS), reset through ``/proc/self/clear_refs``."""

    name = "peak RSS (VmHWM via /proc/self/clear_refs)"

    def __init__(self) -> None:
        self.base = 0
        try:
            self._malloc_trim: Callable[[int], int] | None = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._malloc_trim = None

    @staticmethod
    def available() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return "VmHWM" in Path("/proc/self/status").read_text()
        except OSError:
            return False

    @staticmethod
    def _status_kib(field: str) -> int:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"/proc/self/status has no {field}")
        return int(match.group(1))

    def start(self) -> None:
        if self._malloc_trim is not None:
            self._malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.base = self._status_kib("VmRSS")

    def peak(self) -> int | None:
        return (self._status_kib("VmHWM") - self.base) * 1024


def memory_meter(device: torch.device) -> PeakMemory:
    if device.type == "cuda":
        return CudaPeakMemory(device)
    if RssPeakMemory.available():
        return RssPeakMemory()
    return PeakMemory()


# ------------------------------------------------------------------------------------------ timing


@dataclass
class Case:
    """One thing to time: ``setup`` (untimed: train/eval mode, query cache) then ``run``."""

    run: Callable[[], object]
    setup: Callable[[], object] = lambda: None

    def __call__(self) -> None:
        self.setup()
        self.run()


@dataclass
class Measurement:
    median_s: float
    times_s: list[float]
    peak_bytes: int | None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cases: dict[str, Case], *, device: torch.device, meter: PeakMemory, repeats: int,
            warmup: int) -> dict[str, Measurement]:
    """Median wall time and peak memory of each case over ``repeats`` rounds, after ``warmup`` rounds.

    Rounds interleave the cases (a, b, c, d, a, b, ...), so that a change in the load from other
    processes affects every case of a round alike; see :func:`paired_ratio`.
    """
    for _ in range(warmup):
        for case in cases.values():
            case()
    times: dict[str, list[float]] = {key: [] for key in cases}
    peaks: dict[str, list[int | None]] = {key: [] for key in cases}
    for round_ in range(repeats):
        for key, case in cases.items():
            case.setup()
            synchronize(device)
            meter.start()
            t0 = time.perf_counter()
            case.run()
            synchronize(device)
            times[key].append(time.perf_counter() - t0)
            peaks[key].append(meter.peak())
        logger.info("  round %d/%d: %s", round_ + 1, repeats,
                    ", ".join(f"({key}) {times[key][-1]:.3f} s" for key in cases))
    return {
        key: Measurement(
            statistics.median(times[key]), times[key],
            None if None in peaks[key] else max(p for p in peaks[key] if p is not None),
        )
        for key in cases
    }


def median_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of ``times / reference`` of the same round (robust to load drift): every benchmark's
    ratio between two interleaved cases."""
    return statistics.median(t / r for t, r in zip(times, reference, strict=True))


def paired_ratio(case: Measurement, reference: Measurement) -> float:
    """:func:`median_ratio` of two measured cases."""
    return median_ratio(case.times_s, reference.times_s)


def profile_table(fn: Callable[[], object], device: torch.device) -> str:
    """torch.profiler's top operators (by self time) of one call of ``fn``."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=PROFILE_ROWS)


# ------------------------------------------------------------------------------------------ cases


def silog_loss(pred: torch.Tensor, target: torch.Tensor, lam: float = 0.85, alpha: float = 10.0) -> torch.Tensor:
    """``alpha · sqrt(mean(g²) − lam · mean(g)²)``, ``g = log pred − log target`` (docs/method.md#training-recipe)."""
    g = torch.log(pred) - torch.log(target)
    return alpha * torch.sqrt((g * g).mean() - lam * g.mean() ** 2)


def bf16_deviation(model: clip2depth.Clip2Depth, x: torch.Tensor, device: torch.device) -> float:
    """Mean relative depth deviation of bf16-autocast inference from fp32 on ``x``."""
    model.eval()
    with torch.no_grad():
        reference = model(x)
        with precision_context("bf16", device):
            low = model(x).float()
    return ((low - reference).abs() / reference).mean().item()


def reference_encoder(model: clip2depth.Clip2Depth, height: int, width: int, device: torch.device) -> nn.Module:
    """open_clip's CLIP of the model's architecture, activation matched, built for ``height``×``width``."""
    cfg = model.config
    register_clip_configs()
    quick_gelu = resolve_quick_gelu(cfg.clip_model, cfg.clip_pretrained, cfg.clip_quick_gelu)
    clip = open_clip.create_model(cfg.clip_model, force_quick_gelu=quick_gelu, force_image_size=(height, width))
    return clip.to(device).eval().requires_grad_(False)


def reference_gflops(model: clip2depth.Clip2Depth, height: int, width: int, layers: int) -> float:
    """Analytic GFLOPs of a full ViT ``encode_image`` (per block 24·N·d² + 4·N²·d plus the stem;
    docs/method.md#cost-model)."""
    p, d = model.patch_size, model.image_encoder.width
    n = (height // p) * (width // p) + 1
    stem = 2 * (n - 1) * 3 * p * p * d
    return (layers * (24 * n * d * d + 4 * n * n * d) + stem) / 1e9


def run_size(model: clip2depth.Clip2Depth, height: int, width: int, batches: list[int], args: argparse.Namespace,
             device: torch.device, meter: PeakMemory) -> tuple[list[dict], list[tuple[str, str]], dict]:
    """All cases at one size; returns table rows, profiler tables of missed targets, and GFLOPs."""
    reference = reference_encoder(model, height, width, device)
    layers = len(reference.visual.transformer.resblocks)
    gflops = count_flops(model, height, width)
    gflops["reference_encode_image"] = reference_gflops(model, height, width, layers)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    )
    rows, profiles = [], []
    for batch in batches:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, height, width, generator=generator).to(device)
        target = (0.1 + (model.max_depth - 0.1) * torch.rand(batch, 1, height, width, generator=generator)).to(device)
        params = [p for _, p in model.trainable_parameters()]
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)

        def encode_image(x: torch.Tensor = x) -> None:
            with torch.no_grad(), autocast():
                reference.encode_image(x)

        def image_encoder(x: torch.Tensor = x) -> None:
            with torch.no_grad(), autocast():
                model.image_encoder(x)

        def inference(x: torch.Tensor = x) -> None:
            with torch.no_grad(), autocast():
                model(x)

        def eval_with_cached_query() -> None:
            # The previous round's training step moved the mirror: refresh q outside the timing,
            # as a deployed model computes it once.
            model.eval()
            with torch.no_grad(), autocast():
                model.query()

        def inference_bf16(x: torch.Tensor = x) -> None:
            with torch.no_grad(), precision_context("bf16", device):
                model(x)

        def train_step(x: torch.Tensor = x, target: torch.Tensor = target,
                       optimizer: torch.optim.Optimizer = optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                pred = model(x)
            silog_loss(pred.float(), target).backward()
            optimizer.step()

        cases = {
            "a": Case(encode_image, model.eval),
            "b": Case(image_encoder, model.eval),
            "c": Case(inference, eval_with_cached_query),
            "d": Case(train_step, model.train),
        }
        if not args.bf16:
            cases["e"] = Case(inference_bf16, eval_with_cached_query)
        logger.info("%dx%d batch %d: %s", height, width, batch, ", ".join(f"({k}) {v}" for k, v in CASES.items()))
        results = measure(cases, device=device, meter=meter, repeats=args.repeats, warmup=args.warmup)
        ratio_c = paired_ratio(results["c"], results["a"])
        ratio_d = paired_ratio(results["d"], results["a"])
        row = {"size": f"{height}×{width}", "batch": batch, "results": results, "ratio_c": ratio_c, "ratio_d": ratio_d}
        if "e" in results:
            row["ratio_e"] = paired_ratio(results["e"], results["a"])
            row["deviation_e"] = bf16_deviation(model, x, device)
        rows.append(row)
        for key, ratio, limit in (("c", ratio_c, INFERENCE_TARGET), ("d", ratio_d, TRAIN_TARGET)):
            if ratio > limit:
                logger.info("  (%s)/(a) = %.2f > %.2f: profiling", key, ratio, limit)
                title = f"({key}) {CASES[key]}, {height}×{width}, batch {batch}: ({key})/(a) = {ratio:.2f} > {limit}"
                profiles.append((title, profile_table(cases[key], device)))
        model.eval()
    return rows, profiles, gflops


# ------------------------------------------------------------------------------------------ report


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f}"


def device_description(device: torch.device, bf16: bool) -> tuple[str, str]:
    """(section key, human description) of the device and precision."""
    precision = "bf16 autocast" if bf16 else "fp32"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"cuda-{re.sub(r'[^A-Za-z0-9]+', '-', name)}-{'bf16' if bf16 else 'fp32'}", f"CUDA: {name}, {precision}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    threads = torch.get_num_threads()
    return f"cpu-{threads}threads", f"CPU: {cpu}, {threads} torch thread{'s' if threads != 1 else ''}, {precision}"


def _load_average() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.1f}"
    return "n/a"


def render_section(key: str, title: str, args: argparse.Namespace, meter: PeakMemory, load: tuple[str, str],
                   rows: list[dict], profiles: list[tuple[str, str]], gflops: dict[str, dict]) -> str:
    lines = [
        f"<!-- bench:{key} -->",
        f"## {title}",
        "",
        f"Preset `{args.preset}` (random weights), {datetime.date.today().isoformat()}, torch {torch.__version__}, "
        f"open_clip {open_clip.__version__}; median of {args.repeats} run(s) after {args.warmup} warm-up run(s); "
        f"memory: {meter.name}. System load average (1 min) at start / end: "
        f"{load[0]} / {load[1]} on {os.cpu_count()} logical CPUs (other processes share them).",
        "",
        "| size | batch | (a) encode_image s | (b) image_encoder s | (c) inference s | (d) train step s "
        "| (c)/(a) | (d)/(a) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row["results"]
        ok_c = "ok" if row["ratio_c"] <= INFERENCE_TARGET else "over"
        ok_d = "ok" if row["ratio_d"] <= TRAIN_TARGET else "over"
        lines.append(
            f"| {row['size']} | {row['batch']} | {r['a'].median_s:.3f} | {r['b'].median_s:.3f} | "
            f"{r['c'].median_s:.3f} | {r['d'].median_s:.3f} | {row['ratio_c']:.2f} ({ok_c}) | "
            f"{row['ratio_d']:.2f} ({ok_d}) |"
        )
    lines += [
        "",
        "Peak memory above the resident model, MiB:",
        "",
        "| size | batch | (a) | (b) | (c) | (d) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row["results"]
        lines.append(f"| {row['size']} | {row['batch']} | " + " | ".join(_mib(r[k].peak_bytes) for k in "abcd") + " |")
    if any("ratio_e" in row for row in rows):
        lines += [
            "",
            "(e) inference under bf16 autocast, timed in the same rounds as (a)–(d) above:",
            "",
            "| size | batch | (e) bf16 inference s | (e)/(a) | (e)/(c) | depth deviation from fp32 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            r = row["results"]
            lines.append(
                f"| {row['size']} | {row['batch']} | {r['e'].median_s:.3f} | {row['ratio_e']:.2f} | "
                f"{paired_ratio(r['e'], r['c']):.2f} | {row['deviation_e']:.1e} |"
            )
    lines += [
        "",
        "GFLOPs per image (`clip2depth.models.profiling.count_flops`; the full `encode_image` from the "
        "docs/method.md cost formula):",
        "",
        "| size | (a) encode_image | image_encoder | decoder | inference per image | (inference)/(a) "
        "| query, once per step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size, g in gflops.items():
        lines.append(
            f"| {size} | {g['reference_encode_image']:.4g} | {g['image_encoder']:.4g} | {g['decoder']:.3g} | "
            f"{g['per_image']:.4g} | {g['per_image'] / g['reference_encode_image']:.2f} | {g['query_once']:.3g} |"
        )
    for profile_title, table in profiles:
        lines += ["", f"### Profile: {profile_title}", "", "```", table.rstrip(), "```"]
    lines += [f"<!-- /bench:{key} -->", ""]
    return "\n".join(lines)


def update_report(path: Path, key: str, section: str) -> None:
    """Replace the section ``key`` of ``path`` (or append it), keeping every other section."""
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_bytes(path, text.encode())


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="clip2depth-vit-b-16", help="model preset (random CLIP weights)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                        help="auto: cuda when available (default)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[416, 544, 480, 640], metavar="H W",
                        help="input sizes as H W pairs (default 416 544 480 640)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case before timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 avoids thread-barrier stalls "
                             "that inflate small operators when other processes share the cores")
    parser.add_argument("--bf16", action="store_true", help="CUDA only: run every case under bf16 autocast")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"),
                        help="markdown report to create or update (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    if len(args.sizes) % 2:
        parser.error("--sizes takes H W pairs")
    if args.repeats < 1 or args.warmup < 0 or any(b < 1 for b in args.batches) or (args.threads or 1) < 1:
        parser.error("--repeats, --batches and --threads must be >= 1, --warmup >= 0")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.bf16 and args.device != "cuda":
        parser.error("--bf16 applies to CUDA autocast only")
    return args


@contextlib.contextmanager
def _quiet_random_weight_warnings() -> Iterator[None]:
    # Random weights are intended here; open_clip and clip2depth warn about them on every build.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    logging.getLogger("clip2depth").setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        logging.getLogger("clip2depth").setLevel(logging.NOTSET)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)  # progress stays visible while random-weight warnings are silenced
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = list(zip(args.sizes[::2], args.sizes[1::2], strict=True))
    with _quiet_random_weight_warnings():
        model = clip2depth.create_model(args.preset, device=device)
    p = model.patch_size
    bad = [f"{h}x{w}" for h, w in sizes if h % p or w % p]
    if bad:
        raise SystemExit(f"error: sizes {', '.join(bad)} are not multiples of the patch size {p}")
    meter = memory_meter(device)
    key, title = device_description(device, args.bf16)
    logger.info("%s; preset %s; memory: %s", title, args.preset, meter.name)

    rows, profiles, gflops = [], [], {}
    load_start = _load_average()
    for h, w in sizes:
        with _quiet_random_weight_warnings():
            size_rows, size_profiles, size_gflops = run_size(model, h, w, args.batches, args, device, meter)
        rows += size_rows
        profiles += size_profiles
        gflops[f"{h}×{w}"] = size_gflops

    section = render_section(key, title, args, meter, (load_start, _load_average()), rows, profiles, gflops)
    print(section)
    update_report(args.out, key, section)
    logger.info("updated %s (section %s)", args.out, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
