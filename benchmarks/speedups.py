"""Speed-ups tried for inference (case (c) of benchmarks/speed.py): each try timed against the path it replaces.

One ``--photo`` image (default 480×640, batch 1), the preset's model with random weights, ``model(x)`` under
``torch.no_grad()`` with the query cached. Each try is timed in the same interleaved rounds as the
reference (the image encoder's open_clip blocks called as modules, i.e. ``nn.MultiheadAttention``'s fused
fast path: what clip2depth did before); a ratio is the median over rounds of try / reference in the same round.
The depth deviation is the largest ``|try − reference| / reference`` over the pixels; a try is adopted only if
it is faster and stays within 1e-4.

Tries:

- ``sdpa``: the blocks' attention through ``F.scaled_dot_product_attention`` (``models/image_encoder.run_block``);
- ``compile``: ``torch.compile`` of the frozen image encoder (the compile time is reported apart, and
  a compiled graph is specialised to one input size);
- ``threads N``: the reference with ``torch.set_num_threads(N)`` for each ``--threads-tried`` value;
- ``onnx``: ONNX Runtime on the exported graph (``predict --runtime onnx``), as many intra-op threads as torch.

Every try but ``threads`` runs at ``--threads`` (default 1, so that other processes on a shared CPU do not
stall the thread barriers). The section "Speed-ups tried" of ``--out`` (BENCHMARKS.md) is replaced.

Full run (about 4 minutes on a 2-core CPU under load; a cold ``torch.compile`` adds about a minute and a half)::

    python benchmarks/speedups.py --threads 1 --repeats 5 --warmup 1
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from speed import (
    _load_average,
    _quiet_random_weight_warnings,
    device_description,
    median_ratio,
    profile_table,
    update_report,
)

import clip2depth
from clip2depth.models import image_encoder

logger = logging.getLogger("benchmarks.speedups")

SECTION_KEY = "speedups"
TOLERANCE = 1e-4


def module_path():
    """Context: the image encoder's blocks called as modules (the MHA fast path), as before ``run_block``."""
    original = image_encoder.run_block

    class _Context:
        def __enter__(self) -> None:
            image_encoder.run_block = lambda block, x: block(x)

        def __exit__(self, *exc: object) -> None:
            image_encoder.run_block = original

    return _Context()


