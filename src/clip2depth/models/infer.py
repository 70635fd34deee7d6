"""Inference shared by every depth model: size-grouped batches, resize to the network, predict, resize back.

:func:`size_batches` is the one batcher (``model.infer_batch``, ``predict`` and the temporal analysis use it),
:func:`predict_depth` the one resize→predict→resize.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clip2depth.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
"""Inference precisions: fp32, or autocast to bfloat16 / float16 (outputs are always float32)."""

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def plain_attention() -> Iterator[None]:
    """Run ``nn.MultiheadAttention`` without PyTorch's fused fast path (restored on exit).

    The fused kernel is invisible to the FLOP counter and has no ONNX equivalent; the plain path computes
    the same attention through ordinary linear and SDPA operators.
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def model_device(model: nn.Module) -> torch.device:
    """The device a model's tensors live on, read from its first buffer or parameter (CPU if it has none).

    The one place that answers "where do inputs for this model go": every depth model here (CLIP2Depth,
    DepthCLIP, the constant baseline) keeps its normalisation constants as buffers.
    """
    for tensor in model.buffers():
        return tensor.device
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def precision_context(precision: str, device: torch.device | str) -> Iterator[None]:
    """Run the enclosed forward passes in ``precision`` on ``device`` (``fp32``: unchanged).

    ``bf16`` and ``fp16`` use :func:`torch.autocast`, so matrix products run in reduced precision while
    numerically sensitive operations (softmax, normalisation) stay in float32.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}", params=("precision",))
    if precision == "fp32":
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=_AUTOCAST_DTYPES[precision]):
        yield


def network_size(h: int, w: int, patch: int, *, max_side: int | None = None) -> tuple[int, int]:
    """Nearest size that is a multiple of ``patch`` (after shrinking to ``max_side`` if larger)."""
    scale = 1.0
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
    return max(patch, round(h * scale / patch) * patch), max(patch, round(w * scale / patch) * patch)


@torch.no_grad()
def predict_depth(
    model: nn.Module,
    images: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    flip_tta: bool = False,
    precision: str = "fp32",
) -> torch.Tensor:
    """Depth at the images' own size for a model whose input must be a multiple of ``model.patch_size``.

    Args:
        images: B×3×H×W RGB in [0, 1].
        size: network input size (multiple of the patch); default: nearest multiple of the patch.
        max_side: shrink larger images to this longest side before predicting.
        flip_tta: average with the prediction on the horizontally flipped input.
        precision: ``fp32``, ``bf16`` or ``fp16`` (see :func:`precision_context`).

    Returns:
        B×1×H×W depth in metres.
    """
    h, w = images.shape[-2:]
    size = tuple(size) if size is not None else network_size(h, w, model.patch_size, max_side=max_side)
    x = images if size == (h, w) else F.interpolate(
        images, size=size, mode="bilinear", align_corners=False, antialias=True
    )
    with precision_context(precision, images.device):
        depth = model(x).float()
        if flip_tta:
            depth = 0.5 * (depth + model(x.flip(-1)).float().flip(-1))
    if size != (h, w):
        depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
    return depth


T = TypeVar("T")


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 RGB (from :mod:`clip2depth.io.images`) → 3×H×W float32 in [0, 1], the model's input.

    The one conversion from pixels to model input: datasets, ``predict`` and ``model.infer`` all use it.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected H×W×3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous().float().div_(255.0)


def size_batches(
    items: Iterable[T],
    *,
    size: Callable[[T], tuple[int, ...]],
    batch_size: int,
    in_order: bool = False,
    max_held: int | None = None,
) -> Iterator[list[T]]:
    """Group a stream of images into batches of equal ``size(item)``, at most ``batch_size`` each.

    Items are pulled lazily, so a folder of any length streams through.

    - ``in_order=False``: one pool per size; a pool is yielded when full, and when ``max_held`` items
      (default ``4 × batch_size``) are waiting, the oldest pool is yielded early to bound memory. Batches
      come out of input order (callers keep an index).
    - ``in_order=True``: consecutive items of one size form a batch, which ends at a size change, so
      batches (and items) come out in input order (video frames).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limit = max_held if max_held is not None else 4 * batch_size
    pools: dict[tuple[int, ...], list[T]] = {}
    held = 0
    for item in items:
        key = tuple(size(item))
        if in_order and pools and key not in pools:
            yield pools.pop(next(iter(pools)))
            held = 0
        pools.setdefault(key, []).append(item)
        held += 1
        if len(pools[key]) == batch_size:
            held -= batch_size
            yield pools.pop(key)
        elif held >= limit:
            oldest = pools.pop(next(iter(pools)))
            held -= len(oldest)
            yield oldest
    yield from pools.values()


def predict_batch(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    *,
    max_side: int | None = None,
    flip_tta: bool = False,
    precision: str = "fp32",
) -> list[np.ndarray]:
    """Depth of same-size images, predicted as one batch on the model's device.

    Args:
        images: 3×H×W float tensors in [0, 1], all of one size (see :func:`size_batches`).
        max_side, flip_tta, precision: as for :func:`predict_depth`.

    Returns:
        One H×W float32 array of metres per image.
    """
    batch = torch.stack(list(images)).to(model_device(model), dtype=torch.float32)
    depth = predict_depth(model, batch, max_side=max_side, flip_tta=flip_tta, precision=precision)
    return [d[0].cpu().numpy() for d in depth]
