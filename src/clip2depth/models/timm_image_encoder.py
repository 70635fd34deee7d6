"""Frozen timm image towers (SigLIP, EVA-02, MobileCLIP's FastViT, ConvNeXt) through timm's own dense API.

open_clip wraps every non-native image tower in a ``TimmModel`` whose ``trunk`` is a timm model. timm's
``forward_intermediates`` returns the feature maps of chosen blocks (plain ViTs: every block, stride =
patch size) or stages (hierarchical towers: strides 4, 8, 16, 32) and, with ``stop_early``, never runs
what follows the deepest one. Plain ViT trunks are rebuilt with timm's ``dynamic_img_size`` so that any
input size works the way timm handles it (absolute positional embedding resampled, RoPE rebuilt for the
grid on each call; timm keeps no per-size cache there).
"""

from __future__ import annotations

import logging

import timm
import torch
from torch import nn

from clip2depth.errors import ConfigError

logger = logging.getLogger(__name__)


def is_timm_tower(visual: nn.Module) -> bool:
    """Whether ``visual`` is open_clip's wrapper around a timm model."""
    return hasattr(visual, "trunk")


def _dynamic_size_trunk(trunk: nn.Module) -> nn.Module:
    """``trunk`` rebuilt with ``dynamic_img_size=True`` (same weights) when it is a fixed-size ViT trunk."""
    if not hasattr(trunk, "dynamic_img_size") or trunk.dynamic_img_size:
        return trunk
    name = trunk.pretrained_cfg["architecture"]
    reference = next(trunk.parameters())
    kwargs = dict(pretrained=False, num_classes=trunk.num_classes, global_pool=trunk.global_pool, dynamic_img_size=True)
    with torch.device("meta"):  # no throw-away random initialisation: the weights are copied below
        rebuilt = timm.create_model(name, **kwargs)
    # Buffers computed from the config (RoPE bands) are not in the state dict: the meta shortcut needs
    # every module holding one to recompute it; otherwise build normally (a slower random init).
    computed = [m for m in rebuilt.modules() if m._non_persistent_buffers_set]
    if all(hasattr(m, "init_non_persistent_buffers") for m in computed):
        rebuilt = rebuilt.to_empty(device=reference.device)
        for module in computed:
            module.init_non_persistent_buffers()
    else:
        with torch.random.fork_rng(devices=[]):
            rebuilt = timm.create_model(name, **kwargs).to(reference.device)
    rebuilt.load_state_dict(trunk.state_dict(), strict=True)
    return rebuilt.to(dtype=reference.dtype)


class TimmImageEncoder(nn.Module):
    """Feature maps of selected blocks or stages of an open_clip ``TimmModel`` (frozen).

    Args:
        visual: open_clip ``TimmModel``; its ``trunk`` is replaced by a dynamic-size copy where needed.
        blocks: 1-based numbers of the trunk's feature levels (blocks of a ViT, stages of a hierarchical
            tower, as listed in timm's ``feature_info``).
        mean, std: the weights' preprocessing constants (per RGB channel).
        trainable_blocks: must be 0 (fine-tuning is offered for open_clip's own ViTs only).

    Attributes:
        widths, strides: channels and input pixels per feature cell of each returned level.
        patch_size: what input height and width must be multiples of (the largest stride).
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        blocks: list[int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        trainable_blocks: int = 0,
    ) -> None:
        super().__init__()
        if not hasattr(getattr(visual, "trunk", None), "forward_intermediates"):
            trunk = type(getattr(visual, "trunk", visual)).__name__
            raise ConfigError(
                f"the timm image tower {trunk} has no forward_intermediates (needed for its dense features); "
                "pick another CLIP model or a newer timm"
            )
        if trainable_blocks:
            raise ConfigError(
                "unfreeze_image_blocks applies to open_clip's own ViT towers only; set it to 0 for this backbone"
            )
        visual.trunk = _dynamic_size_trunk(visual.trunk)
        self.visual = visual
        info = list(visual.trunk.feature_info)
        if max(blocks) > len(info):
            raise ConfigError(
                f"blocks {blocks} exceed the {len(info)} feature levels of this CLIP image encoder "
                f"({type(visual.trunk).__name__})"
            )
        self.indices = [b - 1 for b in blocks]
        self.widths = [int(info[i]["num_chs"]) for i in self.indices]
        self.strides = [int(info[i]["reduction"]) for i in self.indices]
        self.width = self.widths[-1]
        self.patch_size = max(self.strides)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.visual.eval()

    @property
    def trunk(self) -> nn.Module:
        return self.visual.trunk

    def train(self, mode: bool = True) -> TimmImageEncoder:
        # The tower stays in eval mode (dropout, drop path, batch-norm statistics) whatever the outer model does.
        super().train(mode)
        self.visual.eval()
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the configured levels.

        Args:
            images: B×3×H×W RGB in [0, 1]; H and W multiples of :attr:`patch_size`.

        Returns:
            One B×widths[i]×(H/strides[i])×(W/strides[i]) tensor per level, shallowest first.
        """
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input size {h}x{w} is not a multiple of {self.patch_size}")
        dtype = next(self.trunk.parameters()).dtype
        with torch.no_grad():
            return self.trunk.forward_intermediates(
                self.normalize(images).to(dtype), indices=self.indices, stop_early=True, output_fmt="NCHW",
                intermediates_only=True,
            )
