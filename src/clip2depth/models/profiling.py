"""Parameter and FLOP accounting (used by ``clip2depth info`` and the benchmark)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from clip2depth.models.infer import plain_attention
from clip2depth.models.model import Clip2Depth


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts, each shared tensor counted once."""
    trainable = frozen = 0
    for p in module.parameters():
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def parameter_table(model: Clip2Depth) -> dict[str, dict[str, int]]:
    """Per top-level module: trainable and frozen parameter counts."""
    table = {}
    for name, module in model.named_children():
        trainable, frozen = count_parameters(module)
        table[name] = {"trainable": trainable, "frozen": frozen}
    return table


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                        **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# Attention kernels PyTorch's flop counter does not know (the CPU flash kernel, forward and backward) get the
# SDPA formulas.
_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_attention_flops
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
        _cpu_flash_attention_backward_flops
    )


def forward_flops(fn) -> int:
    """FLOPs (multiply-add = 2) of calling ``fn``, attention included: MHA's fused fast path, which the counter
    cannot see, is switched off, and the CPU flash-attention kernel gets the SDPA formula."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    with plain_attention(), counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def count_flops(model: Clip2Depth, height: int, width: int) -> dict[str, float]:
    """GFLOPs (multiply-add = 2 FLOPs) of one image at ``height``×``width``.

    ``per_image`` is what inference costs per image: the image encoder and the decoder; the query is
    image-independent and computed once (``query_once``).
    """
    model.eval()
    x = torch.zeros(1, 3, height, width, device=model.device)
    if not isinstance(model, Clip2Depth):  # baselines: one number for the whole forward pass
        total = forward_flops(lambda: model(x)) / 1e9
        return {"image_encoder": total, "decoder": 0.0, "per_image": total, "query_once": 0.0}
    query_flops = forward_flops(model.prompt_encoder.compute_query)
    features: list[torch.Tensor] = []
    encoder_flops = forward_flops(lambda: features.extend(model.image_encoder(x)))  # counted and kept: one pass
    query = model.query()
    decoder_flops = forward_flops(lambda: model.decoder(features, query))
    return {
        "image_encoder": encoder_flops / 1e9,
        "decoder": decoder_flops / 1e9,
        "per_image": (encoder_flops + decoder_flops) / 1e9,
        "query_once": query_flops / 1e9,
    }
