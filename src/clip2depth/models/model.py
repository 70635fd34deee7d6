"""The CLIP2Depth model: frozen CLIP image encoder + mirror/prompt encoder + FiLM depth decoder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image
from torch import nn

from clip2depth.errors import ConfigError, DataError
from clip2depth.io.images import load_image, to_rgb_uint8
from clip2depth.models import checkpoint
from clip2depth.models.clip_backbone import ClipBundle, build_clip
from clip2depth.models.config import ModelConfig
from clip2depth.models.decoder import FiLMDepthDecoder, default_head_strides
from clip2depth.models.hub import upload_model_dir
from clip2depth.models.image_encoder import FrozenImageEncoder
from clip2depth.models.infer import image_tensor, predict_batch, size_batches
from clip2depth.models.prompt_encoder import PromptEncoder
from clip2depth.models.spec import ModelSpec, resolve_model
from clip2depth.models.timm_image_encoder import TimmImageEncoder, is_timm_tower

ImageLike: TypeAlias = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor
"""What :meth:`Clip2Depth.infer` accepts."""


class Clip2Depth(nn.Module):
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
    def device(self) -> torch.device:
        return self.image_encoder.mean.device

    @property
    def patch_size(self) -> int:
        return self.image_encoder.patch_size

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

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def infer_batch(
        self,
        images: Sequence[ImageLike],
        *,
        max_side: int | None = None,
        flip_tta: bool = False,
        precision: str = "fp32",
        batch_size: int = 8,
    ) -> list[np.ndarray]:
        """Depth for several images of any sizes (same-size images share a batch of up to ``batch_size``).

        Args:
            images: image file paths, PIL images, arrays (H×W, H×W×3 or H×W×4; uint8, uint16 or float
                in [0, 1]) or 3×H×W float tensors in [0, 1]. Files, PIL images and arrays follow the one
                reading rule of :func:`clip2depth.io.images.to_rgb_uint8` (EXIF orientation, 16-bit
                scaled, alpha dropped, palette converted), so they give the pixels ``predict`` and the
                datasets give.
            max_side: if set, larger images are processed downscaled to this longest side.
            flip_tta: average with the prediction on the horizontally flipped image.
            precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; outputs stay float32).
            batch_size: most images predicted together.

        Returns:
            One H×W float32 array of metres per input, at the input's own (upright) size.

        Raises:
            DataError: a file is missing or unreadable, or an array is not an image.
        """
        was_training = self.training
        self.eval()
        try:
            tensors = [_to_tensor(im) for im in images]
            results: list[np.ndarray | None] = [None] * len(tensors)
            for batch in size_batches(enumerate(tensors), size=lambda item: item[1].shape, batch_size=batch_size):
                depths = predict_batch(
                    self, [t for _, t in batch], max_side=max_side, flip_tta=flip_tta, precision=precision
                )
                for (i, _), depth in zip(batch, depths, strict=True):
                    results[i] = depth
        finally:
            self.train(was_training)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def infer(
        self, image: ImageLike, *, max_side: int | None = None, flip_tta: bool = False, precision: str = "fp32"
    ) -> np.ndarray:
        """Depth of one image (path, PIL image, array or 3×H×W tensor; see :meth:`infer_batch`), H×W float32 m."""
        return self.infer_batch([image], max_side=max_side, flip_tta=flip_tta, precision=precision)[0]

    def clip_record(self) -> dict[str, Any]:
        """What a checkpoint records about the frozen CLIP (its weights and feature sizes)."""
        return {
            "weights": self.clip_weights,
            "image_width": self.image_encoder.width,
            "query_dim": self.prompt_encoder.query_dim,
        }

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` (trained parts only) into ``directory``."""
        checkpoint.save_pretrained(self, directory)

    def push_to_hub(
        self, repo_id: str, *, private: bool = False, token: str | None = None,
        commit_message: str = "Upload clip2depth model",
    ) -> str:
        """Save the trained parts and upload them to the Hugging Face Hub repository ``repo_id``.

        Load it back with ``Clip2Depth.from_pretrained("hf-hub:" + repo_id)``. Needs the ``hub`` extra.
        Returns the URL of the commit.
        """
        with tempfile.TemporaryDirectory(prefix="clip2depth-push-") as tmp:
            self.save_pretrained(tmp)
            return upload_model_dir(tmp, repo_id, private=private, token=token, commit_message=commit_message)


def _to_tensor(image: ImageLike) -> torch.Tensor:
    """Path / PIL image / array / 3×H×W float tensor in [0, 1] → 3×H×W float32 tensor in [0, 1].

    Everything but a tensor goes through :mod:`clip2depth.io.images` (one reading rule); a tensor is
    taken as already prepared model input.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dim() != 3 or t.shape[0] != 3:
            raise DataError(f"a tensor image must be 3×H×W in [0, 1], got shape {tuple(t.shape)}")
        return t.float() if t.is_floating_point() else t.float() / 255.0
    if isinstance(image, (str, os.PathLike)):
        rgb = load_image(image)
    elif isinstance(image, (Image.Image, np.ndarray)):
        rgb = to_rgb_uint8(image)
    else:
        raise DataError(
            f"cannot read an image from {type(image).__name__}; pass a file path, a PIL image, a numpy array "
            f"or a 3×H×W tensor"
        )
    return image_tensor(rgb)
