"""``create_model``: one entry point for presets, trained-model directories, hub repositories and the baseline.

The CLIP2Depth loading itself is :meth:`Clip2Depth.from_pretrained`; this module only adds the
zero-shot DepthCLIP baseline and the device choice, so it imports the model and nothing imports it back.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal, overload

import torch

from clip2depth.errors import ConfigError
from clip2depth.models.depthclip import DEPTHCLIP_RN50, DepthCLIP, build_depthclip
from clip2depth.models.model import Clip2Depth

logger = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(cpu|mps|cuda)(:\d+)?$")


def check_device_name(name: str) -> None:
    """Refuse a malformed device name (``gpu``, ``cuda:x``) without asking whether this machine has the device:
    for devices of other machines (Ray workers).

    Raises:
        ConfigError: naming the value and the form expected.
    """
    if name != "auto" and not _DEVICE.match(name):
        raise ConfigError(f"device={name} is not a device name: auto, cpu, cuda, cuda:N or mps", params=("device",))


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device names usable here: ``cpu``, then ``cuda`` / ``cuda:N`` per GPU, then ``mps`` on Apple silicon."""
    names = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["cuda"] + [f"cuda:{i}" for i in range(count)]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` if present, else Apple ``mps`` if present, else ``cpu``; any other name is checked.

    Raises:
        ConfigError: a malformed name (``gpu``, ``cuda:x``) or a device this machine does not have,
            naming the devices that are available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    available = available_devices()
    if name in available:
        return name
    what = "is not a device name" if not _DEVICE.match(name) else "is not available here"
    raise ConfigError(f"device={name} {what}; available: auto, {', '.join(available)}", params=("device",))


@overload
def create_model(
    name_or_dir: Literal["depthclip-rn50"],
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> DepthCLIP: ...


@overload
def create_model(
    name_or_dir: str | Path,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> Clip2Depth: ...


def create_model(
    name_or_dir: str | Path,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> Clip2Depth | DepthCLIP:
    """Build a CLIP2Depth model (see :meth:`Clip2Depth.from_pretrained`) or the ``depthclip-rn50`` baseline.

    Type checkers see the precise class: :class:`DepthCLIP` for the literal ``"depthclip-rn50"``,
    :class:`Clip2Depth` for every other name.

    Args:
        name_or_dir: a preset name (see :func:`clip2depth.list_models`), a directory written by
            ``save_pretrained``, ``hf-hub:org/name``, or ``depthclip-rn50`` (the zero-shot baseline,
            docs/method.md#baselines, built from its own config dataclass rather than a preset).
        pretrained: CLIP weights — an open_clip tag (``openai``), a local file or directory. For a
            preset, ``None`` builds random CLIP weights (with a warning). For a trained directory,
            ``None`` uses the weights recorded in its ``config.json``.
        device: where to put the model.
        **overrides: :class:`~clip2depth.models.config.ModelConfig` fields to change
            (:class:`~clip2depth.models.depthclip.DepthCLIPConfig` fields for the baseline).

    Returns:
        The model in eval mode; trained weights loaded when ``name_or_dir`` is a directory.
    """
    if str(name_or_dir) == DEPTHCLIP_RN50:
        return build_depthclip(pretrained=pretrained, device=device, **overrides)
    return Clip2Depth.from_pretrained(name_or_dir, pretrained=pretrained, device=device, **overrides)
