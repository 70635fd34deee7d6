"""The flags commands share, declared once: the same name, type, default, choices and help in every command.

A command declares each shared flag with an ``add_*`` function here and only its own flags by hand
(``tests/cli/test_cli_core.py`` checks both). Numbers and sizes go through the argparse types here, so a
bad value is one ``error:`` line naming the flag before anything loads. A flag's ``dest`` is the name of
the library parameter it sets (``--fov`` → ``fov_deg``): a library error about ``fov_deg=200`` reads
``--fov 200`` on the command line (:func:`clip2depth.cli.main.name_flags`).

``-q`` (declared in :mod:`clip2depth.cli.main`, read through :func:`clip2depth.io.progress.progress_enabled`)
is the one progress switch of every command.
"""

from __future__ import annotations

import argparse
import math
import os
import weakref
from collections.abc import Callable
from typing import Any

from clip2depth.data.base import LIST_FORMAT
from clip2depth.data.registry import DATASETS
from clip2depth.data.synthetic import DEFAULT_SIZE
from clip2depth.inference.steps import DEFAULT_BATCH_SIZE
from clip2depth.models.infer import PRECISIONS

Container = argparse._ActionsContainer
"""A parser, an argument group or a mutually exclusive group."""

_FROM_KIT: weakref.WeakSet[argparse.Action] = weakref.WeakSet()


def from_kit(action: argparse.Action) -> bool:
    """Whether ``action`` was declared by this module (tests check that no command declares a shared flag)."""
    return action in _FROM_KIT


def _add(container: Container, *flags: str, **kwargs: Any) -> argparse.Action:
    action = container.add_argument(*flags, **kwargs)
    _FROM_KIT.add(action)
    return action


# --------------------------------------------------------------------------------------------- types


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some of its own messages
    return parse


positive_int = _checked(int, lambda v: v >= 1, "a whole number of 1 or more")
non_negative_int = _checked(int, lambda v: v >= 0, "a whole number of 0 or more")
positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number above 0")
non_negative_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number of 0 or more")
fraction = _checked(float, lambda v: 0 < v <= 1, "a number above 0 and at most 1")
port = _checked(int, lambda v: 0 < v < 65536, "a TCP port (1-65535)")


class BoxAction(argparse.Action):
    """``TOP LEFT H W`` (``type=non_negative_int``, ``nargs=4``) with a height and width of at least 1, as a tuple."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        if values[2] < 1 or values[3] < 1:
            raise argparse.ArgumentError(self, f"H and W must be at least 1, got {values[2]} {values[3]}")
        setattr(namespace, self.dest, tuple(values))


SIZE: dict[str, Any] = {"nargs": 2, "type": positive_int, "metavar": ("H", "W")}
"""``add_argument`` keywords of a size ``H W`` of positive integers (parsed as a list of two ints)."""


def _default(clause: str | None, value: Any, required: bool = False) -> str:
    if required:
        return "required"
    shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return f"default: {clause if clause is not None else shown}"


# --------------------------------------------------------------------------------------------- model and device

_MODEL_HELP = "preset name, trained-model directory (a run's best/ or last/) or hf-hub:ORG/NAME[@REVISION]"


def add_model(container: Container, *, default: str | None = None, unset: str | None = None) -> None:
    """``--model``: required unless a ``default`` is given or ``unset`` says what an omitted one means."""
    required = default is None and unset is None
    _add(container, "--model", default=default, required=required, metavar="MODEL",
         help=f"{_MODEL_HELP} ({_default(unset, default, required)})")  # fmt: skip


def add_pretrained(container: Container) -> None:
    _add(container, "--pretrained", default=None, metavar="WEIGHTS",
         help="CLIP weights: an open_clip tag (openai), a .safetensors file, an open_clip folder or "
              "hf-hub:ORG/NAME (default: those the model directory or recipe records; random weights for a "
              "bare preset). train, demo and ablate also take 'none': random weights")  # fmt: skip


def add_device(container: Container) -> None:
    _add(container, "--device", default="auto",
         help="cpu, cuda, cuda:N, mps or auto (default: cuda, else mps, else cpu)")


def add_precision(container: Container) -> None:
    _add(container, "--precision", default="fp32", choices=PRECISIONS,
         help="fp32 (default), or bf16 / fp16 autocast; depth moves by about 0.02%%; speed depends on the "
              "hardware and batch size (see docs/predict.md)")  # fmt: skip


def add_runtime(container: Container) -> None:
    _add(container, "--runtime", default="torch", choices=("torch", "onnx"),
         help="torch (default), or onnx: export the model once and predict with ONNX Runtime on the CPU (fp32; "
              "pip install 'clip2depth[onnx]'); BENCHMARKS.md 'Speed-ups tried' compares them")  # fmt: skip



OWN_SCALE = "the model's own scale: the pixel count of the size it was trained at, the image's aspect kept"
"""What an omitted ``--max-side`` / ``--size`` / ``--native`` means where a command predicts users' images."""


