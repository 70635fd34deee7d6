"""The CLIP2Depth model: frozen CLIP image encoder + mirror/prompt encoder + FiLM depth decoder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import torch
from PIL import Image
from torch import nn

from clip2depth.errors import DataError
from clip2depth.io.images import load_image, to_rgb_uint8
from clip2depth.models.config import ModelConfig
from clip2depth.models.decoder import FiLMDepthDecoder
from clip2depth.models.image_encoder import FrozenImageEncoder
from clip2depth.models.infer import image_tensor, predict_batch, size_batches
from clip2depth.models.prompt_encoder import PromptEncoder

ImageLike: TypeAlias = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor
"""What :meth:`Clip2Depth.infer` accepts."""


class Clip2Depth(nn.Module):
    """Metric depth from a frozen CLIP.

    Built by :func:`clip2depth.create_model`; composed by injection so each part can be swapped.
    ``forward`` is for training (batched tensors in, metres out); ``infer`` is for users (one image of
    any size in, an H×W float32 numpy array of metres out).
    """

    def __init__(
        self,
        *,
        config: ModelConfig,
        image_encoder: FrozenImageEncoder,
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

    def forward_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decoder only, for precomputed image features (analysis tools)."""
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

    def save_pretrained(self, directory: str) -> None:
        """Write ``config.json`` + ``model.safetensors`` (trained parts only) into ``directory``."""
        from clip2depth.models.checkpoint import save_pretrained

        save_pretrained(self, directory)


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
