"""torch.hub entry points for clip2depth.

    import torch
    model = torch.hub.load("path/to/clip2depth", "clip2depth_vit_b_16", pretrained="openai", source="local")
    model = torch.hub.load("path/to/clip2depth", "clip2depth", "runs/nyu/best", source="local")  # trained

Each preset has an entry, ``clip2depth_<preset name without the clip2depth- prefix, - as _>``: the architecture
with an untrained mirror and decoder on the CLIP weights ``pretrained`` (an open_clip tag, a local
``.safetensors`` file or open_clip folder, ``hf-hub:org/clip``; ``True`` for the preset's own tag; ``None``,
the default, for random CLIP weights). ``clip2depth`` loads whatever ``clip2depth.create_model`` does: a
preset, a trained model directory, ``hf-hub:org/name`` or ``depthclip-rn50``. Keyword arguments are model
config fields (``max_depth=80.0``) and ``device``. The clone's own ``src/`` is imported (unless clip2depth
is already imported), so the clone needs no install, only the dependencies below.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

# torch.hub lists every public callable of this module as an entry point: only modules and the entry points
# below are public names here.
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
sys.path.insert(0, _SRC)
try:
    from clip2depth.models import config as _config
    from clip2depth.models import factory as _factory
finally:
    sys.path.remove(_SRC)  # the imported package keeps its own path; the caller's sys.path is left as it was

if TYPE_CHECKING:
    from typing import Any

    from clip2depth.models.base import DepthModel
    from clip2depth.models.model import Clip2Depth

dependencies = ["torch", "torchvision", "open_clip", "timm", "safetensors", "numpy", "PIL", "yaml"]


def clip2depth(model: str = "clip2depth-vit-b-16", pretrained: str | None = None, device: str = "cpu",
               **overrides: Any) -> DepthModel:
    """Any model ``clip2depth.create_model`` builds.

    Args:
        model: a preset name, a trained model directory (a run's ``best/``), ``hf-hub:org/name`` or
            ``depthclip-rn50``.
        pretrained: CLIP weights (tag, file, folder, ``hf-hub:``); ``None``: what a trained directory records,
            random weights for a preset.
        device: where to put the model.
        **overrides: model config fields to change.
    """
    return _factory.create_model(model, pretrained=pretrained, device=device, **overrides)


def _preset(name: str, pretrained: bool | str | None, device: str, overrides: dict[str, Any]) -> Clip2Depth:
    weights = _config.load_preset(name).clip_pretrained if pretrained is True else pretrained or None
    return _factory.create_model(name, pretrained=weights, device=device, **overrides)


def clip2depth_vit_b_16(pretrained: bool | str | None = None, device: str = "cpu", **overrides: Any) -> Clip2Depth:
    """The paper's model on OpenAI's ViT-B/16 (NYU, max depth 10 m); ``pretrained=True``: ``openai``."""
    return _preset("clip2depth-vit-b-16", pretrained, device, overrides)


def clip2depth_vit_b_16_kitti(pretrained: bool | str | None = None, device: str = "cpu",
                              **overrides: Any) -> Clip2Depth:
    """The paper's model on OpenAI's ViT-B/16 for KITTI (max depth 80 m); ``pretrained=True``: ``openai``."""
    return _preset("clip2depth-vit-b-16-kitti", pretrained, device, overrides)


def clip2depth_vit_l_14(pretrained: bool | str | None = None, device: str = "cpu", **overrides: Any) -> Clip2Depth:
    """CLIP2Depth on OpenAI's ViT-L/14; ``pretrained=True``: ``openai``."""
    return _preset("clip2depth-vit-l-14", pretrained, device, overrides)


def clip2depth_siglip2_b_16(pretrained: bool | str | None = None, device: str = "cpu",
                            **overrides: Any) -> Clip2Depth:
    """CLIP2Depth on SigLIP 2 ViT-B/16; ``pretrained=True``: ``webli``."""
    return _preset("clip2depth-siglip2-b-16", pretrained, device, overrides)


def clip2depth_eva02_b_16(pretrained: bool | str | None = None, device: str = "cpu", **overrides: Any) -> Clip2Depth:
    """CLIP2Depth on EVA-02 CLIP B/16; ``pretrained=True``: ``merged2b_s8b_b131k``."""
    return _preset("clip2depth-eva02-b-16", pretrained, device, overrides)


def clip2depth_mobileclip_s1(pretrained: bool | str | None = None, device: str = "cpu",
                             **overrides: Any) -> Clip2Depth:
    """CLIP2Depth on MobileCLIP-S1; ``pretrained=True``: ``datacompdr``."""
    return _preset("clip2depth-mobileclip-s1", pretrained, device, overrides)


def clip2depth_convnext_base_w(pretrained: bool | str | None = None, device: str = "cpu",
                               **overrides: Any) -> Clip2Depth:
    """CLIP2Depth on the ConvNeXt-Base (wide) CLIP; ``pretrained=True``: ``laion2b_s13b_b82k``."""
    return _preset("clip2depth-convnext-base-w", pretrained, device, overrides)
