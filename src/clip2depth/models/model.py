"""The CLIP2Depth model: frozen CLIP image encoder + mirror/prompt encoder + FiLM depth decoder."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clip2depth.errors import ConfigError
from clip2depth.models import checkpoint
from clip2depth.models.base import DepthModel
from clip2depth.models.card import Validation
from clip2depth.models.clip_backbone import ClipBundle, build_clip
from clip2depth.models.config import ModelConfig
from clip2depth.models.decoder import FiLMDepthDecoder, default_head_strides
from clip2depth.models.hub import upload_model_dir
from clip2depth.models.image_encoder import FrozenImageEncoder
from clip2depth.models.prompt_encoder import PromptEncoder
from clip2depth.models.spec import ModelSpec, resolve_model
from clip2depth.models.timm_image_encoder import TimmImageEncoder, is_timm_tower


class Clip2Depth(DepthModel):
    """Metric depth from a frozen CLIP.

    Built by :meth:`from_pretrained` (alias of :func:`clip2depth.create_model`) or :meth:`from_config`;
    composed by injection so each part can be swapped.
    ``forward`` is for training (batched tensors in, metres out); ``infer`` is for users (one image of
    any size in, an H×W float32 numpy array of metres out).
    """

    def __init__(
        self,
        *,
        config: ModelConfig,
        image_encoder: FrozenImageEncoder | TimmImageEncoder,
        prompt_encoder: PromptEncoder,
        decoder: FiLMDepthDecoder,
        clip_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.clip_weights = clip_weights
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.decoder = decoder

    @classmethod
    def from_config(
        cls, config: ModelConfig, *, clip_weights: str | None, device: str | torch.device = "cpu"
    ) -> Clip2Depth:
        """A fresh model (untrained mirror and decoder) for ``config`` on CLIP weights ``clip_weights``."""
        bundle = build_clip(
            config.clip_model,
            weights=clip_weights,
            reference_tag=config.clip_pretrained,
            quick_gelu=config.clip_quick_gelu,
            seed=config.clip_init_seed,
        )
        return cls.assemble(config, bundle, device=device)

    @classmethod
    def assemble(cls, config: ModelConfig, bundle: ClipBundle, *, device: str | torch.device = "cpu") -> Clip2Depth:
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
                f"decoder_stride {grid_stride} must divide the image encoder's input multiple "
                f"{image_encoder.patch_size}"
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
        model = cls(
            config=config, image_encoder=image_encoder, prompt_encoder=prompt_encoder, decoder=decoder,
            clip_weights=bundle.weights,
        )
        return model.to(device).eval()

    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | Path,
        pretrained: str | None = None,
        device: str | torch.device = "cpu",
        **overrides: Any,
    ) -> Clip2Depth:
        """A CLIP2Depth model from a preset, a ``save_pretrained`` directory or ``hf-hub:org/name``.

        Args:
            name_or_dir: a preset name (see :func:`clip2depth.list_models`), a directory written by
                :meth:`save_pretrained`, or ``hf-hub:org/name[@revision]``.
            pretrained: CLIP weights: an open_clip tag (``openai``), a local file or open_clip directory,
                or ``hf-hub:org/clip``. For a preset, ``None`` builds random CLIP weights (with a
                warning); for a trained directory, ``None`` uses the weights its ``config.json`` records.
            device: where to put the model.
            **overrides: :class:`~clip2depth.models.config.ModelConfig` fields to change.

        Returns:
            The model in eval mode, trained weights loaded when ``name_or_dir`` is a directory.
        """
        return cls.from_spec(resolve_model(name_or_dir, pretrained=pretrained, overrides=overrides), device=device)

    @classmethod
    def from_spec(cls, spec: ModelSpec, *, device: str | torch.device = "cpu") -> Clip2Depth:
        """The model ``spec`` describes: built for its config on its CLIP weights, with the trained weights of
        its directory loaded (strictly) when it has one; in eval mode."""
        spec = spec.fetched()
        model = cls.from_config(spec.config, clip_weights=spec.clip_weights, device=device)
        if spec.directory is not None:
            checkpoint.load_trained_state(model, spec.directory, spec.weights_sha256)
        return model.eval()

    @property
    def patch_size(self) -> int:
        return self.image_encoder.patch_size

    @property
    def processing_size(self) -> tuple[int, int]:
        """The scale the model was trained at, ``config.train_size`` (H, W)."""
        h, w = self.config.train_size
        return h, w

    @property
    def max_depth(self) -> float:
        return self.decoder.max_depth

    def train(self, mode: bool = True) -> Clip2Depth:
        super().train(mode)
        self.image_encoder.train(mode)  # both keep their CLIP modules in eval mode
        self.prompt_encoder.train(mode)
        return self

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of everything the optimizer may update: mirror, decoder (and unfrozen blocks)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: trained parameters plus decoder buffers (CLIP weights excluded)."""
        state = {n: p.detach() for n, p in self.trainable_parameters()}
        state.update({f"decoder.{n}": b.detach() for n, b in self.decoder.named_buffers()})
        return state

    def query(self) -> torch.Tensor | None:
        """The image-independent query ``q`` (1×Q), or None in prompt mode ``none``."""
        return self.prompt_encoder()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Depth for a batch.

        Args:
            images: B×3×H×W RGB in [0, 1]; H, W multiples of :attr:`patch_size`.

        Returns:
            B×1×H×W depth in metres, in (0, max_depth].
        """
        features = self.image_encoder(images)
        return self.decoder(features, self.query())

    def clip_record(self) -> dict[str, Any]:
        """What a checkpoint records about the frozen CLIP (its weights and feature sizes)."""
        return {
            "weights": self.clip_weights,
            "image_width": self.image_encoder.width,
            "query_dim": self.prompt_encoder.query_dim,
        }

    def save_pretrained(
        self, directory: str | Path, *, recipe: dict[str, Any] | None = None, validation: Validation | None = None
    ) -> None:
        """Write ``config.json`` + ``model.safetensors`` (trained parts only) + the model card ``README.md``.

        ``recipe`` (the resolved training recipe) and ``validation`` (metrics measured after some step) go
        into the card; a training run passes both.
        """
        checkpoint.save_pretrained(self, directory, recipe=recipe, validation=validation)

    def push_to_hub(
        self, repo_id: str, *, private: bool = False, token: str | None = None,
        commit_message: str = "Upload clip2depth model",
    ) -> str:
        """Save the trained parts and a model card, and upload them to the Hugging Face Hub repository ``repo_id``.

        Load it back with ``Clip2Depth.from_pretrained("hf-hub:" + repo_id)``. Needs the ``hub`` extra.
        Returns the URL of the commit. A training run's ``best/`` already holds a card with its recipe and
        metrics: upload that folder as it is with :func:`clip2depth.models.hub.upload_model_dir`.
        """
        with tempfile.TemporaryDirectory(prefix="clip2depth-push-") as tmp:
            checkpoint.save_pretrained(self, tmp, repo_id=repo_id)
            return upload_model_dir(tmp, repo_id, private=private, token=token, commit_message=commit_message)


