"""The CLIP2Depth model: frozen CLIP image encoder + mirror/prompt encoder + FiLM depth decoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from clip2depth.models.config import ModelConfig
from clip2depth.models.decoder import FiLMDepthDecoder
from clip2depth.models.image_encoder import FrozenImageEncoder
from clip2depth.models.infer import predict_depth
from clip2depth.models.prompt_encoder import PromptEncoder
from clip2depth.models.timm_image_encoder import TimmImageEncoder


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
        self, images: list[Any], *, max_side: int | None = None, flip_tta: bool = False
    ) -> list[np.ndarray]:
        """Depth for several images of any sizes (same-size images share one batch).

        Args:
            images: PIL images, H×W×3 uint8 arrays or 3×H×W float tensors in [0, 1].
            max_side: if set, larger images are processed downscaled to this longest side.
            flip_tta: average with the prediction on the horizontally flipped image.

        Returns:
            One H×W float32 array of metres per input, at the input's own size.
        """
        was_training = self.training
        self.eval()
        tensors = [_to_tensor(im) for im in images]
        results: list[np.ndarray | None] = [None] * len(tensors)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(tuple(t.shape[-2:]), []).append(i)
        for idx in groups.values():
            batch = torch.stack([tensors[i] for i in idx]).to(self.device)
            depth = predict_depth(self, batch, max_side=max_side, flip_tta=flip_tta)
            for j, i in enumerate(idx):
                results[i] = depth[j, 0].float().cpu().numpy()
        self.train(was_training)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def infer(self, image: Any, *, max_side: int | None = None, flip_tta: bool = False) -> np.ndarray:
        """Depth of one image (PIL, H×W×3 uint8 array or 3×H×W float tensor) as H×W float32 metres."""
        return self.infer_batch([image], max_side=max_side, flip_tta=flip_tta)[0]

    def save_pretrained(self, directory: str) -> None:
        """Write ``config.json`` + ``model.safetensors`` (trained parts only) into ``directory``."""
        from clip2depth.models.checkpoint import save_pretrained

        save_pretrained(self, directory)


def _to_tensor(image: Any) -> torch.Tensor:
    """PIL image / H×W×3 uint8 array / 3×H×W float tensor → 3×H×W float32 tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"a tensor image must be 3×H×W in [0, 1], got shape {tuple(t.shape)}")
        return t.float() if t.is_floating_point() else t.float() / 255.0
    if not isinstance(image, np.ndarray):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(f"cannot read an image from {type(image).__name__}; pass PIL, numpy or torch")
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"an array image must be H×W×3, got shape {arr.shape}")
    arr = arr[..., :3]
    t = torch.from_numpy(np.array(arr)).permute(2, 0, 1)  # copy: PIL-backed arrays are read-only
    if arr.dtype == np.uint8:
        return t.float() / 255.0
    if arr.dtype == np.uint16:
        return t.float() / 65535.0
    return t.float()