def add_max_side(container: Container, *, unset: str) -> None:
    """``--max-side``; ``unset`` says what an omitted one means."""
    _add(container, "--max-side", type=positive_int, default=None, metavar="PIXELS",
         help="predict images whose longest side exceeds this many pixels downscaled to it (smaller ones at "
              f"their own size), depth back at full size ({_default(unset, None)})")  # fmt: skip


def add_size(container: Container) -> None:
    """``--size H W``: the network input size (rounded to the patch size)."""
    _add(container, "--size", **SIZE, default=None,
         help="network input size H W, each rounded to a multiple of the model's patch size "
              f"({_default(OWN_SCALE, None)})")  # fmt: skip


def add_scale(container: Container) -> None:
    """``--max-side``, ``--size`` and ``--native``, at most one: the size users' images are predicted at.

    Without any, images are predicted at the model's own scale (:func:`clip2depth.models.infer.network_size`).
    """
    group = container.add_mutually_exclusive_group()
    add_max_side(group, unset=OWN_SCALE)
    add_size(group)
    _add(group, "--native", action="store_true",
         help="predict at each image's own size (rounded to the patch size), not at the model's scale")


def add_batch_size(container: Container) -> None:
    _add(container, "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
         help=f"images (or video frames) of one size predicted together (default {DEFAULT_BATCH_SIZE})")


def add_flip_tta(container: Container) -> None:
    _add(container, "--flip-tta", action="store_true", help="average with the horizontally flipped prediction")


# --------------------------------------------------------------------------------------------- outputs and runs


def add_out(container: Container, *, default: str | None = None, unset: str | None = None) -> None:
    """``--out``: required unless a ``default`` is given or ``unset`` says what an omitted one means."""
    required = default is None and unset is None
    _add(container, "--out", default=default, required=required, metavar="DIR",
         help=f"output folder, created when missing ({_default(unset, default, required)})")


_OVERWRITE_HELP = ("replace what an earlier run of this command left in its output folder or file; without it, "
                  "such outputs are refused rather than replaced")  # fmt: skip


def add_overwrite(container: Container) -> None:
    _add(container, "--overwrite", action="store_true", help=_OVERWRITE_HELP)


def add_resume_or_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--resume`` (continue in ``--out``) or ``--overwrite``, never both."""
    group = parser.add_mutually_exclusive_group()
    _add(group, "--resume", action="store_true", help="continue the interrupted run in --out (finished parts are kept)")
    add_overwrite(group)


def add_resume_run_or_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--resume RUN_DIR`` (a training run folder, which replaces ``--out``) or ``--overwrite``, never both."""
    group = parser.add_mutually_exclusive_group()
    _add(group, "--resume", default=None, metavar="RUN_DIR",
         help="continue an interrupted run exactly, from RUN_DIR/config.yaml and RUN_DIR/last")
    add_overwrite(group)


def add_skip_existing_or_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--skip-existing`` or ``--overwrite``, never both."""
    group = parser.add_mutually_exclusive_group()
    _add(group, "--skip-existing", action="store_true",
         help="skip inputs whose outputs all exist already (continue an interrupted run)")
    add_overwrite(group)


# --------------------------------------------------------------------------------------------- recipes


def add_recipe(container: Container) -> None:
    _add(container, "--recipe", default=None,
         help="built-in recipe (nyu, kitti, folder, synthetic) or a YAML file (default: synthetic)")


def add_set(container: Container) -> None:
    _add(container, "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
         help="set a recipe field, repeatable: SECTION.KEY=VALUE (sections data, augment, eval, train; e.g. "
              "train.max_steps=2000) or model_overrides.FIELD=VALUE; checked before anything is built")  # fmt: skip


# --------------------------------------------------------------------------------------------- data


def add_data_root(container: Container, *, unset: str) -> None:
    _add(container, "--data-root", default=None, metavar="DIR",
         help=f"dataset root; for nyu-mat the .mat file or its folder, for folder a root holding <split>.txt "
              f"({_default(unset, None)})")  # fmt: skip


def add_gt_root(container: Container, *, unset: str) -> None:
    _add(container, "--gt-root", default=None, metavar="DIR",
         help=f"KITTI annotated ground-truth depth folder ({_default(unset, None)})")


def add_split(container: Container, *, default: str | None = None, unset: str | None = None) -> None:
    _add(container, "--split", default=default, help=f"dataset split to evaluate ({_default(unset, default)})")


def add_dataset_parts(container: Container) -> None:
    """``--root`` and ``--only``: a downloaded dataset's folder and which of its parts to fetch or check."""
    _add(container, "--root", required=True, metavar="DIR", help="dataset folder (the --data-root of train and eval)")
    _add(container, "--only", choices=["train", "test"], default=None,
         help="one part only; test is what evaluation needs (default: both)")


def add_split_lists(container: Container) -> None:
    """``--train-list`` and ``--test-list``: split lists instead of the packaged ones."""
    _add(container, "--train-list", default=None, metavar="FILE", help="train split list instead of the packaged one")
    _add(container, "--test-list", default=None, metavar="FILE",
         help="test split list instead of the packaged one (KITTI: also picks the drives to fetch)")


