"""Training augmentation (docs/method.md#training-recipe, the BTS/AdaBins recipe) and the KITTI KB crop.

A *sample* is a dict with ``image`` (3, H, W) float in [0, 1] and ``depth`` (1, H, W) metres with
0 = invalid; other keys (``focal``, ``path``, ``name``, ...) pass through untouched. Geometric
transforms sample depth with nearest neighbour, so every augmented depth value is an original value
or 0, and invalid pixels stay invalid.
"""

from __future__ import annotations

import logging
import math
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from clip2depth.errors import DataError

logger = logging.getLogger(__name__)

KB_HEIGHT = 352
KB_WIDTH = 1216

Sample = dict[str, Any]
_Array = TypeVar("_Array", np.ndarray, torch.Tensor)


# --------------------------------------------------------------------------------------------------
# KITTI benchmark (KB) crop.


def kb_crop_box(h: int, w: int) -> tuple[int, int, int, int]:
    """The KB crop of an H×W KITTI frame as ``(top, left, 352, 1216)``: bottom rows, centred columns."""
    if h < KB_HEIGHT or w < KB_WIDTH:
        raise DataError(f"KITTI frame of {h}×{w} is smaller than the {KB_HEIGHT}×{KB_WIDTH} KB crop")
    return h - KB_HEIGHT, (w - KB_WIDTH) // 2, KB_HEIGHT, KB_WIDTH


def kb_crop(x: _Array) -> _Array:
    """Crop an image or depth map (..., H, W), numpy or torch, to the 352×1216 KB crop (BTS style)."""
    top, left, h, w = kb_crop_box(x.shape[-2], x.shape[-1])
    return x[..., top : top + h, left : left + w]


def paste_into_canvas(
    pred: torch.Tensor, crop_box: tuple[int, int, int, int], full_size: tuple[int, int]
) -> torch.Tensor:
    """Put a prediction of the crop (..., h, w) at ``crop_box`` = (top, left, h, w) on a zero canvas
    (..., H, W) of ``full_size`` (the ground-truth size); outside the crop the depth is 0 = no value."""
    top, left, h, w = (int(v) for v in crop_box)
    if tuple(pred.shape[-2:]) != (h, w):
        raise ValueError(f"prediction of size {tuple(pred.shape[-2:])} does not match crop box {crop_box}")
    canvas = pred.new_zeros(*pred.shape[:-2], *full_size)
    canvas[..., top : top + h, left : left + w] = pred
    return canvas


# --------------------------------------------------------------------------------------------------
# Training augmentation.


def _uniform(generator: torch.Generator | None, low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def rotate(x: torch.Tensor, degrees: float, *, mode: str) -> torch.Tensor:
    """Rotate (C, H, W) by ``degrees`` about the image centre, same size; pixels from outside → 0.

    ``mode`` is ``"bilinear"`` for images and ``"nearest"`` for depth (no value is ever invented).
    """
    if degrees == 0.0:
        return x
    theta = math.radians(degrees)
    h, w = x.shape[-2:]
    cos, sin = math.cos(theta), math.sin(theta)
    # affine_grid works in normalised coordinates: the aspect ratio enters the off-diagonal terms so
    # that the rotation is a true rotation in pixel space.
    matrix = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=torch.float32, device=x.device)
    grid = F.affine_grid(matrix[None], [1, x.shape[0], h, w], align_corners=False)
    out = F.grid_sample(x[None].float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out[0].to(x.dtype)


class TrainAugment:
    """Random KB crop (optional) → rotation → crop → horizontal flip → photometric jitter.

    Args:
        crop_size: (h, w) of the random crop, e.g. (416, 544) for NYU, (352, 704) for KITTI.
        rotate_deg: rotation angle drawn uniformly from ±rotate_deg degrees (2.5 NYU, 1 KITTI; 0 = off).
        flip_p: probability of a horizontal flip of image and depth together.
        gamma, brightness, color: ranges of the photometric jitter ``clip((img^γ)·b·c_rgb, 0, 1)``;
            γ and b are scalars, ``c_rgb`` one factor per channel (NYU uses brightness (0.75, 1.25)).
        color_p: probability that the photometric jitter is applied at all (BTS: 0.5).
        kb_crop: apply the 352×1216 KITTI KB crop first (for KITTI frames not already cropped).

    ``__call__(sample, generator)`` draws every random number from ``generator``, so the same
    generator state gives the same augmentation; with ``generator=None`` it draws from torch's global
    RNG (which a DataLoader seeds per worker), so the object can be used directly as a dataset
    ``transform``. Raises :class:`DataError` (naming the sample's ``path``) when the image is smaller
    than ``crop_size``.
    """

    def __init__(
        self,
        *,
        crop_size: tuple[int, int],
        rotate_deg: float,
        flip_p: float = 0.5,
        gamma: tuple[float, float] = (0.9, 1.1),
        brightness: tuple[float, float] = (0.9, 1.1),
        color: tuple[float, float] = (0.9, 1.1),
        color_p: float = 0.5,
        kb_crop: bool = False,
    ) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.rotate_deg = float(rotate_deg)
        self.flip_p = float(flip_p)
        self.gamma = gamma
        self.brightness = brightness
        self.color = color
        self.color_p = float(color_p)
        self.kb_crop = kb_crop

    def __repr__(self) -> str:
        return (
            f"TrainAugment(crop_size={self.crop_size}, rotate_deg={self.rotate_deg}, flip_p={self.flip_p}, "
            f"gamma={self.gamma}, brightness={self.brightness}, color={self.color}, "
            f"color_p={self.color_p}, kb_crop={self.kb_crop})"
        )

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        """Augment one sample (a new dict; the input is not modified)."""
        out = dict(sample)
        image: torch.Tensor = sample["image"]
        depth: torch.Tensor = sample["depth"]
        if self.kb_crop:
            image, depth = kb_crop(image), kb_crop(depth)

        if self.rotate_deg > 0:
            angle = float(_uniform(generator, -self.rotate_deg, self.rotate_deg))
            image = rotate(image, angle, mode="bilinear")
            depth = rotate(depth, angle, mode="nearest")

        image, depth = self._random_crop(image, depth, generator, sample.get("path", "<unknown>"))

        if float(torch.rand(1, generator=generator)) < self.flip_p:
            image, depth = image.flip(-1), depth.flip(-1)

        if float(torch.rand(1, generator=generator)) < self.color_p:
            image = self._photometric(image, generator)

        out["image"] = image.contiguous()
        out["depth"] = depth.contiguous()
        return out

    def _random_crop(
        self, image: torch.Tensor, depth: torch.Tensor, generator: torch.Generator | None, path: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ch, cw = self.crop_size
        h, w = image.shape[-2:]
        if h < ch or w < cw:
            raise DataError(
                f"{path}: image of {h}×{w} is smaller than the training crop {ch}×{cw}; "
                "use a smaller crop size or larger images"
            )
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        return image[:, top : top + ch, left : left + cw], depth[:, top : top + ch, left : left + cw]

    def _photometric(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        gamma = float(_uniform(generator, *self.gamma))
        brightness = float(_uniform(generator, *self.brightness))
        colors = _uniform(generator, *self.color, n=3).to(image.dtype).view(3, 1, 1)
        return (image.clamp(min=0.0) ** gamma * brightness * colors).clamp(0.0, 1.0)
