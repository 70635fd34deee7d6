"""Model presets: JSON files in ``clip2depth/presets`` read into a typed :class:`ModelConfig`.

Every architecture choice the paper leaves open (listed as our choices in docs/method.md) is a field
here, so that better information changes a JSON file, not the code.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from clip2depth.errors import ConfigError

PROMPT_MODES = ("mirror", "language", "concat", "none")
HEAD_TYPES = ("deconv", "bilinear")
PAPER_PROMPT = "How far is this location from the camera?"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a CLIP2Depth model (CLIP choice, mirror, decoder)."""

    name: str = "custom"
    # Frozen CLIP (open_clip): architecture name, and the pretrained tag whose preprocessing
    # (mean/std) and activation (QuickGELU) the built CLIP must match.
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    clip_quick_gelu: bool | None = None  # None: follow the pretrained tag's open_clip config
    clip_init_seed: int = 0  # seeds random CLIP weights so a random-CLIP checkpoint reloads exactly
    # Image features: 1-based block numbers whose patch tokens feed the decoder (for a hierarchical timm
    # tower such as ConvNeXt or FastViT: stage numbers, as in timm's feature_info).
    blocks: list[int] = field(default_factory=lambda: [3, 6, 9])
    unfreeze_image_blocks: int = 0  # >0 only for the "fine-tuning" ablation: last k used blocks train
    # Text side.
    prompt_mode: str = "mirror"
    mirror_length: int = 64
    mirror_init_std: float = 0.02
    prompt: str = PAPER_PROMPT
    # Decoder (CLIPSeg-style).
    reduce_dim: int = 64
    decoder_heads: int = 4
    decoder_ffn_dim: int = 2048
    decoder_layers_per_level: int = 1
    decoder_dropout: float = 0.0
    head_type: str = "deconv"
    head_strides: list[int] | None = None  # None: derived from the decoder grid's stride (16 -> [4, 4])
    # Input pixels per token of the decoder's grid; levels of other strides are resampled to it.
    # None: the coarsest used level's stride (the patch size of a ViT).
    decoder_stride: int | None = None
    max_depth: float = 10.0

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _has_type(value, hints[f.name]):
                raise ConfigError(
                    f"field {f.name!r} is {value!r} ({type(value).__name__}), expected {_type_name(hints[f.name])}"
                )
        if self.prompt_mode not in PROMPT_MODES:
            raise ConfigError(f"prompt_mode {self.prompt_mode!r} is not one of {', '.join(PROMPT_MODES)}")
        if self.head_type not in HEAD_TYPES:
            raise ConfigError(f"head_type {self.head_type!r} is not one of {', '.join(HEAD_TYPES)}")
        if not self.blocks or any(b < 1 for b in self.blocks) or sorted(set(self.blocks)) != list(self.blocks):
            raise ConfigError(f"blocks must be increasing 1-based block numbers, got {self.blocks}")
        if self.mirror_length < 1:
            raise ConfigError(f"mirror_length must be >= 1, got {self.mirror_length}")
        if self.decoder_stride is not None and self.decoder_stride < 1:
            raise ConfigError(f"decoder_stride must be >= 1 or null, got {self.decoder_stride}")
        if self.max_depth <= 0:
            raise ConfigError(f"max_depth must be positive, got {self.max_depth}")
        if self.reduce_dim % self.decoder_heads:
            raise ConfigError(
                f"reduce_dim ({self.reduce_dim}) must be divisible by decoder_heads ({self.decoder_heads})"
            )
        if not 0 <= self.unfreeze_image_blocks <= max(self.blocks):
            raise ConfigError(f"unfreeze_image_blocks must be in [0, {max(self.blocks)}]")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> ModelConfig:
        """Validate ``data`` (field names, types, ranges); errors name ``source`` (a file or preset)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown model config field(s) {unknown}; known fields: {sorted(known)}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with ``overrides`` applied (unknown names raise :class:`ConfigError`)."""
        data = self.to_dict()
        data.update(overrides)
        return ModelConfig.from_dict(data, source="overrides")


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a JSON-read ``value`` fits the annotation ``hint`` (bool is not an int; an int is a float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    """``list[int] or null`` for ``list[int] | None``: the type as a JSON user reads it."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if origin is list:
        item = typing.get_args(hint)[0]
        plurals = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plurals.get(item, _type_name(item))}"
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint))


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
    data.setdefault("name", name)
    return ModelConfig.from_dict(data, source=f"preset {name}")

