"""Trained-model directories: ``config.json`` + ``model.safetensors`` (mirror + decoder only) + ``README.md``.

Loading is strict: the file's checksum, the CLIP it was made for, the set of tensor names and every
shape must match, or one :class:`CheckpointError` says what differs. Nothing here unpickles.

This module sits below the model class: it reads a model only through :class:`CheckpointModel`
(structural typing), so ``Clip2Depth.save_pretrained`` can import it without an import cycle.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from clip2depth.errors import CheckpointError
from clip2depth.io.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from clip2depth.io.digest import file_digest
from clip2depth.io.outputs import writable_folder
from clip2depth.models.card import CARD_NAME, Validation, model_card
from clip2depth.models.config import ModelConfig

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "clip2depth"
FORMAT_VERSION = 1


class CheckpointModel(Protocol):
    """What saving and loading need from a model (``Clip2Depth`` provides it)."""

    config: ModelConfig
    clip_weights: str | None

    def trainable_state_dict(self) -> dict[str, torch.Tensor]: ...

    def clip_record(self) -> dict[str, Any]: ...

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]: ...

    def named_buffers(self) -> Iterator[tuple[str, torch.Tensor]]: ...


def is_model_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def save_state(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """Atomically write ``state`` as safetensors; returns the file's sha256.

    Raises:
        OSError: the file cannot be written (a full disk: ``errno.ENOSPC``), whether safetensors or the
            filesystem says so; ``path`` is left as it was.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:  # safetensors reports I/O failures as "... (os error 28)", not OSError
            code = re.search(r"\(os error (\d+)\)", str(exc))
            number = int(code.group(1)) if code else errno.EIO
            raise OSError(number, os.strerror(number) if code else str(exc), str(path)) from exc
        digest = file_digest(tmp)
    return digest


def save_pretrained(
    model: CheckpointModel,
    directory: str | Path,
    extra: dict[str, Any] | None = None,
    *,
    recipe: dict[str, Any] | None = None,
    validation: Validation | None = None,
    repo_id: str | None = None,
) -> None:
    """Write a directory that :func:`clip2depth.create_model` loads, with its model card.

    The weights go first, then ``README.md`` (:func:`~clip2depth.models.card.model_card`, from ``recipe``,
    ``validation`` and ``repo_id`` where known), and the config (which records the weights' checksum)
    last, each atomically, so an interrupted save never leaves a config pointing at a different weights
    file unnoticed.
    """
    directory = writable_folder(directory, "model directory")
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "clip_model": model.config.clip_model}
    digest = save_state(model.trainable_state_dict(), directory / WEIGHTS_NAME, metadata)
    trainable = sum(p.numel() for _, p in model.named_parameters() if p.requires_grad)
    card = model_card(model.config, clip_weights=model.clip_weights, trainable_parameters=trainable, recipe=recipe,
                      validation=validation, repo_id=repo_id)
    atomic_write_bytes(directory / CARD_NAME, card.encode("utf-8"))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "clip": model.clip_record(),
        "weights_sha256": digest,
    }
    if extra:
        config.update(extra)
    atomic_write_json(directory / CONFIG_NAME, config)


def read_model_dir(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a trained-model directory, its envelope checked.

    Raises:
        CheckpointError: the file is missing, not JSON, not an object, not a clip2depth config, of a format
            version that is not an integer or newer than this package, or with a ``clip`` entry that is
            not an object or a ``weights_sha256`` that is not a string.
    """
    path = Path(directory) / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{directory} is not a clip2depth model directory: {CONFIG_NAME} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is unreadable or not valid JSON ({exc}); re-save the model") from exc
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} holds a JSON {_json_type(data)}, not the object save_pretrained writes; re-save the model"
        )
    if data.get("format") != FORMAT or "model" not in data:
        raise CheckpointError(f"{path} is not a clip2depth config (no 'format': '{FORMAT}' / 'model' entry)")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"{path}: 'format_version' is {version!r}, expected a whole number such as {FORMAT_VERSION}; "
            "fix the file or re-save the model"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {version}, newer than this clip2depth understands ({FORMAT_VERSION}); "
            "upgrade clip2depth"
        )
    for key, kind, expected in (("clip", dict, "an object"), ("weights_sha256", str, "a string")):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise CheckpointError(
                f"{path}: '{key}' is {data[key]!r}, expected {expected}; fix the file or re-save the model"
            )
    return data


def _json_type(value: Any) -> str:
    names = {list: "list", str: "string", bool: "true/false value", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def load_trained_state(model: CheckpointModel, directory: str | Path, expected_sha256: str | None) -> None:
    """Strictly load ``model.safetensors`` from ``directory`` into ``model``."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; a model directory needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({exc}); re-save the model") from exc

    made_for = metadata.get("clip_model")
    if made_for and made_for != model.config.clip_model:
        raise CheckpointError(
            f"{path} was trained for CLIP {made_for}, but the model being built uses "
            f"{model.config.clip_model}; load it without overriding clip_model"
        )
    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit this model: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} "
            "(was it saved with a different prompt_mode, blocks or decoder size?)"
        )
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(
            f"{path} was made for a different architecture or CLIP; shape mismatch in " + "; ".join(wrong[:3])
        )
    if expected_sha256 and file_digest(path) != expected_sha256:
        raise CheckpointError(
            f"{path} does not match the checksum recorded in {CONFIG_NAME}: the file was modified or "
            "truncated after saving; restore it or re-save the model"
        )
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for k, v in tensors.items():
            target = params.get(k, buffers.get(k))
            target.copy_(v.to(dtype=target.dtype, device=target.device))