def add_download_source(container: Container) -> None:
    """``--mirror`` and ``--nyu-splits``: where downloaded files come from and how NYU's test split is cut."""
    _add(container, "--mirror", default=None, metavar="BASE_URL",
         help="fetch every file from BASE_URL/<its path on the original host> instead")
    _add(container, "--nyu-splits", default=None, metavar="FILE",
         help="NYU: official splits.mat to convert the test split with (default: the packaged copy)")


def add_dry_run(container: Container) -> None:
    _add(container, "--dry-run", action="store_true",
         help="print the plan (files, sizes; reproduce: a GPU-hour estimate) and do nothing")


def add_depth_scale(container: Container) -> None:
    _add(container, "--depth-scale", type=positive_float, default=1000.0, metavar="UNITS",
         help="16-bit depth PNG units per metre, for the PNGs this command writes and for ground-truth PNGs "
              "that do not fix their own scale (default 1000: millimetres; KITTI uses 256)")  # fmt: skip


def add_depth_range(container: Container, *, min_default: float | None, min_unset: str | None = None,
                    max_unset: str) -> None:  # fmt: skip
    """``--min-depth`` and ``--max-depth``: the valid range of the metrics."""
    _add(container, "--min-depth", type=non_negative_float, default=min_default, metavar="METRES",
         help=f"smallest valid depth: predictions are clamped to it, ground truth below it is ignored "
              f"({_default(min_unset, min_default)})")  # fmt: skip
    _add(container, "--max-depth", type=positive_float, default=None, metavar="METRES",
         help=f"largest valid depth: predictions are clamped to it, ground truth above it is ignored "
              f"({_default(max_unset, None)})")  # fmt: skip


def add_synthetic(container: Container, *, default: int | None = None, unset: str | None = None) -> None:
    """``--synthetic N``: built-in rendered scenes instead of files."""
    _add(container, "--synthetic", type=positive_int, default=default, metavar="N",
         help=f"use N built-in synthetic scenes, rendered with exact depth, instead of files "
              f"({_default(unset, default)})")  # fmt: skip


def add_synthetic_scene(container: Container) -> None:
    """``--synthetic-size`` and ``--seed`` of the synthetic scenes."""
    _add(container, "--synthetic-size", **SIZE, default=DEFAULT_SIZE,
         help=f"size of the synthetic scenes (default {DEFAULT_SIZE[0]} {DEFAULT_SIZE[1]})")
    _add(container, "--seed", type=non_negative_int, default=0, help="seed of the synthetic scenes (default 0)")


def add_limit(container: Container) -> None:
    _add(container, "--limit", type=positive_int, default=None, metavar="N",
         help="evaluate only the first N items (default: all)")


def add_spatial(container: Container) -> None:
    _add(container, "--spatial", action="store_true",
         help="also report depth-boundary accuracy and completeness (dbe_acc, dbe_comp) and the patch-grid "
              "artefact score (patch_artifact); see docs/analyses.md")  # fmt: skip


def add_dataset(container: Container) -> None:
    """The dataset flags of a command that evaluates on a registered dataset; see :func:`dataset_kwargs`."""
    _add(container, "--dataset", default="synthetic", choices=list(DATASETS),
         help="dataset (default: synthetic, needs no files); "
              + "; ".join(spec.describe() for spec in DATASETS.values()))  # fmt: skip
    add_data_root(container, unset="the dataset's environment variable, listed under --dataset")
    add_gt_root(container, unset="$CLIP2DEPTH_KITTI_GT_ROOT")
    _add(container, "--list-file", default=None, metavar="FILE",
         help=f"list file overriding the packaged split list (required for folder without a root): {LIST_FORMAT}; "
              "paths are relative to the root or the list's folder. Malformed lines are reported with their "
              "numbers and left out")  # fmt: skip
    add_split(container, default="test")
    add_depth_scale(container)
    _add(container, "--filled", action="store_true", help="nyu-mat: use the filled 'depths' instead of rawDepths")
    add_synthetic(container, unset="the split's own size; --dataset synthetic only")
    add_synthetic_scene(container)
    _add(container, "--num-workers", type=non_negative_int, default=min(4, os.cpu_count() or 1), metavar="N",
         help="data loader worker processes (0: load in the main process; default: 4, or the CPU count if lower)")


def dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`clip2depth.data.build_dataset` from the flags of :func:`add_dataset`."""
    if args.dataset == "synthetic":
        kw: dict[str, Any] = {"seed": args.seed, "size": tuple(args.synthetic_size)}
        if args.synthetic is not None:
            kw["length"] = args.synthetic
        return kw
    kw = {}
    if args.list_file:
        kw["list_file"] = args.list_file
    if args.dataset == "kitti" and args.gt_root:
        kw["gt_root"] = args.gt_root
    if args.dataset == "folder":
        kw["depth_scale"] = args.depth_scale
    if args.dataset == "nyu-mat":
        kw["filled"] = args.filled
    return kw

