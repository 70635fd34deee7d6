"""Against other depth models: clip2depth beside Depth Anything V2 and DepthCLIP, measured in one process.

Models (random weights everywhere: sizes, FLOPs and times do not depend on them; nothing is downloaded):

- clip2depth ViT-B/16 (``--preset``, default ``clip2depth-vit-b-16``), the paper's model: frozen CLIP, a
  trained mirror and decoder;
- the MobileCLIP-S1 preset (``clip2depth-mobileclip-s1``);
- DepthCLIP RN50 (``depthclip-rn50``), zero-shot, nothing trained;
- Depth Anything V2 Small and Base, built with ``transformers`` (``DepthAnythingConfig`` around a
  ``Dinov2Config``) from the sizes in the ``config.json`` of the Hugging Face repositories
  ``depth-anything/Depth-Anything-V2-Small-hf`` and ``depth-anything/Depth-Anything-V2-Base-hf``
  (written out in :data:`DEPTH_ANYTHING_V2` below).

What is measured:

1. Parameters (total, and what training updates: ours the mirror and decoder; DepthCLIP nothing; Depth Anything
   everything when fine-tuned).
2. GFLOPs per image from one counter for every model: ``torch.utils.flop_counter.FlopCounterMode`` through
   ``clip2depth.models.profiling.forward_flops``, which switches off ``nn.MultiheadAttention``'s fused fast path
   (invisible to the counter) and counts the CPU flash-attention kernel with the SDPA formula. Ours is
   cross-checked against ``count_flops`` (what ``clip2depth info`` prints); the run stops if they differ.
3. Time per ``--photo`` image (default 480×640, batch 1, no autograd) at each model's own processing size:
   ours at the photo's size rounded to the patch multiple (480×640 for 16-px patches); Depth Anything V2 as
   its image processor does (``keep_aspect_ratio``, ``ensure_multiple_of=14``, 518 px: the short side goes to
   518 and both sides to the nearest multiple of 14, 518×686 for 480×640). The resize in and out is part of
   the timed call. With ``--threads 1`` on the CPU the time is the process's CPU time (``time.process_time``:
   the work itself, which other processes on a shared CPU do not inflate by descheduling it), otherwise wall
   time. Rounds interleave the models; a ratio is the median over rounds of the model's time over
   ours in the same round, so load that drifts between rounds cancels out.
4. One training step (forward, SILog loss on a random target, backward, AdamW) at ``--batch`` (4) on a
   ``--crop`` (352×480) for ours, Depth Anything V2 Small fine-tuned whole (its metric head, as the
   ``Depth-Anything-V2-Metric-*`` models are trained: ``max_depth · sigmoid``) and the same with a frozen
   encoder (DINOv2 frozen, the DPT neck and head trained). Depth Anything gets the nearest multiples of 14
   (350×476 for 352×480). Times interleaved in this process, as above.
5. Peak training memory, one fresh subprocess per case (``--memory-case``): Linux's peak resident set size,
   ``VmHWM`` of ``/proc/self/status``. ``tracemalloc`` does not see tensor memory and ``ru_maxrss`` cannot be
   reset; ``VmHWM`` can (``/proc/self/clear_refs``). Two figures: *training process* = the peak while
   building the model and running two steps, above the process's footprint before the model was built
   (weights, gradients, AdamW state, activations, workspaces: what training costs); *step* = the peak of the
   second step above what was resident before it (activations, gradients, workspaces). RSS includes allocator
   slack: read both as upper bounds. Elsewhere than Linux memory is ``n/a``.

Goals checked for the paper model (the report says which are met, and profiles the misses): a training
step at most 0.5 of fine-tuning Depth Anything V2 Small, peak training memory at most 0.3 of it, inference
at most 0.9 of Depth Anything V2 Small's time per photo.

The section "Against other depth models" of ``--out`` (BENCHMARKS.md) is replaced; ``--readme README.md``
also writes a short table into the README between ``<!-- peers -->`` markers.

Full run (one thread; 2.7 minutes with ``--repeats 2 --warmup 1`` on a 2-core CPU that other jobs kept at a
load of 2.5 to 3, 6.3 minutes at a load of 5; about a third of it builds the models and counts FLOPs, another
third is the three memory processes)::

    python benchmarks/peers.py --threads 1 --repeats 3 --warmup 1 --readme README.md

``--device cuda`` measures the same on a GPU (fp32, its own section "Against other depth models (CUDA)"; memory
from ``torch.cuda.max_memory_allocated``); ``benchmarks/gpu_check.sh`` runs it. ``--quick`` is a smoke
run (small sizes, one round, no warm-up); ``--tiny`` swaps every model for a tiny configuration of the same
family (tests).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from speed import (
    RssPeakMemory,
    _load_average,
    _mib,
    _quiet_random_weight_warnings,
    device_description,
    median_ratio,
    profile_table,
    silog_loss,
    synchronize,
    update_report,
)
from torch import nn

import clip2depth
from clip2depth.io.atomic import atomic_write_bytes
from clip2depth.models.depthclip import DEPTHCLIP_RN50
from clip2depth.models.infer import network_size
from clip2depth.models.profiling import count_flops, forward_flops

logger = logging.getLogger("benchmarks.peers")

SECTION_KEY = "peers"
README_BEGIN, README_END = "<!-- peers -->", "<!-- /peers -->"
TRAIN_TIME_GOAL = 0.5  # ours / Depth Anything V2 Small fine-tuned whole
TRAIN_MEMORY_GOAL = 0.3
INFERENCE_GOAL = 0.9  # ours / Depth Anything V2 Small per photo
DA_SIZE, DA_MULTIPLE = 518, 14  # Depth Anything V2's image processor: size 518, ensure_multiple_of 14

# From the config.json of each Hugging Face repository (only what sets sizes; the rest are transformers'
# defaults, which those files also use: 12 layers, MLP ratio 4, head_hidden_size 32).
DEPTH_ANYTHING_V2 = {
    "small": {  # depth-anything/Depth-Anything-V2-Small-hf
        "hidden_size": 384, "num_attention_heads": 6, "num_hidden_layers": 12, "out_indices": [3, 6, 9, 12],
        "neck_hidden_sizes": [48, 96, 192, 384], "fusion_hidden_size": 64,
    },
    "base": {  # depth-anything/Depth-Anything-V2-Base-hf
        "hidden_size": 768, "num_attention_heads": 12, "num_hidden_layers": 12, "out_indices": [3, 6, 9, 12],
        "neck_hidden_sizes": [96, 192, 384, 768], "fusion_hidden_size": 128,
    },
    "tiny": {  # tests only: the same architecture, a few channels
        "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 4, "out_indices": [1, 2, 3, 4],
        "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16,
    },
}  # fmt: skip


# ------------------------------------------------------------------------------------------ models


def import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise SystemExit(f"error: benchmarks/peers.py builds Depth Anything V2 with transformers ({exc}); "
                         "install it with: pip install 'clip2depth[bench]'") from exc  # fmt: skip
    return transformers


def build_depth_anything(size: str, *, metric: bool = False) -> nn.Module:
    """Depth Anything V2 (``small``, ``base`` or ``tiny``) with random weights; ``metric``: the metric head."""
    transformers = import_transformers()
    sizes = DEPTH_ANYTHING_V2[size]
    backbone = transformers.Dinov2Config(
        hidden_size=sizes["hidden_size"], num_attention_heads=sizes["num_attention_heads"],
        num_hidden_layers=sizes["num_hidden_layers"], image_size=DA_SIZE, patch_size=DA_MULTIPLE,
        out_indices=sizes["out_indices"], reshape_hidden_states=False,
    )  # fmt: skip
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone, patch_size=DA_MULTIPLE, reassemble_hidden_size=sizes["hidden_size"],
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=sizes["neck_hidden_sizes"],
        fusion_hidden_size=sizes["fusion_hidden_size"], head_hidden_size=32, head_in_index=-1,
        depth_estimation_type="metric" if metric else "relative", max_depth=10,  # transformers types it as int
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.DepthAnythingForDepthEstimation(config).eval()


def depth_anything_size(h: int, w: int, *, short_side: int = DA_SIZE) -> tuple[int, int]:
    """Depth Anything V2's processing size: aspect kept, short side to ``short_side``, sides to multiples of 14.

    What its ``DPTImageProcessor`` does (``keep_aspect_ratio``, ``ensure_multiple_of=14``): the smaller of the
    two scale changes is applied to both sides, then each side is rounded to the nearest multiple of 14.
    """
    scale = short_side / min(h, w)
    return (max(DA_MULTIPLE, round(h * scale / DA_MULTIPLE) * DA_MULTIPLE),
            max(DA_MULTIPLE, round(w * scale / DA_MULTIPLE) * DA_MULTIPLE))  # fmt: skip


def nearest_multiple(h: int, w: int, multiple: int) -> tuple[int, int]:
    return max(multiple, round(h / multiple) * multiple), max(multiple, round(w / multiple) * multiple)


@dataclass
class Peer:
    """One model of the table: how to build it, its processing size, and its forward pass to B×1×H×W depth."""

    name: str
    build: Callable[[], nn.Module]
    size: Callable[[int, int], tuple[int, int]]
    ours: bool = False
    model: nn.Module | None = field(default=None, repr=False)

    def depth(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if not isinstance(out, torch.Tensor):  # transformers' DepthEstimatorOutput: B×H×W
            out = out.predicted_depth.unsqueeze(1)
        return out

    def photo(self, image: torch.Tensor) -> torch.Tensor:
        """Depth of B×3×H×W RGB in [0, 1] at its own size: resize to the processing size, predict, resize back."""
        h, w = image.shape[-2:]
        size = self.size(h, w)
        x = image if size == (h, w) else F.interpolate(image, size=size, mode="bilinear", antialias=True)
        depth = self.depth(x)
        return depth if depth.shape[-2:] == (h, w) else F.interpolate(depth, size=(h, w), mode="bilinear")


def _clip2depth_peer(name: str, preset: str, *, ours: bool = False) -> Peer:
    def build() -> nn.Module:
        with _quiet_random_weight_warnings():
            return clip2depth.create_model(preset).eval()

    peer = Peer(name, build, lambda h, w: (h, w), ours=ours)
    peer.size = lambda h, w: network_size(h, w, peer.model.patch_size)
    return peer


def peers(args: argparse.Namespace) -> list[Peer]:
    """The models of the inference table, ours first."""
    da = "tiny" if args.tiny else None
    tag = " (tiny config)" if args.tiny else ""
    return [
        _clip2depth_peer(f"clip2depth {args.preset}", args.preset, ours=True),
        _clip2depth_peer(f"clip2depth {args.mobileclip}", args.mobileclip),
        _clip2depth_peer("DepthCLIP RN50 (zero-shot)", DEPTHCLIP_RN50),
        Peer(f"Depth Anything V2 Small{tag}", lambda: build_depth_anything(da or "small"), depth_anything_size),
        Peer(f"Depth Anything V2 Base{tag}", lambda: build_depth_anything(da or "base"), depth_anything_size),
    ]


def trained_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def total_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ training cases

TRAIN_CASES = {
    "ours": "clip2depth (mirror + decoder)",
    "da_full": "Depth Anything V2 Small, fine-tuned whole",
    "da_head": "Depth Anything V2 Small, frozen encoder (neck + head)",
}


@dataclass
class TrainCase:
    """A model set up for training: its step, what it trains, and the crop it gets."""

    model: nn.Module
    step: Callable[[], float]
    trained: int
    crop: tuple[int, int]


def train_case(key: str, args: argparse.Namespace) -> TrainCase:
    """Build the model of case ``key``, its AdamW over what it trains, and one step's closure on fixed data."""
    crop_h, crop_w = args.crop
    if key == "ours":
        with _quiet_random_weight_warnings():
            model = clip2depth.create_model(args.preset)
        params = [p for _, p in model.trainable_parameters()]
        crop = nearest_multiple(crop_h, crop_w, model.patch_size)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model(x)
    else:
        model = build_depth_anything("tiny" if args.tiny else "small", metric=True)
        if key == "da_head":
            model.backbone.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        crop = nearest_multiple(crop_h, crop_w, DA_MULTIPLE)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model(x).predicted_depth.unsqueeze(1)

    model.to(args.device).train()
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, *crop, generator=generator).to(args.device)
    target = (0.5 + 9 * torch.rand(args.batch, 1, *crop, generator=generator)).to(args.device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        # A relative or freshly initialised head can output exact zeros; the floor keeps the log finite.
        loss = silog_loss(forward(x).clamp_min(1e-3), target)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return TrainCase(model, step, sum(p.numel() for p in params), crop)


def memory_case(key: str, args: argparse.Namespace) -> dict:
    """Run in a fresh process: peak RSS of building case ``key`` and two steps, and of the second step alone.

    On CUDA: ``torch.cuda.max_memory_allocated`` instead (tensor memory; the process starts with none).
    """
    if args.device == "cuda":
        case = train_case(key, args)
        case.step()
        process_peak = torch.cuda.max_memory_allocated()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
        case.step()
        torch.cuda.synchronize()
        step_peak = torch.cuda.max_memory_allocated() - resident
        return {"case": key, "process_bytes": max(process_peak, torch.cuda.max_memory_allocated()),
                "step_bytes": step_peak, "resident_bytes": resident}  # fmt: skip
    meter = RssPeakMemory()
    meter.start()
    before = meter.base
    case = train_case(key, args)
    case.step()
    after_first = RssPeakMemory._status_kib("VmHWM")
    meter.start()
    resident = meter.base
    case.step()
    step_peak = meter.peak()
    process_peak = max(after_first, RssPeakMemory._status_kib("VmHWM")) - before
    return {"case": key, "process_bytes": process_peak * 1024, "step_bytes": step_peak,
            "resident_bytes": (resident - before) * 1024}  # fmt: skip


def measure_memory(args: argparse.Namespace) -> dict[str, dict]:
    """:func:`memory_case` of every training case, each in its own Python process (``n/a`` off Linux)."""
    if args.device == "cpu" and not RssPeakMemory.available():
        return {}
    results = {}
    for key in TRAIN_CASES:
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-case", key, *forwarded_flags(args)]
        logger.info("memory of %s in a fresh process", key)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"error: the memory run of {key} failed:\n{done.stderr[-3000:]}")
        results[key] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def forwarded_flags(args: argparse.Namespace) -> list[str]:
    """The flags a memory subprocess needs to build the same case."""
    flags = ["--preset", args.preset, "--crop", *map(str, args.crop), "--batch", str(args.batch),
             "--device", args.device]
    if args.threads is not None:
        flags += ["--threads", str(args.threads)]
    return flags + (["--tiny"] if args.tiny else [])


