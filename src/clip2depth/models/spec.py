"""A model name resolved once: a preset, a trained-model directory or ``hf-hub:ORG/NAME`` → :class:`ModelSpec`.

A spec holds what building the model takes (its :class:`ModelConfig`, the CLIP weights, the directory
whose trained weights load into it) and resolving a local name builds and downloads nothing. So a
training recipe checks its model before any weight is fetched and then builds exactly that model
(:meth:`Clip2Depth.from_spec <clip2depth.models.model.Clip2Depth.from_spec>`), and ``create_model`` says
what is wrong with a name in the same words.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip2depth.errors import CheckpointError, ConfigError
from clip2depth.models import checkpoint
from clip2depth.models.config import ModelConfig, list_models, load_preset
from clip2depth.models.hub import HF_PREFIX, download_model_dir


@dataclass(frozen=True)
class ModelSpec:
    """What a model name means; nothing is built."""

    name: str
    """The name as given (preset, directory or ``hf-hub:ORG/NAME``)."""
    config: ModelConfig | None
    """The architecture, overrides applied; None for an ``hf-hub:`` model not downloaded yet."""
    clip_weights: str | None
    """CLIP weights: open_clip tag, file, folder or ``hf-hub:``; None builds random CLIP weights."""
    directory: Path | None = None
    """Where the trained weights (mirror + decoder) come from; None for a fresh model."""
    weights_sha256: str | None = None
    """The checksum ``config.json`` records for the trained weights."""
    pretrained: str | None = None
    """The CLIP weights asked for (None: a preset's random weights, a directory's recorded ones)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields changed from the preset or directory."""

    @property
    def is_preset(self) -> bool:
        return self.directory is None and self.config is not None

    def fetched(self) -> ModelSpec:
        """This spec with an ``hf-hub:`` model downloaded (itself for any other)."""
        if self.config is not None:
            return self
        return _from_directory(download_model_dir(self.name), self.name, self.pretrained, self.overrides)

    def with_directory(self, directory: str | Path) -> ModelSpec:
        """The same model with the trained weights of ``directory`` (a checkpoint of it) to load; without
        ``pretrained``, the CLIP weights its ``config.json`` records.

        Raises:
            CheckpointError: ``directory`` holds another architecture than this spec's config.
        """
        saved = _from_directory(directory, self.name, self.pretrained, {})
        if self.config is None:
            return dataclasses.replace(saved, overrides=self.overrides)
        # train_size is the scale images are predicted at, not part of the weights: this spec's (the run's recipe)
        # holds, so a run saved before the field existed (then read as its default) resumes as well.
        changed = [k for k, v in saved.config.to_dict().items() if k != "train_size" and v != getattr(self.config, k)]
        if changed:
            raise CheckpointError(f"{directory} holds a model with other settings ({', '.join(changed)}) than "
                                  f"{self.name} with its overrides; keep the model settings the run was started with")
        return dataclasses.replace(saved, config=saved.config.replace(train_size=self.config.train_size),
                                   overrides=self.overrides)


def resolve_model(name: str | os.PathLike[str], *, pretrained: str | None = None,
                  overrides: dict[str, Any] | None = None, download: bool = True) -> ModelSpec:
    """What ``name`` means, checked: a preset, a directory written by ``save_pretrained`` or ``hf-hub:ORG/NAME``.

    Args:
        pretrained: CLIP weights; None for a preset builds random ones, for a directory uses those its
            ``config.json`` records.
        overrides: :class:`ModelConfig` fields to change.
        download: fetch an ``hf-hub:`` model now; without it its spec has no config yet (see
            :meth:`ModelSpec.fetched`).

    Raises:
        ConfigError: an unknown name, a missing directory, or overrides the config refuses.
        CheckpointError: a directory whose ``config.json`` is unreadable or invalid.
    """
    name, overrides = str(name), dict(overrides or {})
    if name.startswith(HF_PREFIX):
        if not download:
            return ModelSpec(name=name, config=None, clip_weights=pretrained, pretrained=pretrained,
                             overrides=overrides)
        return _from_directory(download_model_dir(name), name, pretrained, overrides)
    if checkpoint.is_model_dir(name):
        return _from_directory(name, name, pretrained, overrides)
    presets = ", ".join(list_models())
    if Path(name).exists():
        raise ConfigError(f"{name} exists but is not a clip2depth model directory (it has no "
                          f"{checkpoint.CONFIG_NAME}); pass a directory written by save_pretrained or a preset: "
                          f"{presets}")
    if os.sep in name or "/" in name or name.startswith((".", "~")):
        raise ConfigError(f"no such model directory: {name}; pass a directory written by save_pretrained (a "
                          f"training run's best/ or last/) or a preset: {presets}")
    if name not in list_models():
        raise ConfigError(f"unknown model preset {name!r}; built-in presets: {presets}; or pass a model directory "
                          "(config.json + model.safetensors) or hf-hub:ORG/NAME")
    config = load_preset(name)
    return ModelSpec(name=name, config=config.replace(**overrides) if overrides else config,
                     clip_weights=pretrained, pretrained=pretrained, overrides=overrides)


def _from_directory(directory: str | Path, name: str, pretrained: str | None,
                    overrides: dict[str, Any]) -> ModelSpec:
    config_path = Path(directory) / checkpoint.CONFIG_NAME
    data = checkpoint.read_model_dir(directory)
    config = ModelConfig.from_dict(data["model"], source=str(config_path), section="model")
    clip = data.get("clip")
    weights = pretrained if pretrained is not None else clip.get("weights") if isinstance(clip, dict) else None
    if weights is not None and not isinstance(weights, str):
        raise CheckpointError(f"{config_path}: field 'clip.weights' is {weights!r}, expected a string (an open_clip "
                              "tag or a path) or null; fix the file or pass --pretrained")
    return ModelSpec(name=name, config=config.replace(**overrides) if overrides else config, clip_weights=weights,
                     directory=Path(directory), weights_sha256=data.get("weights_sha256"), pretrained=pretrained,
                     overrides=overrides)
