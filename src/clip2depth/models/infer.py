"""Inference shared by every depth model: pixels to input, size-grouped batches, resize, predict, resize back.

:func:`image_tensor` is the one conversion from pixels to model input, :func:`size_batches` the one batcher
(``model.infer_batch``, ``predict`` and the temporal analysis use it), :func:`predict_depth` the one
resize→predict→resize.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeAlias, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from clip2depth.errors import ConfigError, DataError
from clip2depth.io.images import load_image, to_rgb_uint8

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

ImageLike: TypeAlias = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor
"""An image as a user may hand it over: a file path, a PIL image, an H×W(×C) array or a 3×H×W tensor."""


def image_tensor(image: ImageLike) -> torch.Tensor:
    """Any image → the model's input, a 3×H×W float32 RGB tensor in [0, 1].

    The one conversion from pixels to model input: datasets, ``predict``, ``model.infer``, the web app and
    the analyses all use it, so one picture gives the model the same numbers whichever way it arrives.

    - A file path, PIL image or array follows the reading rule of :func:`clip2depth.io.images.to_rgb_uint8`
      (EXIF orientation, 16-bit scaled, alpha dropped, float arrays taken as 0..1 and rounded to 8 bits)
      and becomes H×W×3 uint8, which is divided by 255.
    - A tensor is channels-first, 3×H×W: uint8 is divided by 255 exactly as above; a float tensor is
      taken as already in [0, 1] (checked) and only cast to float32.

    Raises:
        DataError: a missing or unreadable file, an array or tensor that is not an image, float values
            outside [0, 1].
    """
    if isinstance(image, torch.Tensor):
        return _tensor_input(image)
    if isinstance(image, (str, os.PathLike)):
        rgb = load_image(image)
    elif isinstance(image, (Image.Image, np.ndarray)):
        rgb = to_rgb_uint8(image)
    else:
        raise DataError(
            f"cannot read an image from {type(image).__name__}; pass a file path, a PIL image, a numpy array "
            "or a 3×H×W tensor"
        )
    return _tensor_input(torch.from_numpy(rgb).permute(2, 0, 1))


def _tensor_input(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.dim() != 3 or t.shape[0] != 3:
        raise DataError(f"a tensor image must be 3×H×W (channels first), got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float().div_(255.0).contiguous()
    if not t.is_floating_point():
        raise DataError(f"a tensor image must be uint8 (0..255) or float in [0, 1], got {t.dtype}")
    t = t.float()
    if t.numel() and not (bool(torch.isfinite(t).all()) and float(t.min()) >= 0.0 and float(t.max()) <= 1.0):
        raise DataError(
            f"a float tensor image must hold values in [0, 1], got [{float(t.min()):g}, {float(t.max()):g}]; "
            "divide 8-bit values by 255"
        )
    return t.contiguous()


def size_batches(
    items: Iterable[T],
    *,
    size: Callable[[T], tuple[int, ...]],
    batch_size: int,
    in_order: bool = False,
) -> Iterator[list[T]]:
    """Group a stream of images into batches of equal ``size(item)``, at most ``batch_size`` each.

    Items are pulled lazily, so a folder of any length streams through.

    - ``in_order=False``: one pool per size; a pool is yielded when full, and when ``4 × batch_size``
      items are waiting, the oldest pool is yielded early to bound memory. Batches come out of input
      order (callers keep an index).
    - ``in_order=True``: consecutive items of one size form a batch, which ends at a size change, so
      batches (and items) come out in input order (video frames).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limit = 4 * batch_size
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
