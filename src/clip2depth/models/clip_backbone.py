"""Building the frozen CLIP through open_clip (never a vendored copy).

open_clip decides the architecture from its JSON configs; this module adds the package's own tiny
config to open_clip's registry, picks the activation and preprocessing that match the weights
(OpenAI's CLIPs were trained with QuickGELU) and resolves where the weights come from: a pretrained
tag, a local safetensors file, an open_clip folder (``open_clip_config.json`` + weights), ``hf-hub:``,
or none (random weights, seeded).

Weights whose own open_clip config is known (a folder, ``hf-hub:``) set QuickGELU and mean/std from
that config; a bare file follows the preset's tag. Pickle-based files are refused, never unpickled.
When weights must be downloaded and the hub cannot be reached, one error says so at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from torch import nn

from clip2depth.errors import CheckpointError, ConfigError
from clip2depth.models.hub import HF_PREFIX, require_huggingface_hub
from clip2depth.models.text_towers import refuse_hugging_face_text

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


OPEN_CLIP_CONFIG = "open_clip_config.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_HOW_TO_GET_SAFETENSORS = (
    "pass an open_clip pretrained tag (e.g. --pretrained openai, which downloads safetensors weights) or "
    "the open_clip_model.safetensors file from the model's Hugging Face repository"
)


def _tag_config(model_name: str, tag: str | None) -> dict:
    if not tag:
        return {}
    return open_clip.get_pretrained_cfg(model_name, tag) or {}


def resolve_quick_gelu(model_name: str, tag: str | None, explicit: bool | None) -> bool:
    """QuickGELU must match the weights: explicit setting, else the tag's open_clip config."""
    if explicit is not None:
        return bool(explicit)
    return bool(_tag_config(model_name, tag).get("quick_gelu", False))


