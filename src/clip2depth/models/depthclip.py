"""DepthCLIP (Zhang et al., CVPR 2022, "Can Language Understand Depth?"): zero-shot depth, docs/method.md#baselines.

Nothing is trained. A frozen CLIP RN50 gives one feature per 32×32 patch; seven prompts
``"This object is {distance}"`` give one text feature per depth bin. Per patch::

    p = softmax_k(logit_scale · ⟨f, t_k⟩ / temperature)        (logit_scale 100, temperature 0.1)
    depth = Σ_k p_k · bin_k                                    (bins 1.00 … 3.00 m)

How the authors' code (``monoclip.py`` and their modified ``clip/model.py``) forms ``f``: the RN50
runs up to ``layer4``; the attention pool is never run. The 2048-channel map is L2-normalised per
patch and then squeezed to CLIP's 1024-d joint space by nearest-neighbour interpolation along the
channel axis, which keeps channels 0, 2, 4, …: no learned projection, and ``f`` is not renormalised
after that. Text features are unit vectors. The depth map comes out at H/32 × W/32 and is resized
bilinearly (``align_corners=True``) to the input size. Images are normalised with ImageNet
mean/std, not CLIP's. Their NYU run predicts on rows 56:472, cols 60:604 of the 480×640 image
(:data:`NYU_INPUT_BOX`), averages with the flipped prediction, and pastes the result into a zero
canvas for evaluation: ``clip2depth eval --protocol depthclip`` does the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clip2depth.errors import ConfigError
from clip2depth.models.base import DepthModel
from clip2depth.models.clip_backbone import build_clip
from clip2depth.models.text_towers import load_tokenizer
from clip2depth.typed import TypedConfig, invalid, setting

DEPTHCLIP_RN50 = "depthclip-rn50"
"""The name ``create_model`` builds DepthCLIP under (its authors' RN50 settings)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Where the authors' NYU evaluation crops its input from the 480×640 image: (top, bottom, left, right).
NYU_INPUT_BOX = (56, 60, 416, 544)
"""(top, left, height, width) of the 480×640 NYU image that DepthCLIP's own evaluation predicts on."""


@dataclass
class DepthCLIPConfig(TypedConfig):
    """Everything that defines a DepthCLIP model; defaults reproduce the authors' code."""

    name: str = "depthclip-rn50"
    clip_model: str = "RN50"
    clip_pretrained: str | None = "openai"  # the tag whose activation (QuickGELU) and mean/std apply
    clip_init_seed: int = 0  # seeds random CLIP weights (tests only)
    # No trailing period: the authors' template is 'This {} is {}'.
    template: str = "This {object} is {distance}"
    object: str = "object"
    distance_words: tuple[str, ...] = (
        "giant", "extremely close", "close", "not in distance", "a little remote", "far", "unseen",
    )
    bins: tuple[float, ...] = setting((1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00), gt=0)  # metres, one per word
    temperature: float = setting(0.1, gt=0)
    logit_scale: float = setting(100.0, gt=0)
    # channel_subsample: the authors' choice (see the module docstring). attnpool_value: the attention
    # pool's value and output projections applied per patch (MaskCLIP's dense CLIP features).
    dense_features: Literal["channel_subsample", "attnpool_value"] = "channel_subsample"
    normalization: Literal["imagenet", "clip"] = "imagenet"
    max_depth: float = setting(10.0, gt=0)  # the dataset's depth cap (NYU); predictions never exceed max(bins)
    # Its own scale for users' images: the NYU frame the standard protocol evaluates it on.
    processing_size: tuple[int, int] = setting((480, 640), ge=1)

    def validate(self) -> None:
        if not self.bins or len(self.bins) != len(self.distance_words):
            raise invalid("bins", list(self.bins), f"one bin per distance word ({len(self.distance_words)} words)")
        try:
            self.prompts()
        except (KeyError, IndexError):
            raise invalid("template", self.template, "a text using the fields {object} and {distance} only") from None

    def prompts(self) -> list[str]:
        """The text of each bin's prompt, in bin order."""
        return [self.template.format(object=self.object, distance=w) for w in self.distance_words]


class DepthCLIP(DepthModel):
    """Zero-shot metric depth from a frozen CLIP ResNet; ``infer`` / ``infer_batch`` as for every depth model.

    Nothing is trainable: every CLIP module stays in eval mode and runs without autograd. The text
    features depend only on the config: they are computed once, on first use, and then cached.
    """

    def __init__(
        self,
        *,
        config: DepthCLIPConfig,
        clip: nn.Module,
        clip_mean: Sequence[float],
        clip_std: Sequence[float],
        tokenizer_name: str,
        clip_weights: str | None = None,
    ) -> None:
        super().__init__()
        visual = getattr(clip, "visual", None)
        if not all(hasattr(visual, a) for a in ("stem", "layer4", "attnpool")):
            raise ConfigError(
                f"DepthCLIP needs a ResNet CLIP (e.g. RN50); {config.clip_model} has no ResNet image tower"
            )
        self.config = config
        self.clip_weights = clip_weights
        self.clip = clip.requires_grad_(False).eval()
        self.tokenizer = load_tokenizer(tokenizer_name, purpose="DepthCLIP's prompts")
        imagenet = config.normalization == "imagenet"
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (tuple(clip_mean), tuple(clip_std))
        device = next(clip.parameters()).device
        self.register_buffer("mean", torch.tensor(mean, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bins", torch.tensor(config.bins, device=device), persistent=False)
        self._text_cache: torch.Tensor | None = None

    @property
    def patch_size(self) -> int:
        return 32  # the ResNet's output stride

    @property
    def processing_size(self) -> tuple[int, int]:
        """(H, W) users' images are predicted at (pixel count, aspect kept): ``config.processing_size``."""
        h, w = self.config.processing_size
        return h, w

    @property
    def max_depth(self) -> float:
        return self.config.max_depth

    @property
    def prompts(self) -> list[str]:
        return self.config.prompts()

    @property
    def text_features(self) -> torch.Tensor:
        """K×D unit-length features of :attr:`prompts`, one row per bin (encoded once, then cached)."""
        if self._text_cache is None:
            self._text_cache = self.encode_prompts(self.prompts)
        if self._text_cache.device != self.device:
            self._text_cache = self._text_cache.to(self.device)
        return self._text_cache

    def train(self, mode: bool = True) -> DepthCLIP:
        super().train(mode)
        self.clip.eval()  # batch-norm statistics must never move
        return self

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """K prompts → K×D unit-length text features (D = CLIP's joint dimension, 1024 for RN50)."""
        tokens = self.tokenizer(prompts).to(self.device)
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W RGB in [0, 1] → the network's input (ImageNet or CLIP mean/std per the config)."""
        return (images - self.mean) / self.std

    @torch.no_grad()
    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W RGB in [0, 1] → B×C×H/32×W/32 ``layer4`` output (C = 2048 for RN50), before the attention pool."""
        visual = self.clip.visual
        x = visual.stem(self.normalize(images).to(visual.conv1.weight.dtype))
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
        return x.float()

    @torch.no_grad()
    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W RGB in [0, 1] → B×D×H/32×W/32 per-patch features in the text features' space.

        ``channel_subsample``: L2-normalise the C channels, keep channels ``⌊i·C/D⌋`` (i < D), i.e.
        every other one for RN50; the result has norm below 1, as in the authors' code.
        ``attnpool_value``: the attention pool's ``c_proj(v_proj(·))`` per patch, then L2-normalised.
        """
        x = self.backbone_features(images)
        if self.config.dense_features == "attnpool_value":
            pool = self.clip.visual.attnpool
            x = pool.c_proj(pool.v_proj(x.permute(0, 2, 3, 1).to(pool.v_proj.weight.dtype))).float()
            return F.normalize(x, dim=-1).permute(0, 3, 1, 2)
        c, d = x.shape[1], self.clip.visual.output_dim
        keep = torch.arange(d, device=x.device) * c // d  # what nearest interpolation C→D picks
        return F.normalize(x, dim=1).index_select(1, keep)

    def depth_from_features(self, patch_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """The DepthCLIP read-out.

        Args:
            patch_features: B×D×h×w.
            text_features: K×D, one row per bin.

        Returns:
            B×1×h×w depth in metres: ``Σ_k softmax_k(logit_scale·⟨f, t_k⟩ / temperature) · bin_k``.
        """
        logits = torch.einsum("bdhw,kd->bkhw", patch_features, text_features)
        probs = (logits * (self.config.logit_scale / self.config.temperature)).softmax(dim=1)
        return (probs * self.bins.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Depth for a batch.

        Args:
            images: B×3×H×W RGB in [0, 1]; H, W multiples of :attr:`patch_size`.

        Returns:
            B×1×H×W depth in metres, in [min(bins), max(bins)].
        """
        h, w = images.shape[-2:]
        if images.dim() != 4 or images.shape[1] != 3 or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"DepthCLIP takes B×3×H×W images with H, W multiples of {self.patch_size}, got "
                f"{tuple(images.shape)}; infer() resizes any image for you"
            )
        coarse = self.depth_from_features(self.patch_features(images), self.text_features)
        # align_corners=True as in the authors' code; it commutes with flips, so flip TTA at full
        # resolution equals their averaging at H/32×W/32.
        return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)



def build_depthclip(
    pretrained: str | None = None, device: str | torch.device = "cpu", **overrides: Any
) -> DepthCLIP:
    """Build DepthCLIP (default: RN50, the authors' settings).

    Args:
        pretrained: CLIP weights — ``openai`` for the real baseline, a local file, or ``None`` for
            random (seeded) weights, which are only good for tests.
        device: where to put the model.
        **overrides: :class:`DepthCLIPConfig` fields to change.

    Returns:
        The model in eval mode.
    """
    config = DepthCLIPConfig().replace(**overrides)
    bundle = build_clip(
        config.clip_model,
        weights=pretrained,
        reference_tag=config.clip_pretrained,
        seed=config.clip_init_seed,
        device=device,
    )
    model = DepthCLIP(
        config=config, clip=bundle.model, clip_mean=bundle.mean, clip_std=bundle.std,
        tokenizer_name=bundle.tokenizer_name, clip_weights=pretrained,
    )
    return model.to(device).eval()
