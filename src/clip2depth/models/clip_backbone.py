"""Building the frozen CLIP through open_clip (never a vendored copy).

open_clip decides the architecture from its JSON configs; this module adds the package's own tiny
config to open_clip's registry, picks the activation that matches the weights (OpenAI's CLIPs were
trained with QuickGELU) and resolves where the weights come from: a pretrained tag, a local file or
``local-dir:`` folder, or none (random weights, seeded).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import open_clip
import torch
from torch import nn

from clip2depth.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

_REGISTERED = False


def register_clip_configs() -> None:
    """Make the package's CLIP configs (e.g. ``clip2depth-tiny-vit``) known to open_clip."""
    global _REGISTERED
    if not _REGISTERED:
        with resources.as_file(resources.files("clip2depth.models") / "clip_configs") as path:
            open_clip.add_model_config(Path(path))
        _REGISTERED = True


@dataclass
class ClipBundle:
    """A built CLIP and what must be known about the weights it holds."""

    model: nn.Module  # open_clip CLIP (visual + text towers)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str | None  # tag or path the weights came from; None = random
    tokenizer_name: str


def _tag_config(model_name: str, tag: str | None) -> dict:
    if not tag:
        return {}
    return open_clip.get_pretrained_cfg(model_name, tag) or {}


def resolve_quick_gelu(model_name: str, tag: str | None, explicit: bool | None) -> bool:
    """QuickGELU must match the weights: explicit setting, else the tag's open_clip config."""
    if explicit is not None:
        return bool(explicit)
    return bool(_tag_config(model_name, tag).get("quick_gelu", False))


def build_clip(
    model_name: str,
    *,
    weights: str | None,
    reference_tag: str | None,
    quick_gelu: bool | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> ClipBundle:
    """Build an open_clip CLIP.

    Args:
        model_name: open_clip architecture name (``ViT-B-16``, ``RN50``, ``clip2depth-tiny-vit``).
        weights: a pretrained tag (``openai``), a local weights file, a directory (read as open_clip's
            ``local-dir:`` schema), ``hf-hub:org/name``, or ``None`` for random weights.
        reference_tag: the tag whose preprocessing and activation apply when ``weights`` is a file or
            ``None`` (the preset's intended weights).
        quick_gelu: force the activation; ``None`` follows the tag.
        seed: seeds the random initialisation so that random CLIPs are reproducible.
    """
    register_clip_configs()
    if open_clip.get_model_config(model_name) is None:
        raise ConfigError(
            f"open_clip does not know the CLIP model {model_name!r}; see open_clip.list_models() "
            "for the available architectures"
        )
    is_tag = bool(weights) and bool(_tag_config(model_name, weights))
    tag = weights if is_tag else reference_tag
    use_quick_gelu = resolve_quick_gelu(model_name, tag, quick_gelu)
    tag_cfg = _tag_config(model_name, tag)

    name, pretrained = model_name, None
    if weights is None:
        logger.warning(
            "CLIP %s is built with RANDOM weights (no pretrained tag or file given): fine for tests "
            "and demos, meaningless for real depth. Pass pretrained='openai' (or a local file).",
            model_name,
        )
    elif is_tag:
        pretrained = weights
    elif weights.startswith("hf-hub:"):
        name = weights
    elif os.path.isdir(weights):
        name = f"local-dir:{weights}"
    elif os.path.isfile(weights):
        pretrained = weights
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise CheckpointError(
            f"CLIP weights {weights!r} are neither a pretrained tag of {model_name} "
            f"(known: {', '.join(tags) or 'none'}) nor an existing file or directory"
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = open_clip.create_model(
                name,
                pretrained=pretrained,
                device=device,
                force_quick_gelu=use_quick_gelu,
                weights_only=True,
            )
        except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
            raise CheckpointError(f"could not build CLIP {model_name} with weights {weights!r}: {exc}") from exc
    model.eval()

    preprocess = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    mean = tuple(tag_cfg.get("mean", preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)))
    std = tuple(tag_cfg.get("std", preprocess.get("std", open_clip.OPENAI_DATASET_STD)))
    return ClipBundle(model=model, mean=mean, std=std, weights=weights, tokenizer_name=model_name)