def check_weights_file(path: str | Path) -> None:
    """Refuse anything but a safetensors file, naming pickle-based checkpoints as such (never unpickled).

    Raises:
        CheckpointError: the file is pickle-based (``torch.save`` zip or raw pickle) or not safetensors.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise CheckpointError(f"cannot read CLIP weights {path}: {exc}") from exc
    if head[:4] == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise CheckpointError(
            f"{path} is a pickle-based checkpoint (torch.save/pickle format); clip2depth does not load "
            f"pickles, which can run code; {_HOW_TO_GET_SAFETENSORS}"
        )
    if len(head) < 9 or head[8:9] != b"{" or struct.unpack("<Q", head[:8])[0] > path.stat().st_size:
        raise CheckpointError(f"{path} is not a safetensors weights file; {_HOW_TO_GET_SAFETENSORS}")


def _read_folder_config(folder: Path) -> dict[str, Any]:
    """The ``open_clip_config.json`` of an open_clip weights folder; its weights must be safetensors."""
    config_path = folder / OPEN_CLIP_CONFIG
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{folder} is not an open_clip weights folder ({OPEN_CLIP_CONFIG} is missing); pass its "
            "safetensors file instead"
        ) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is unreadable or not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise CheckpointError(f"{config_path} has no 'model_cfg' object; it is not an open_clip config")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for p in sorted(folder.iterdir()) if p.suffix in _PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(
                f"{folder} holds only pickle-based weights ({', '.join(pickles)}), which clip2depth does not "
                f"load; {_HOW_TO_GET_SAFETENSORS}"
            )
        raise CheckpointError(f"{folder} holds no .safetensors weights next to its {OPEN_CLIP_CONFIG}")
    for path in weights:
        check_weights_file(path)
    return config


def _hub_config(repo: str) -> dict[str, Any]:
    """The ``open_clip_config.json`` of ``hf-hub:repo`` (downloaded into the Hub cache)."""
    hub = require_huggingface_hub(f"{HF_PREFIX}{repo}")
    try:
        config = json.loads(Path(hub.hf_hub_download(repo_id=repo, filename=OPEN_CLIP_CONFIG)).read_text())
    except Exception as exc:  # offline, missing repo, authentication: the hub raises many types
        raise CheckpointError(f"could not read {OPEN_CLIP_CONFIG} of {HF_PREFIX}{repo}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise CheckpointError(f"{OPEN_CLIP_CONFIG} of {HF_PREFIX}{repo} has no 'model_cfg' object")
    return config


def _is_cached(cfg: dict[str, Any]) -> bool:
    """Whether open_clip can build a pretrained tag's weights from local files alone."""
    if cfg.get("file"):
        return True
    url, hf_hub = cfg.get("url", ""), cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache  # open_clip's own dependency: always there

        repo, filename = os.path.split(hf_hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        names = [n[: -len(Path(n).suffix)] + ".safetensors" for n in names] + names
        if any(isinstance(try_to_load_from_cache(repo, n), str) for n in names):
            return True
    return bool(url) and Path(os.path.expanduser("~/.cache/clip"), os.path.basename(urlparse(url).path)).is_file()


def hub_reachable(host: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout_s`` (and downloads are allowed)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _require_download(what: str, host: str) -> None:
    """Fail at once, with how to pass local weights, when ``what`` must be downloaded but cannot be."""
    if not hub_reachable(host):
        raise CheckpointError(
            f"{what} must be downloaded but {host} cannot be reached (offline?); pass local CLIP weights "
            "instead: --pretrained /path/to/open_clip_model.safetensors (or an open_clip folder)"
        )


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
        weights: a pretrained tag (``openai``), a local ``.safetensors`` file, an open_clip folder
            (``open_clip_config.json`` + safetensors, open_clip's ``local-dir:`` schema),
            ``hf-hub:org/name``, or ``None`` for random weights.
        reference_tag: the tag whose preprocessing and activation apply when ``weights`` is a bare file
            or ``None`` (the preset's intended weights); a folder or ``hf-hub:`` uses its own config.

        quick_gelu: force the activation; ``None`` follows the tag.
        seed: seeds the random initialisation so that random CLIPs are reproducible.

    Raises:
        ConfigError: an architecture open_clip does not know, or one whose text tower is a Hugging Face model.
        CheckpointError: pickle-based or unreadable weights, or a download needed while offline.
    """
    register_clip_configs()
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise ConfigError(
            f"open_clip does not know the CLIP model {model_name!r}; see open_clip.list_models() "
            "for the available architectures"
        )
    refuse_hugging_face_text(model_name, model_cfg.get("text_cfg") or {})
    is_tag = bool(weights) and bool(_tag_config(model_name, weights))
    tag = weights if is_tag else reference_tag
    tag_cfg = _tag_config(model_name, tag)
    own_config: dict[str, Any] | None = None  # the weights' own open_clip config, when they have one

    name, pretrained = model_name, None
    if weights is None:
        logger.warning(
            "CLIP %s is built with RANDOM weights (no pretrained tag or file given): fine for tests "
            "and demos, meaningless for real depth. %s",
            model_name, _how_to_pass_weights(model_name, reference_tag),
        )
    elif is_tag:
        pretrained = weights
        if not _is_cached(tag_cfg):
            host = urlparse(_hub_endpoint() if tag_cfg.get("hf_hub") else tag_cfg.get("url", "")).hostname
            _require_download(f"CLIP weights {model_name} '{weights}'", host or "huggingface.co")
    elif weights.startswith(HF_PREFIX):
        repo = weights[len(HF_PREFIX):]
        own_config = _hub_config_or_offline(repo)
        name = weights
    elif os.path.isdir(weights):
        own_config = _read_folder_config(Path(weights))
        name = f"local-dir:{weights}"
    elif os.path.isfile(weights):
        check_weights_file(weights)
        pretrained = weights
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise CheckpointError(
            f"CLIP weights {weights!r} are neither a pretrained tag of {model_name} "
            f"(known: {', '.join(tags) or 'none'}) nor an existing file or directory"
        )

    if own_config is not None:
        refuse_hugging_face_text(weights, own_config["model_cfg"].get("text_cfg") or {})
        # open_clip builds these weights from their own config, QuickGELU included; it can only be forced on.
        use_quick_gelu = bool(own_config.get("model_cfg", {}).get("quick_gelu", False))
        if quick_gelu is not None and bool(quick_gelu) != use_quick_gelu:
            raise ConfigError(
                f"clip_quick_gelu={quick_gelu} contradicts the open_clip config of {weights} "
                f"(quick_gelu={use_quick_gelu}); remove the override"
            )
    else:
        use_quick_gelu = resolve_quick_gelu(model_name, tag, quick_gelu)

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

    if own_config is not None:
        preprocess = {**tag_cfg, **own_config.get("preprocess_cfg", {})}
    else:
        preprocess = {**dict(getattr(model.visual, "preprocess_cfg", {}) or {}), **tag_cfg}
    mean = tuple(float(v) for v in preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in preprocess.get("std", open_clip.OPENAI_DATASET_STD))
    tokenizer = name if own_config is not None else model_name
    return ClipBundle(model=model, mean=mean, std=std, weights=weights, tokenizer_name=tokenizer)


def _how_to_pass_weights(model_name: str, reference_tag: str | None) -> str:
    """Advice naming a pretrained tag ``model_name`` really has in open_clip (the preset's own first), if any."""
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if not tags:
        return f"open_clip has no pretrained tag for {model_name}: pass a local weights file."
    tag = reference_tag if reference_tag in tags else tags[0]
    return f"Pass pretrained={tag!r} (or a local file)."


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _hub_config_or_offline(repo: str) -> dict[str, Any]:
    """The hub repository's open_clip config, failing at once when it is not cached and the hub is away."""
    hub = require_huggingface_hub(f"{HF_PREFIX}{repo}")
    if not isinstance(hub.try_to_load_from_cache(repo, OPEN_CLIP_CONFIG), str):
        _require_download(f"CLIP weights {HF_PREFIX}{repo}", urlparse(_hub_endpoint()).hostname or "huggingface.co")
    return _hub_config(repo)