# ------------------------------------------------------------------------------------------ timing


def clock(args: argparse.Namespace) -> tuple[Callable[[], float], str]:
    """The timer and its description: on one CPU thread the process's CPU time (the work itself, which other
    processes on a shared CPU do not inflate by descheduling it), else wall time."""
    if args.device == "cpu" and args.threads == 1:
        return time.process_time, "CPU time of the process (one thread)"
    return time.perf_counter, "wall time"


def interleaved(calls: dict[str, Callable[[], object]], *, repeats: int, warmup: int, device: str = "cpu",
                timer: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """``timer`` time of each call in each of ``repeats`` rounds (after ``warmup`` untimed rounds), interleaved."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {key: [] for key in calls}
    for round_ in range(repeats):
        for key, call in calls.items():
            synchronize(torch.device(device))
            t0 = timer()
            call()
            synchronize(torch.device(device))
            times[key].append(timer() - t0)
        logger.info("  round %d/%d: %s", round_ + 1, repeats, ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    return times


# ------------------------------------------------------------------------------------------ run


@dataclass
class InferenceRow:
    name: str
    ours: bool
    total: int
    trained: int
    size: tuple[int, int]
    gflops: float
    times: list[float]
    ratio: float = 1.0

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)

    @property
    def rate(self) -> float:
        """Achieved GFLOP/s."""
        return self.gflops / self.seconds


def run_inference(args: argparse.Namespace) -> tuple[list[InferenceRow], dict]:
    h, w = args.photo
    photo = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(args.device)
    models = peers(args)
    rows, calls, checks = [], {}, {}
    for peer in models:
        logger.info("building %s", peer.name)
        peer.model = peer.build().to(args.device)
        size = peer.size(h, w)
        x = torch.rand(1, 3, *size, device=args.device)
        with torch.no_grad():
            peer.depth(x)  # fills caches (our query, the positional embedding) outside the count
            gflops = forward_flops(lambda peer=peer, x=x: peer.depth(x)) / 1e9
        if isinstance(peer.model, clip2depth.Clip2Depth):
            info = count_flops(peer.model, *size)["per_image"]
            checks[peer.name] = (gflops, info)
            if abs(gflops - info) > 1e-3 * info:
                raise SystemExit(f"error: {peer.name}: {gflops:.3f} GFLOPs counted here, {info:.3f} by count_flops")
        trained = 0 if "DepthCLIP" in peer.name else (
            trained_parameters(peer.model) if isinstance(peer.model, clip2depth.Clip2Depth)
            else total_parameters(peer.model)
        )  # fmt: skip
        rows.append(InferenceRow(peer.name, peer.ours, total_parameters(peer.model), trained, size, gflops, []))

        def call(peer: Peer = peer) -> None:
            with torch.no_grad():
                peer.photo(photo)

        calls[peer.name] = call
    logger.info("inference per %dx%d photo: %d round(s)", h, w, args.repeats)
    times = interleaved(calls, repeats=args.repeats, warmup=args.warmup, device=args.device, timer=clock(args)[0])
    ours = next(r for r in rows if r.ours)
    for row in rows:
        row.times = times[row.name]
    for row in rows:
        row.ratio = median_ratio(row.times, ours.times)
    profiles = {}
    da_small = rows[3]
    if ours.seconds > INFERENCE_GOAL * da_small.seconds and not args.quick:
        peer = models[0]
        profiles["inference"] = profile_table(lambda: calls[peer.name](), torch.device(args.device))
    frozen = sum(p.numel() * p.element_size() for p in models[0].model.parameters() if not p.requires_grad)
    return rows, {"flop_checks": checks, "profiles": profiles, "frozen_bytes": frozen}


@dataclass
class TrainRow:
    key: str
    trained: int
    crop: tuple[int, int]
    times: list[float]
    losses: list[float]
    gflops: float = 0.0  # forward and backward of one step, the same counter as inference
    memory: dict | None = None
    ratio: float = 1.0

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)


def run_training(args: argparse.Namespace) -> tuple[list[TrainRow], dict[str, str]]:
    cases = {key: train_case(key, args) for key in TRAIN_CASES}
    losses: dict[str, list[float]] = {key: [] for key in cases}

    def call(key: str) -> Callable[[], None]:
        return lambda: losses[key].append(cases[key].step())

    logger.info("training step, batch %d: %d round(s)", args.batch, args.repeats)
    times = interleaved({key: call(key) for key in cases}, repeats=args.repeats, warmup=args.warmup,
                        device=args.device, timer=clock(args)[0])
    rows = [TrainRow(key, c.trained, c.crop, times[key], losses[key],
                     forward_flops(c.step) / 1e9) for key, c in cases.items()]  # fmt: skip
    for row in rows:
        row.ratio = median_ratio(row.times, times["da_full"])
    profiles = {}
    if rows[0].ratio > TRAIN_TIME_GOAL and not args.quick:
        profiles["train"] = profile_table(cases["ours"].step, torch.device(args.device))
    return rows, profiles


# ------------------------------------------------------------------------------------------ report


def _m(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e4 else f"{n:,}"


def render(args: argparse.Namespace, rows: list[InferenceRow], extra: dict, train: list[TrainRow],
           train_profiles: dict[str, str], load: tuple[str, str]) -> str:
    """The BENCHMARKS.md section (between ``<!-- bench:peers -->`` markers)."""
    _, device = device_description(torch.device(args.device), False)
    h, w = args.photo
    ours, da_small = rows[0], rows[3]
    key, title = section(args)
    lines = [
        f"<!-- bench:{key} -->",
        f"## {title}",
        "",
        f"`benchmarks/peers.py` ({'--quick, ' if args.quick else ''}{'--tiny, ' if args.tiny else ''}"
        f"{datetime.date.today().isoformat()}): {device}; torch {torch.__version__}, transformers "
        f"{import_transformers().__version__}; random weights; median of {args.repeats} interleaved round(s) after "
        f"{args.warmup} warm-up round(s); times are {clock(args)[1]}. System load average (1 min) at start / end: "
        f"{load[0]} / {load[1]} on "
        f"{os.cpu_count()} logical CPUs. Its docstring describes each measurement.",
        "",
        "Trained: what training updates (ours: the mirror and decoder; DepthCLIP: nothing, it is zero-shot; Depth "
        "Anything V2: every weight when fine-tuned whole).",
        "",
        f"Inference, one {h}×{w} photo (batch 1) at each model's own processing size; GFLOPs from one counter "
        "(`FlopCounterMode`, attention counted) for every model:",
        "",
        "| model | parameters | trained | processing size | GFLOPs/image | s/photo | vs ours | GFLOP/s |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.name} | {_m(r.total)} | {_m(r.trained)} | {r.size[0]}×{r.size[1]} | {r.gflops:.4g} | "
                     f"{r.seconds:.4g} | {r.ratio:.2f} | {r.rate:.4g} |")  # fmt: skip
    for name, (counted, info) in extra["flop_checks"].items():
        lines += ["", f"Cross-check: {name} counts {counted:.2f} GFLOPs here and {info:.2f} in `count_flops` "
                      f"(`clip2depth info`)."]  # fmt: skip
    lines += [
        "",
        f"Training step at batch {args.batch} (forward, SILog loss, backward, AdamW), {args.crop[0]}×{args.crop[1]} "
        "crop (Depth Anything: nearest multiples of 14); time ratio to fine-tuning Depth Anything V2 Small whole, "
        "same round; memory in a fresh process per case "
        f"({'torch.cuda.max_memory_allocated' if args.device == 'cuda' else 'peak RSS'}, see the docstring):",
        "",
        "| case | trained | crop | GFLOPs/step | s/step | vs DA-V2-S fine-tuned | peak training memory MiB "
        "| vs DA-V2-S | step alone MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    da_memory = (train[1].memory or {}).get("process_bytes")
    for r in train:
        mem = r.memory or {}
        mem_ratio = f"{mem['process_bytes'] / da_memory:.2f}" if mem and da_memory else "n/a"
        lines.append(f"| {TRAIN_CASES[r.key]} | {_m(r.trained)} | {r.crop[0]}×{r.crop[1]} | {r.gflops:.4g} | "
                     f"{r.seconds:.4g} | {r.ratio:.2f} | {_mib(mem.get('process_bytes'))} | "
                     f"{mem_ratio} | {_mib(mem.get('step_bytes'))} |")  # fmt: skip
    lines += ["", "Goals for the paper model:", ""]
    inference_ratio = median_ratio(ours.times, da_small.times)
    train_ratio = train[0].ratio
    ours_mem = (train[0].memory or {}).get("process_bytes")
    memory_ratio = ours_mem / da_memory if ours_mem and da_memory else None
    gflop_ratio = ours.gflops / da_small.gflops

    def verdict(value: float | None, goal: float) -> str:
        return "n/a" if value is None else f"{value:.2f} ({'met' if value <= goal else 'missed'}, goal ≤ {goal})"

    lines += [
        f"- training step vs fine-tuning Depth Anything V2 Small: {verdict(train_ratio, TRAIN_TIME_GOAL)}",
        f"- peak training memory vs the same: {verdict(memory_ratio, TRAIN_MEMORY_GOAL)}",
        f"- inference per photo vs Depth Anything V2 Small: {verdict(inference_ratio, INFERENCE_GOAL)}",
    ]
    if train_ratio > TRAIN_TIME_GOAL:
        full = train[1]
        lines += [
            "",
            f"Why the training step misses: ours needs {train[0].gflops:.0f} GFLOPs per step (forward and backward "
            f"counted), {train[0].gflops / full.gflops:.2f} of fine-tuning Depth Anything V2 Small's "
            f"{full.gflops:.0f}, almost all of it the frozen encoder's forward pass, which no gradient skips; "
            f"this CPU ran ours at {train[0].gflops / train[0].seconds:.1f} GFLOP/s and Depth Anything at "
            f"{full.gflops / full.seconds:.1f} GFLOP/s (the profile below lists the operators).",
        ]
    if inference_ratio > INFERENCE_GOAL:
        lines += [
            "",
            f"Why inference misses: ours costs {ours.gflops:.1f} GFLOPs per photo, Depth Anything V2 Small "
            f"{da_small.gflops:.1f} ({gflop_ratio:.2f}×). This CPU ran ours at {ours.rate:.1f} GFLOP/s and Depth "
            f"Anything V2 Small at {da_small.rate:.1f} GFLOP/s; at ours' rate, {INFERENCE_GOAL} of Depth Anything's "
            f"time allows {INFERENCE_GOAL * da_small.seconds * ours.rate:.1f} GFLOPs. The nine ViT-B/16 blocks "
            "(width 768, 1,201 tokens at 480×640) are where the FLOPs are; fewer FLOPs need a smaller backbone "
            "(the MobileCLIP-S1 row) or a smaller processing size, not a faster kernel.",
        ]
    if memory_ratio is not None and memory_ratio > TRAIN_MEMORY_GOAL:
        lines += [
            "",
            f"Why memory misses: the frozen CLIP weights alone are {extra['frozen_bytes'] / 2**20:,.0f} MiB of fp32 "
            f"(image and text towers) resident for the whole run, against "
            f"{_mib(train[1].memory.get('process_bytes'))} MiB for all of fine-tuning Depth Anything V2 Small; "
            f"our step itself needs {_mib(train[0].memory.get('step_bytes'))} MiB above that. The weights alone are "
            f"{extra['frozen_bytes'] / da_memory:.2f} of that peak, so the goal leaves "
            f"{_mib(int(TRAIN_MEMORY_GOAL * da_memory - extra['frozen_bytes']))} MiB for the trained parts, their "
            "gradients and AdamW state, activations and workspaces. The text tower cannot go (the mirror trains "
            "through it every step); the image blocks after the deepest used one are resident but never run.",
        ]
    for title, table in list(extra["profiles"].items()) + list(train_profiles.items()):
        lines += ["", f"### Profile: ours, {title} (top operators by self CPU time)", "", "```", table.rstrip(), "```"]
    lines += [f"<!-- /bench:{key} -->", ""]
    return "\n".join(lines)


def section(args: argparse.Namespace) -> tuple[str, str]:
    """(key, title) of the report section: one for the CPU, one for CUDA."""
    if args.device == "cuda":
        return f"{SECTION_KEY}-cuda", "Against other depth models (CUDA)"
    return SECTION_KEY, "Against other depth models"


def readme_table(rows: list[InferenceRow], train: list[TrainRow], args: argparse.Namespace) -> str:
    h, w = args.photo
    lines = [
        README_BEGIN,
        f"| model | parameters | trained | GFLOPs per {h}×{w} photo | time vs clip2depth ViT-B/16 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.name} | {_m(r.total)} | {_m(r.trained)} | {r.gflops:.1f} | {r.ratio:.2f} |")
    ours, full, head = train
    lines += [
        "",
        f"One training step at batch {args.batch}: clip2depth takes {ours.ratio:.2f} of the time of fine-tuning "
        f"Depth Anything V2 Small whole; training only its head (encoder frozen) takes {head.ratio:.2f}. Figures, "
        "memory and method: [BENCHMARKS.md](BENCHMARKS.md#against-other-depth-models).",
        README_END,
    ]
    return "\n".join(lines)


def update_readme(path: Path, table: str) -> None:
    """Replace the table between the peers markers of ``path`` (which must have them)."""
    text = path.read_text()
    pattern = re.compile(rf"{re.escape(README_BEGIN)}.*?{re.escape(README_END)}", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"error: {path} has no {README_BEGIN} ... {README_END} markers to write the table between")
    atomic_write_bytes(path, pattern.sub(lambda _: table, text).encode())


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="clip2depth-vit-b-16", help="our model (default clip2depth-vit-b-16)")
    parser.add_argument("--mobileclip", default="clip2depth-mobileclip-s1", help=argparse.SUPPRESS)
    parser.add_argument("--photo", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="photo size for inference (default 480 640; --quick 240 320)")
    parser.add_argument("--crop", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="training crop (default 352 480; --quick 176 240)")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 4; --quick 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3; --quick 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1; --quick 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared CPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu (default) or cuda: a section of its own, GPU memory from torch.cuda")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, one round, no warm-up")
    parser.add_argument("--tiny", action="store_true", help="tiny models of every family (tests)")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report to update")
    parser.add_argument("--readme", type=Path, default=None, help="also write the short table into this README")
    parser.add_argument("--memory-case", choices=sorted(TRAIN_CASES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.preset = "tiny" if args.preset == "clip2depth-vit-b-16" else args.preset
        args.mobileclip = "tiny-mobileclip"
    if args.quick:
        args.repeats, args.warmup = 1, 0
    args.photo = tuple(args.photo or ((240, 320) if args.quick else (480, 640)))
    args.crop = tuple(args.crop or ((176, 240) if args.quick else (352, 480)))
    args.batch = args.batch or (2 if args.quick else 4)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.device == "cuda" and args.readme is not None:
        parser.error("--readme takes the CPU table; leave it out with --device cuda")
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1 or min(args.photo + args.crop) < 1:
        parser.error("--repeats, --batch and sizes must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_case is not None:
        with _quiet_random_weight_warnings():
            print(json.dumps(memory_case(args.memory_case, args)))
        return 0
    import_transformers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    load_start = _load_average()
    rows, extra = run_inference(args)
    train, train_profiles = run_training(args)
    memory = measure_memory(args)
    for row in train:
        row.memory = memory.get(row.key)
    text = render(args, rows, extra, train, train_profiles, (load_start, _load_average()))
    print(text)
    update_report(args.out, section(args)[0], text)
    logger.info("updated %s", args.out)
    if args.readme is not None:
        update_readme(args.readme, readme_table(rows, train, args))
        logger.info("updated %s", args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
