"""Frozen CLIP image encoder that returns patch maps of chosen blocks and runs nothing more."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clip2depth.errors import ConfigError


def _sdpa_ready(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's plain self-attention block, which :func:`run_block` may compute itself.

    A block with forward hooks (someone inspecting it) is called as a module, so that its hooks run.
    """
    attn = getattr(block, "attn", None)
    return (
        not (block._forward_hooks or block._forward_pre_hooks)
        and all(hasattr(block, name) for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
        and not hasattr(block, "ln_1_kv")
        and isinstance(attn, nn.MultiheadAttention)
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and not attn.add_zero_attn
    )


def run_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock`` on B×N×width tokens, attention through ``scaled_dot_product_attention``.

    The same computation as ``block(x)`` (within float rounding), in 0.81 to 0.88 of the CPU time of
    ``nn.MultiheadAttention``'s fused fast path for ViT-B/16 at 480×640 (BENCHMARKS.md "Speed-ups tried"),
    and visible to the FLOP counter. Under tracing (ONNX export) and for other block types the block runs itself.
    """
    if torch.jit.is_tracing() or not _sdpa_ready(block):
        return block(x)
    attn = block.attn
    b, n, e = x.shape
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, e)
    x = x + block.ls_1(attn.out_proj(y))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class FrozenImageEncoder(nn.Module):
    """Patch features of selected blocks of an open_clip ``VisionTransformer``.

    Blocks after the deepest used one, ``ln_post`` and the projection never run. Inputs of any size
    that is a multiple of the patch size work: the positional embedding is resized bicubically from
    the pretrained grid once per grid size and cached.

    Args:
        visual: open_clip ``VisionTransformer`` (its parameters are frozen here).
        blocks: 1-based block numbers whose outputs are returned (``[3, 6, 9]``).
        mean, std: the weights' preprocessing constants (per RGB channel).
        trainable_blocks: the last ``k`` of the blocks that run keep gradients (fine-tuning ablation).
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
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise ConfigError(
                f"{type(visual).__name__} is not a ViT image tower; CLIP2Depth needs a ViT CLIP "
                "(ResNet CLIPs serve only the DepthCLIP baseline)"
            )
        depth = len(visual.transformer.resblocks)
        if max(blocks) > depth:
            raise ConfigError(f"blocks {blocks} exceed the {depth} blocks of this CLIP image encoder")
        self.visual = visual
        self.indices = [b - 1 for b in blocks]
        self.num_run = max(blocks)
        self.trainable_blocks = trainable_blocks
        self.patch_size = int(visual.patch_size[0])
        self.width = int(visual.conv1.out_channels)
        self.pretrained_grid = tuple(int(g) for g in visual.grid_size)
        self.widths = [self.width] * len(blocks)  # per level, as the decoder takes them from any tower
        self.strides = [self.patch_size] * len(blocks)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

        for p in self.visual.parameters():
            p.requires_grad_(False)
        first_trainable = self.num_run - trainable_blocks
        for block in self.visual.transformer.resblocks[first_trainable : self.num_run]:
            for p in block.parameters():
                p.requires_grad_(True)
        self.visual.eval()

    def train(self, mode: bool = True) -> FrozenImageEncoder:
        # CLIP stays in eval mode (dropout, patch dropout off) whatever the outer model does.
        super().train(mode)
        self.visual.eval()
        return self

    def resize_positional_embedding(self, grid: tuple[Any, Any]) -> torch.Tensor:
        """The pretrained (1 + gh0*gw0)×width positional embedding resized bicubically to ``grid``, uncached.

        The one resize of the package. Under tracing (ONNX export) ``grid`` holds traced sizes, so the
        resize target follows the input shape; at the pretrained grid bicubic resizing is the identity.
        """
        pos = self.visual.positional_embedding.detach()
        gh0, gw0 = self.pretrained_grid
        patch_pos = pos[1:].float().reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        patch_pos = patch_pos.flatten(2).transpose(1, 2)[0]
        return torch.cat([pos[:1].float(), patch_pos], dim=0)

    def positional_embedding(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """(1 + gh*gw)×width positional embedding for a ``grid`` of patches.

        Eagerly it is cached per grid size (and the pretrained grid is used as stored); while tracing
        it is always recomputed, so an exported graph resizes for whatever grid arrives at run time.
        """
        if torch.jit.is_tracing():
            return self.resize_positional_embedding(grid).to(like.dtype)
        key = (grid, like.device, like.dtype)
        cached = self._pos_cache.get(key)
        if cached is None:
            pos = self.visual.positional_embedding.detach()
            if grid != self.pretrained_grid:
                pos = self.resize_positional_embedding(grid)
            cached = self._pos_cache[key] = pos.to(device=like.device, dtype=like.dtype)
        return cached

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Patch maps of the configured blocks.

        Args:
            images: B×3×H×W RGB in [0, 1]; H and W multiples of the patch size.

        Returns:
            One B×width×(H/p)×(W/p) tensor per configured block, shallowest first.
        """
        b, _, h, w = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {p}")
        grid = (h // p, w // p)
        frozen_part = self.num_run - self.trainable_blocks
        visual = self.visual
        blocks = visual.transformer.resblocks
        outputs: list[torch.Tensor] = []

        ctx = torch.no_grad() if frozen_part > 0 else contextlib.nullcontext()
        with ctx:
            x = self.normalize(images).to(visual.conv1.weight.dtype)
            x = visual.conv1(x).flatten(2).transpose(1, 2)  # B × N × width
            cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, -1, -1)
            x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid, x)
            x = visual.ln_pre(x)
            if not visual.transformer.batch_first:
                x = x.transpose(0, 1)
            for i in range(frozen_part):
                x = run_block(blocks[i], x)
                if i in self.indices:
                    outputs.append(x)
        for i in range(frozen_part, self.num_run):
            x = run_block(blocks[i], x)
            if i in self.indices:
                outputs.append(x)

        maps = []
        for y in outputs:
            if not visual.transformer.batch_first:
                y = y.transpose(0, 1)
            maps.append(y[:, 1:].reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous())
        return maps
