"""Model presets: JSON files in ``clip2depth/presets`` read into a typed :class:`ModelConfig`.

Every architecture choice the paper leaves open (listed as our choices in docs/method.md) is a field
here, so that better information changes a JSON file, not the code.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from clip2depth.errors import ConfigError
from clip2depth.typed import TypedConfig, invalid, setting

PromptMode = Literal["mirror", "language", "concat", "none"]
PROMPT_MODES: tuple[str, ...] = typing.get_args(PromptMode)
PAPER_PROMPT = "How far is this location from the camera?"


@dataclass
class ModelConfig(TypedConfig):
    """Everything needed to rebuild a CLIP2Depth model (CLIP choice, mirror, decoder)."""

    name: str = "custom"
    # Frozen CLIP (open_clip): architecture name, and the pretrained tag whose preprocessing
    # (mean/std) and activation (QuickGELU) the built CLIP must match.
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    clip_quick_gelu: bool | None = None  # None: follow the pretrained tag's open_clip config
    clip_init_seed: int = 0  # seeds random CLIP weights so a random-CLIP checkpoint reloads exactly
    # Image features: increasing 1-based block numbers whose patch tokens feed the decoder (for a
    # hierarchical timm tower such as ConvNeXt or FastViT: stage numbers, as in timm's feature_info).
    blocks: list[int] = setting(factory=lambda: [3, 6, 9], ge=1)
    unfreeze_image_blocks: int = setting(0, ge=0)  # >0 only for the "fine-tuning" ablation: last k used blocks train
    # Text side.
    prompt_mode: PromptMode = "mirror"
    mirror_length: int = setting(64, ge=1)
    mirror_init_std: float = setting(0.02, ge=0)
    prompt: str = PAPER_PROMPT
    # Decoder (CLIPSeg-style).
    reduce_dim: int = setting(64, ge=1)
    decoder_heads: int = setting(4, ge=1)
    decoder_ffn_dim: int = setting(2048, ge=1)
    decoder_layers_per_level: int = setting(1, ge=1)
    decoder_dropout: float = setting(0.0, ge=0, lt=1)
    head_type: Literal["deconv", "bilinear"] = "deconv"
    head_strides: list[int] | None = setting(None, ge=1)  # None: from the decoder grid's stride (16 -> [4, 4])
    # Input pixels per token of the decoder's grid; levels of other strides are resampled to it.
    # None: the coarsest used level's stride (the patch size of a ViT).
    decoder_stride: int | None = setting(None, ge=1)
    max_depth: float = setting(10.0, gt=0)  # metres: the output is max_depth * sigmoid(logits)
    # The model's own scale, (H, W): the evaluation input of the recipe it was trained with (480x640 for NYU,
    # the 352x1216 KB crop for KITTI), written by training. Users' images are predicted at its pixel count
    # (models.infer.network_size). A config.json written before this field existed gets the NYU default.
    train_size: list[int] = setting(factory=lambda: [480, 640], ge=1)

    def validate(self) -> None:
        if not self.blocks or sorted(set(self.blocks)) != self.blocks:
            raise invalid("blocks", self.blocks, "increasing block numbers (1-based), e.g. [3, 6, 9]")
        if len(self.train_size) != 2:
            raise invalid("train_size", self.train_size, "[height, width] in pixels, e.g. [480, 640]")
        if self.reduce_dim % self.decoder_heads:
            raise invalid("reduce_dim", self.reduce_dim, f"a multiple of decoder_heads ({self.decoder_heads})")
        if self.unfreeze_image_blocks > max(self.blocks):
            raise invalid("unfreeze_image_blocks", self.unfreeze_image_blocks,
                          f"an integer in [0, {max(self.blocks)}] (at most the last used block)")


def _preset_files() -> dict[str, Any]:
    root = resources.files("clip2depth.models") / "presets"
    return {p.name[: -len(".json")]: p for p in root.iterdir() if p.name.endswith(".json")}


def list_models() -> list[str]:
    """Names of the built-in presets (usable as ``create_model(name)``)."""
    return sorted(_preset_files())


def load_preset(name: str) -> ModelConfig:
    """Read the preset ``name`` into a :class:`ModelConfig`."""
    files = _preset_files()
    if name not in files:
        raise ConfigError(f"unknown model preset {name!r}; built-in presets: {', '.join(sorted(files))}")
    data = json.loads(files[name].read_text())
    return ModelConfig.from_dict({"name": name, **data}, source=f"preset {name}")

