"""The CLIP2Depth model: frozen CLIP image encoder + mirror/prompt encoder + FiLM depth decoder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clip2depth.errors import CheckpointError, ConfigError
from clip2depth.models import checkpoint
from clip2depth.models.clip_backbone import build_clip
from clip2depth.models.config import ModelConfig, list_models, load_preset
from clip2depth.models.decoder import FiLMDepthDecoder, default_head_strides
from clip2depth.models.hub import HF_PREFIX, download_model_dir, upload_model_dir
from clip2depth.models.image_encoder import FrozenImageEncoder
from clip2depth.models.infer import predict_depth
from clip2depth.models.prompt_encoder import PromptEncoder


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
        clip = bundle.model
        image_encoder = FrozenImageEncoder(
            clip.visual, blocks=config.blocks, mean=bundle.mean, std=bundle.std,
            trainable_blocks=config.unfreeze_image_blocks,
        )
        prompt_encoder = PromptEncoder(
            clip, mode=config.prompt_mode, mirror_length=config.mirror_length,
            mirror_init_std=config.mirror_init_std, prompt=config.prompt, tokenizer_name=bundle.tokenizer_name,
        )
        decoder = FiLMDepthDecoder(
            in_width=image_encoder.width,
            num_levels=len(config.blocks),
            query_dim=0 if config.prompt_mode == "none" else prompt_encoder.query_dim,
            reduce_dim=config.reduce_dim,
            heads=config.decoder_heads,
            ffn_dim=config.decoder_ffn_dim,
            layers_per_level=config.decoder_layers_per_level,
            dropout=config.decoder_dropout,
            head_strides=config.head_strides or default_head_strides(image_encoder.patch_size),
            head_type=config.head_type,
            max_depth=config.max_depth,
        )
        if config.prompt_mode == "none":
            prompt_encoder.requires_grad_(False)
        model = cls(
            config=config, image_encoder=image_encoder, prompt_encoder=prompt_encoder, decoder=decoder,
            clip_weights=clip_weights,
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
        name = str(name_or_dir)
        if name.startswith(HF_PREFIX):
            name = download_model_dir(name)
        if checkpoint.is_model_dir(name):
            data = checkpoint.read_model_dir(name)
            config = ModelConfig.from_dict(data["model"], source=str(Path(name) / checkpoint.CONFIG_NAME))
            if overrides:
                config = config.replace(**overrides)
            clip = data.get("clip")
            weights = pretrained if pretrained is not None else (clip or {}).get("weights")
            if weights is not None and not isinstance(weights, str):
                raise CheckpointError(
                    f"{Path(name) / checkpoint.CONFIG_NAME}: field 'clip.weights' is {weights!r}, expected a "
                    "string (an open_clip tag or a path) or null; fix the file or pass --pretrained"
                )
            model = cls.from_config(config, clip_weights=weights, device=device)
            checkpoint.load_trained_state(model, name, data.get("weights_sha256"))
            return model.eval()
        if Path(name).exists():
            raise ConfigError(
                f"{name} exists but is not a clip2depth model directory (it has no {checkpoint.CONFIG_NAME}); "
                "pass a preset name or a directory written by save_pretrained"
            )
        if _looks_like_path(name):
            raise ConfigError(
                f"no such model directory: {name}; pass a directory written by save_pretrained (a training "
                f"run's best/ or last/) or a preset: {', '.join(list_models())}"
            )
        config = load_preset(name)
        if overrides:
            config = config.replace(**overrides)
        return cls.from_config(config, clip_weights=pretrained, device=device)

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


def _looks_like_path(name: str) -> bool:
    """A model name that can only mean a directory: it has a path separator or starts with ``.``/``~``."""
    return os.sep in name or "/" in name or name.startswith((".", "~"))


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
