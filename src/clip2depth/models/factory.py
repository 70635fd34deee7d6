"""``create_model``: one entry point for presets, trained-model directories and hub repositories."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from clip2depth.errors import ConfigError
from clip2depth.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, is_model_dir, load_trained_state, read_model_dir
from clip2depth.models.clip2depth import Clip2Depth
from clip2depth.models.clip_backbone import ClipBundle, build_clip
from clip2depth.models.config import ModelConfig, load_preset
from clip2depth.models.decoder import FiLMDepthDecoder, default_head_strides
from clip2depth.models.depthclip import DepthCLIP, build_depthclip
from clip2depth.models.image_encoder import FrozenImageEncoder
from clip2depth.models.prompt_encoder import PromptEncoder
from clip2depth.models.timm_image_encoder import TimmImageEncoder, is_timm_tower

logger = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"
# Zero-shot baselines (docs/method.md#baselines): built from their own config dataclass, not a preset JSON.
BASELINES = {"depthclip-rn50": build_depthclip}


def build_model(config: ModelConfig, *, clip_weights: str | None, device: str | torch.device = "cpu") -> Clip2Depth:
    """Assemble a fresh (untrained mirror and decoder) model for ``config``."""
    bundle = build_clip(
        config.clip_model,
        weights=clip_weights,
        reference_tag=config.clip_pretrained,
        quick_gelu=config.clip_quick_gelu,
        seed=config.clip_init_seed,
    )
    return assemble_model(config, bundle, device=device)


def assemble_model(config: ModelConfig, bundle: ClipBundle, *, device: str | torch.device = "cpu") -> Clip2Depth:
    """A fresh model for ``config`` around an already built CLIP (its image tower decides the encoder)."""
    clip = bundle.model
    encoder_type = TimmImageEncoder if is_timm_tower(clip.visual) else FrozenImageEncoder
    image_encoder = encoder_type(
        clip.visual, blocks=config.blocks, mean=bundle.mean, std=bundle.std,
        trainable_blocks=config.unfreeze_image_blocks,
    )
    grid_stride = config.decoder_stride or max(image_encoder.strides)
    if image_encoder.patch_size % grid_stride:
        raise ConfigError(
            f"decoder_stride {grid_stride} must divide the image encoder's input multiple {image_encoder.patch_size}"
        )
    prompt_encoder = PromptEncoder(
        clip, mode=config.prompt_mode, mirror_length=config.mirror_length,
        mirror_init_std=config.mirror_init_std, prompt=config.prompt, tokenizer_name=bundle.tokenizer_name,
    )
    decoder = FiLMDepthDecoder(
        in_widths=image_encoder.widths,
        level_strides=image_encoder.strides,
        grid_stride=grid_stride,
        query_dim=0 if config.prompt_mode == "none" else prompt_encoder.query_dim,
        reduce_dim=config.reduce_dim,
        heads=config.decoder_heads,
        ffn_dim=config.decoder_ffn_dim,
        layers_per_level=config.decoder_layers_per_level,
        dropout=config.decoder_dropout,
        head_strides=config.head_strides or default_head_strides(grid_stride),
        head_type=config.head_type,
        max_depth=config.max_depth,
    )
    if config.prompt_mode == "none":
        prompt_encoder.requires_grad_(False)
    model = Clip2Depth(
        config=config, image_encoder=image_encoder, prompt_encoder=prompt_encoder, decoder=decoder,
        clip_weights=bundle.weights,
    )
    return model.to(device).eval()


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; a CUDA device asked for where there is none → error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu")
    return name


def _resolve_hub(name: str) -> str:
    """Download ``hf-hub:org/name[@revision]`` (config + weights only) and return the local folder."""
    repo, _, revision = name[len(HF_PREFIX):].partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ConfigError(f"{name} needs huggingface_hub: pip install 'clip2depth[hub]'") from exc
    try:
        path = snapshot_download(repo_id=repo, revision=revision or None, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME])
    except Exception as exc:  # the hub raises many types (offline, missing repo, auth)
        raise ConfigError(f"could not fetch {name} from the Hugging Face Hub: {exc}") from exc
    if not is_model_dir(path):
        raise ConfigError(f"{name} has no {CONFIG_NAME}: it is not a clip2depth model repository")
    return path


def create_model(
    name_or_dir: str | Path,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> Clip2Depth | DepthCLIP:
    """Build a CLIP2Depth model (or the ``depthclip-rn50`` zero-shot baseline).

    Args:
        name_or_dir: a preset name (see :func:`clip2depth.list_models`), a directory written by
            ``save_pretrained``, or ``hf-hub:org/name``.
        pretrained: CLIP weights — an open_clip tag (``openai``), a local file or directory. For a
            preset, ``None`` builds random CLIP weights (with a warning). For a trained directory,
            ``None`` uses the weights recorded in its ``config.json``.
        device: where to put the model.
        **overrides: :class:`~clip2depth.models.config.ModelConfig` fields to change.

    Returns:
        The model in eval mode; trained weights loaded when ``name_or_dir`` is a directory.
    """
    name = str(name_or_dir)
    if name in BASELINES:
        return BASELINES[name](pretrained=pretrained, device=device, **overrides)
    if name.startswith(HF_PREFIX):
        name = _resolve_hub(name)
    if is_model_dir(name):
        data = read_model_dir(name)
        config = ModelConfig.from_dict(data["model"], source=f"{name}/config.json")
        if overrides:
            config = config.replace(**overrides)
        weights = pretrained if pretrained is not None else data.get("clip", {}).get("weights")
        model = build_model(config, clip_weights=weights, device=device)
        load_trained_state(model, name, data.get("weights_sha256"))
        return model.eval()
    if Path(name).exists():
        raise ConfigError(
            f"{name} exists but is not a clip2depth model directory (it has no config.json); "
            "pass a preset name or a directory written by save_pretrained"
        )
    config = load_preset(name)
    if overrides:
        config = config.replace(**overrides)
    return build_model(config, clip_weights=pretrained, device=device)
