"""Checkpoints of a run: ``last/`` (model + resume state) and ``best/``; a failed write never costs the last one.

``last/`` and ``best/`` are model directories that :func:`clip2depth.create_model` loads; ``last/``
also holds the resume state: ``resume.safetensors`` (optimizer tensors, RNG states) and
``resume.json`` (position, optimizer scalars, and the sha256 of ``resume.safetensors``). A checkpoint
is written into ``<name>.partial`` first and swapped in by renames, so a failed write (full disk,
kill -9) leaves the previous one intact. Weights that are not finite are never swapped in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from clip2depth.errors import CheckpointError
from clip2depth.io.atomic import atomic_write_json
from clip2depth.io.digest import file_digest
from clip2depth.models.card import Validation
from clip2depth.models.checkpoint import read_model_dir, save_pretrained, save_state
from clip2depth.models.model import Clip2Depth

RESUME_TENSORS = "resume.safetensors"
RESUME_JSON = "resume.json"


@dataclass
class TrainState:
    """The run's position and counters, saved in ``resume.json``."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_abs_rel: float = math.inf
    best_step: int = -1
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    skipped_samples: int = 0
    elapsed_s: float = 0.0


def weights_are_finite(model: Clip2Depth) -> bool:
    """True when every trained tensor of ``model`` is free of nan and inf."""
    return all(bool(torch.isfinite(t).all()) for t in model.trainable_state_dict().values())


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors


def _write(directory: Path, write: Any) -> None:
    """Run ``write(partial_dir)``, then swap the partial directory in as ``directory``."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        write(partial)
        _swap_in(partial, directory)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise CheckpointError(f"cannot write the checkpoint {directory} ({exc}); the previous one is intact: "
                              f"free disk space, then continue with --resume {directory.parent}") from exc


def save_last(run_dir: Path, model: Clip2Depth, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
              state: TrainState, *, world: int, global_batch: int, recipe: dict[str, Any],
              validation: Validation | None) -> None:
    """Write ``run_dir/last`` (model, its card with ``recipe`` and the latest ``validation``, resume state)."""
    opt = optimizer.state_dict()
    tensors = _rng_tensors()
    scalars: dict[str, dict[str, float]] = {}
    for idx, st in opt["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"opt.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = float(value)

    def write(partial: Path) -> None:
        save_pretrained(model, partial, recipe=recipe, validation=validation)
        digest = save_state(tensors, partial / RESUME_TENSORS)
        atomic_write_json(partial / RESUME_JSON, {
            "state": asdict(state),
            "param_groups": opt["param_groups"],
            "optimizer_scalars": scalars,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "world_size": world,
            "global_batch": global_batch,
            "resume_sha256": digest,
        })

    _write(run_dir / "last", write)


def save_best(run_dir: Path, model: Clip2Depth, state: TrainState, *, recipe: dict[str, Any],
              validation: Validation) -> None:
    """Write ``run_dir/best`` (the model, with its step and validation AbsRel in ``config.json`` and the
    ``recipe`` and ``validation`` that made it best in its card)."""
    _write(run_dir / "best", lambda partial: save_pretrained(
        model, partial, extra={"best": {"step": state.step, "abs_rel": state.best_abs_rel}}, recipe=recipe,
        validation=validation))


def _swap_in(partial: Path, final: Path) -> None:
    """Replace directory ``final`` by ``partial`` with renames only (``final.old`` bridges the gap)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def find_last(run_dir: Path) -> Path | None:
    """``run_dir/last``, or ``last.old`` if a crash hit between the two renames of a swap; None if neither."""
    final = run_dir / "last"
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / RESUME_JSON).is_file():
            read_model_dir(candidate)
            return candidate
    return None


@dataclass
class ResumeState:
    """What :func:`read_resume` found in a ``last/`` folder."""

    state: TrainState
    optimizer: dict[str, Any]  # for ``optimizer.load_state_dict`` (tensors on CPU)
    scaler: dict[str, Any] | None
    rng: dict[str, torch.Tensor]


def read_resume(last: Path, *, global_batch: int) -> ResumeState:
    """Read and check the resume state in ``last`` (checksum, structure, the run's global batch).

    Raises:
        CheckpointError: missing, truncated, modified or malformed files, or another global batch size.
    """
    path_json, path_tensors = last / RESUME_JSON, last / RESUME_TENSORS
    bad = (f"cannot resume from {last}: {{}}; restore the folder from a backup, or start the run again "
           "with --overwrite")
    try:
        meta = json.loads(path_json.read_text())
        if file_digest(path_tensors) != meta["resume_sha256"]:
            raise CheckpointError(bad.format(f"{RESUME_TENSORS} does not match the checksum in {RESUME_JSON} "
                                             "(modified or truncated)"))
        tensors = load_file(str(path_tensors))
        state = TrainState(**meta["state"])
        for f in dataclasses.fields(TrainState):
            if not isinstance(getattr(state, f.name), int | float) or isinstance(getattr(state, f.name), bool):
                raise TypeError(f"state.{f.name} is not a number")
        if not isinstance(meta["param_groups"], list) or not isinstance(meta["optimizer_scalars"], dict):
            raise TypeError("param_groups / optimizer_scalars have the wrong type")
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = value
        for idx, scalars in meta["optimizer_scalars"].items():
            for name, value in scalars.items():
                opt_state.setdefault(int(idx), {})[name] = torch.tensor(float(value))
        rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
        if "rng.torch" not in rng:
            raise KeyError("rng.torch")
        saved_batch = meta["global_batch"]
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as exc:
        raise CheckpointError(bad.format(f"its resume state is unreadable or incomplete ({type(exc).__name__}: "
                                         f"{exc})")) from None
    if saved_batch != global_batch:
        raise CheckpointError(f"{last} was trained with global batch {saved_batch}, this run uses "
                              f"{global_batch}; resume with the same train.batch_size")
    return ResumeState(state=state, optimizer={"state": opt_state, "param_groups": meta["param_groups"]},
                       scaler=meta.get("scaler"), rng=rng)


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    """Put back the torch (and, with the same GPU count, CUDA) random states saved by :func:`save_last`."""
    torch.set_rng_state(rng["rng.torch"])
    if torch.cuda.is_available():
        cuda_states = [rng[f"rng.cuda.{i}"] for i in range(sum(k.startswith("rng.cuda.") for k in rng))]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