def with_threads(n: int, fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return call


def build_tries(model: clip2depth.Clip2Depth, x: torch.Tensor, args: argparse.Namespace) -> tuple[dict, dict]:
    """``{name: call}`` (the reference first) and notes (compile and export times, or why a try is missing)."""
    notes: dict[str, str | float] = {}

    def reference() -> torch.Tensor:
        with module_path():
            return model(x)

    tries: dict[str, Callable[[], torch.Tensor]] = {"reference (MHA fast path)": reference, "sdpa": lambda: model(x)}
    if not args.skip_compile:
        compiled = torch.compile(model.image_encoder)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(x)
        notes["compile_s"] = time.perf_counter() - start
        notes["compile"] = f"first call, compiling with an empty cache, took {notes['compile_s']:.0f} s"

        def compiled_call() -> torch.Tensor:
            return model.decoder(compiled(x), model.query())

        tries["compile"] = compiled_call
    for n in args.threads_tried:
        tries[f"threads {n}"] = with_threads(n, reference)
    try:
        from clip2depth.inference.onnx_runtime import OnnxRuntimeModel

        start = time.perf_counter()
        runtime = OnnxRuntimeModel.from_model(model, threads=args.threads)
        notes["onnx"] = f"export and session took {time.perf_counter() - start:.0f} s"
        tries["onnx"] = lambda: runtime(x)
    except clip2depth.Clip2DepthError as exc:
        notes["onnx"] = f"not run: {exc}"
    return tries, notes


def run(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float],
                                           dict[str, str]]:
    with _quiet_random_weight_warnings():
        model = clip2depth.create_model(args.preset).eval()
    x = torch.rand(1, 3, *args.photo, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tries, notes = build_tries(model, x, args)
        outputs = {name: call() for name, call in tries.items()}  # also the warm-up of each
        reference = outputs["reference (MHA fast path)"]
        deviation = {name: ((out - reference).abs() / reference).max().item() for name, out in outputs.items()}
        for _ in range(args.warmup):
            for call in tries.values():
                call()
        times: dict[str, list[float]] = {name: [] for name in tries}
        cpu: dict[str, list[float]] = {name: [] for name in tries}
        for round_ in range(args.repeats):
            for name, call in tries.items():
                t0, c0 = time.perf_counter(), time.process_time()
                call()
                cpu[name].append(time.process_time() - c0)
                times[name].append(time.perf_counter() - t0)
            logger.info("round %d/%d: %s", round_ + 1, args.repeats,
                        ", ".join(f"{k} {v[-1]:.3f} s ({cpu[k][-1]:.3f} s CPU)" for k, v in times.items()))  # fmt: skip
        notes["profile"] = profile_table(tries["sdpa"], torch.device("cpu"))
    return times, cpu, deviation, notes


ADOPTED = {
    "sdpa": "kept: the image encoder's default path (`run_block`)",
    "compile": "not adopted: {verdict}; the compile is paid per process and input size, and repays itself only "
               "after {payback} images of one size (compile time / CPU time saved per image against `sdpa`)",
    "onnx": "offered as `predict --runtime onnx`, not the default: {verdict}",
    "threads": "a setting, not a code path: {verdict}; on a CPU shared with other processes use one thread "
               "(benchmarks' `--threads 1`)",
}  # fmt: skip


def render(args: argparse.Namespace, times: dict, cpu: dict, deviation: dict, notes: dict,
           load: tuple[str, str]) -> str:
    _, device = device_description(torch.device("cpu"), False)
    ref_name = "reference (MHA fast path)"
    h, w = args.photo
    lines = [
        f"<!-- bench:{SECTION_KEY} -->",
        "## Speed-ups tried",
        "",
        f"`benchmarks/speedups.py` ({datetime.date.today().isoformat()}): preset `{args.preset}` (random weights), "
        f"inference on one {h}×{w} image, {device}; median of {args.repeats} interleaved round(s) after "
        f"{args.warmup} warm-up round(s); system load (1 min) at start / end {load[0]} / {load[1]}. The ratio is "
        "the median of the per-round try / reference on the process's CPU time (every try but `threads` runs on "
        f"{args.threads} thread(s), so CPU time is its work, whatever else the machine runs), on wall time for "
        "`threads` (more threads spend more CPU time to cut latency); deviation: largest relative depth "
        "difference from the reference.",
        "",
        "| try | wall s/image | CPU s/image | vs reference | depth deviation | decision |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in times:
        key = "threads" if name.startswith("threads") else name
        clock = times if key == "threads" else cpu  # more threads spend more CPU time: judge them by wall time
        r = median_ratio(clock[name], clock[ref_name])
        faster = r < 1.0 and deviation[name] <= TOLERANCE
        verdict = f"{'faster' if r < 1 else 'slower'} ({r:.2f}), deviation {deviation[name]:.1e}"
        if name == ref_name:
            decision = "the path replaced"
        elif key == "sdpa":
            decision = ADOPTED[key] if faster else f"not faster here ({r:.2f}): revisit"
        elif key == "compile":
            saved = statistics.median(cpu["sdpa"]) - statistics.median(cpu[name])
            payback = f"{notes['compile_s'] / saved:.0f}" if saved > 0 else "no number of"
            decision = ADOPTED[key].format(verdict=verdict, payback=payback)
        elif key == "onnx":
            against_sdpa = median_ratio(cpu[name], cpu["sdpa"])
            decision = ADOPTED[key].format(verdict=f"{verdict}, {against_sdpa:.2f}× the CPU time of the adopted "
                                                   "`sdpa` path")  # fmt: skip
        else:
            decision = ADOPTED[key].format(verdict=verdict)
        note = f" ({notes[key]})" if key in notes else ""
        lines.append(f"| {name}{note} | {statistics.median(times[name]):.3f} | {statistics.median(cpu[name]):.3f} | "
                     f"{r:.2f} | {deviation[name]:.1e} | {decision} |")  # fmt: skip
    for key, note in notes.items():
        if isinstance(note, str) and note.startswith("not run"):
            lines.append(f"| {key} | n/a | n/a | n/a | n/a | {note} |")
    lines += ["", "Where the adopted path's time goes (one call, top operators by self CPU time): the matrix "
                  "products of the image encoder's blocks dominate, i.e. the FLOPs themselves.",
              "", "```", notes["profile"].rstrip(), "```", f"<!-- /bench:{SECTION_KEY} -->", ""]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="clip2depth-vit-b-16")
    parser.add_argument("--photo", nargs=2, type=int, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every try but 'threads' (default 1)")
    parser.add_argument("--threads-tried", nargs="*", type=int, default=[2], help="thread counts tried (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip-compile", action="store_true", help="leave torch.compile out (no C++ compiler)")
    parser.add_argument("--out", default="BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # An empty compile cache, so that the compile time noted is what a fresh machine pays.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="speedups-inductor-")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    load_start = _load_average()
    times, cpu, deviation, notes = run(args)
    section = render(args, times, cpu, deviation, notes, (load_start, _load_average()))
    print(section)
    update_report(Path(args.out), SECTION_KEY, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
