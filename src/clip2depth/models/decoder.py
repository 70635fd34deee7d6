"""Compact CLIPSeg-style depth decoder: reduce, FiLM with the query, small transformers, deconv head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def default_head_strides(patch_size: int) -> list[int]:
    """Split the ×patch (or ×grid stride) upsampling into two stages (16 → 4·4, 14 → 2·7, 32 → 4·8)."""
    best = (patch_size, 1)
    for a in range(1, patch_size + 1):
        if patch_size % a == 0:
            b = patch_size // a
            if a >= b and a - b < best[0] - best[1]:
                best = (a, b)
    return [best[1], best[0]] if best[1] > 1 else [patch_size]


class DepthHead(nn.Module):
    """Token grid (B×D×h×w) → logits (B×1×h·s×w·s) by staged transposed convolutions.

    ``head_type='deconv'`` uses stride-``s`` transposed convolutions with kernel ``s`` (CLIPSeg);
    ``'bilinear'`` uses bilinear upsampling followed by 3×3 convolutions.
    """

    def __init__(self, dim: int, strides: list[int], head_type: str = "deconv") -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True)]
        channels = dim
        for i, s in enumerate(strides):
            last = i == len(strides) - 1
            out = 1 if last else max(channels // 2, 8)
            if head_type == "deconv":
                layers.append(nn.ConvTranspose2d(channels, out, kernel_size=s, stride=s))
            else:
                layers += [nn.Upsample(scale_factor=s, mode="bilinear", align_corners=False),
                           nn.Conv2d(channels, out, 3, padding=1)]
            if not last:
                layers.append(nn.ReLU(inplace=True))
            channels = out
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FiLMDepthDecoder(nn.Module):
    """Multi-level decoder conditioned on the query vector ``q``.

    From the deepest level to the shallowest: ``a = reduce_l(x_l) + a``; after the deepest level,
    FiLM ``a = W_mul(q) ⊙ a + W_add(q)``; then transformer encoder layer(s) of width ``reduce_dim``.
    Levels of other strides than ``grid_stride`` (hierarchical towers) are resampled to that grid after
    their reduction (area average when finer, bilinear when coarser). The head maps the token grid back
    to the input resolution.

    Args:
        in_widths: channel width of each image feature map, shallowest first.
        level_strides: input pixels per cell of each map (all equal to the patch size for a ViT).
        grid_stride: input pixels per token of the grid the transformer layers work on.
        query_dim: size of ``q`` (0 disables FiLM: the ``none`` prompt mode).
        max_depth: output range is (0, max_depth] metres.
    """

    def __init__(
        self,
        *,
        in_widths: list[int],
        level_strides: list[int],
        grid_stride: int,
        query_dim: int,
        reduce_dim: int,
        heads: int,
        ffn_dim: int,
        layers_per_level: int,
        dropout: float,
        head_strides: list[int],
        head_type: str,
        max_depth: float,
    ) -> None:
        super().__init__()
        self.max_depth = float(max_depth)
        num_levels = len(in_widths)
        self.level_strides = list(level_strides)
        self.grid_stride = int(grid_stride)
        self.reduces = nn.ModuleList(nn.Linear(width, reduce_dim) for width in in_widths)
        self.film_mul = nn.Linear(query_dim, reduce_dim) if query_dim else None
        self.film_add = nn.Linear(query_dim, reduce_dim) if query_dim else None
        self.blocks = nn.ModuleList(
            nn.Sequential(*[
                nn.TransformerEncoderLayer(
                    d_model=reduce_dim, nhead=heads, dim_feedforward=ffn_dim, dropout=dropout,
                    batch_first=True,
                )
                for _ in range(layers_per_level)
            ])
            for _ in range(num_levels)
        )
        self.head = DepthHead(reduce_dim, head_strides, head_type)

    def forward(self, features: list[torch.Tensor], query: torch.Tensor | None) -> torch.Tensor:
        """Depth in metres.

        Args:
            features: per level B×C×h×w maps, shallowest first.
            query: 1×Q or B×Q query vector, or ``None`` when not conditioned.

        Returns:
            B×1×(h·s)×(w·s) depth in (0, max_depth] metres.
        """
        b, _, hc, wc = features[-1].shape
        h = hc * self.level_strides[-1] // self.grid_stride
        w = wc * self.level_strides[-1] // self.grid_stride
        a = None
        for level, (x, reduce, block) in enumerate(
            zip(reversed(features), reversed(self.reduces), reversed(self.blocks), strict=True)
        ):
            tokens = reduce(x.flatten(2).transpose(1, 2).to(reduce.weight.dtype))
            if x.shape[-2:] != (h, w):
                tokens = _resample_tokens(tokens, x.shape[-2:], (h, w))
            a = tokens if a is None else tokens + a
            if level == 0 and self.film_mul is not None:
                if query is None:
                    raise ValueError("this decoder is FiLM-conditioned and needs a query vector")
                q = query.to(a.dtype)
                a = self.film_mul(q).unsqueeze(1) * a + self.film_add(q).unsqueeze(1)
            a = block(a)
        grid = a.transpose(1, 2).reshape(b, -1, h, w)
        logits = self.head(grid)
        # The floor keeps depth strictly positive (log-space losses and metrics) even if sigmoid underflows.
        return self.max_depth * torch.sigmoid(logits.float()).clamp_min(1e-6)


def _resample_tokens(tokens: torch.Tensor, size: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """B×(h·w)×D tokens of an h×w grid → B×(th·tw)×D on the ``target`` grid (area when shrinking)."""
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *size)
    if size[0] >= target[0] and size[1] >= target[1]:
        grid = F.adaptive_avg_pool2d(grid, target)
    else:
        grid = F.interpolate(grid, size=target, mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2)
