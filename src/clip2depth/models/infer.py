"""Inference shared by every depth model: pixels to input, size-grouped batches, resize, predict, resize back.

:func:`image_tensor` is the one conversion from pixels to model input, :func:`size_batches` the one batcher
(``model.infer_batch``, ``predict`` and the temporal analysis use it), :func:`predict_depth` the one
resize→predict→resize.
"""

from __future__ import annotations

import math
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


def check_scale(*, max_side: int | None = None, size: Sequence[int] | None = None, native: bool = False) -> None:
    """Refuse a processing-scale choice that cannot work: more than one of ``max_side``, ``size`` and ``native``,
    or a side below one pixel.

    Raises:
        ConfigError: naming the values (and, through ``params``, the flags) to change.
    """
    chosen = [name for name, given in (("max_side", max_side is not None), ("size", size is not None),
                                       ("native", native)) if given]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} exclude each other: choose one way to set the processing size "
                          "(or none, for the model's own scale)", params=tuple(chosen))
    if max_side is not None and (not _is_whole(max_side) or max_side < 1):
        raise ConfigError(f"max_side={max_side!r} must be a positive whole number of pixels", params=("max_side",))
    if size is not None and (isinstance(size, str) or not isinstance(size, Sequence) or len(size) != 2
                             or not all(_is_whole(side) and side >= 1 for side in size)):
        raise ConfigError(f"size={size!r} must be (height, width), two whole numbers of pixels of at least 1",
                          params=("size",))


def _is_whole(value: object) -> bool:
    """An int (numpy's too), not a bool or a float: a pixel count."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def network_size(
    h: int,
    w: int,
    patch: int,
    *,
    model_size: Sequence[int] | None = None,
    max_side: int | None = None,
    size: Sequence[int] | None = None,
    native: bool = False,
) -> tuple[int, int]:
    """The size an ``h``×``w`` image is predicted at: the one rule of every prediction path.

    By default (none of ``max_side``, ``size``, ``native``) the image is scaled, up or down, to the pixel count
    of ``model_size`` (the model's own scale, e.g. 480×640 for a model trained and evaluated on NYU), its
    aspect kept. ``max_side`` only shrinks an image whose longer side exceeds it to that side; ``size`` is
    the network size itself; ``native`` keeps the image's own size (as does ``model_size=None``). In every
    case each side is then rounded to the nearest multiple of ``patch`` (at least one patch).

    Raises:
        ConfigError: more than one of ``max_side``, ``size``, ``native``, or a side below 1 (see
            :func:`check_scale`).
    """
    check_scale(max_side=max_side, size=size, native=native)
    if size is not None:
        th, tw = float(size[0]), float(size[1])
    else:
        scale = 1.0
        if max_side is not None:
            scale = min(1.0, max_side / max(h, w))
        elif not native and model_size is not None:
            scale = math.sqrt(model_size[0] * model_size[1] / (h * w))
        th, tw = h * scale, w * scale
    return max(patch, round(th / patch) * patch), max(patch, round(tw / patch) * patch)


def model_network_size(
    model: nn.Module,
    h: int,
    w: int,
    *,
    max_side: int | None = None,
    size: Sequence[int] | None = None,
    native: bool = False,
) -> tuple[int, int]:
    """:func:`network_size` for ``model``: its ``patch_size``, and its ``processing_size`` when neither
    ``max_side``, ``size`` nor ``native`` is given."""
    default = max_side is None and size is None and not native
    return network_size(h, w, model.patch_size, model_size=model.processing_size if default else None,
                        max_side=max_side, size=size, native=native)


@torch.no_grad()
def predict_depth(
    model: nn.Module,
    images: torch.Tensor,
    *,
    max_side: int | None = None,
    size: Sequence[int] | None = None,
    native: bool = False,
    flip_tta: bool = False,
    precision: str = "fp32",
) -> torch.Tensor:
    """Depth at the images' own size, predicted at the size :func:`network_size` chooses.

    Args:
        model: a depth model (its ``patch_size`` and, unless ``native``, ``size`` or ``max_side`` is given,
            its ``processing_size``; see :class:`~clip2depth.models.base.DepthModel`).
        images: B×3×H×W RGB in [0, 1].
        max_side, size, native: at most one; none predicts at the model's own scale (see :func:`network_size`).
        flip_tta: average with the prediction on the horizontally flipped input.
        precision: ``fp32``, ``bf16`` or ``fp16`` (see :func:`precision_context`).

    Returns:
        B×1×H×W depth in metres.
    """
    h, w = images.shape[-2:]
    net = model_network_size(model, h, w, max_side=max_side, size=size, native=native)
    x = images if net == (h, w) else F.interpolate(
        images, size=net, mode="bilinear", align_corners=False, antialias=True
    )
    with precision_context(precision, images.device):
        depth = model(x).float()
        if flip_tta:
            depth = 0.5 * (depth + model(x.flip(-1)).float().flip(-1))
    if net != (h, w):
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
    size: Sequence[int] | None = None,
    native: bool = False,
    flip_tta: bool = False,
    precision: str = "fp32",
) -> list[np.ndarray]:
    """Depth of same-size images, predicted as one batch on the model's device.

    Args:
        images: 3×H×W float tensors in [0, 1], all of one size (see :func:`size_batches`).
        max_side, size, native, flip_tta, precision: as for :func:`predict_depth`.

    Returns:
        One H×W float32 array of metres per image.
    """
    batch = torch.stack(list(images)).to(model_device(model), dtype=torch.float32)
    depth = predict_depth(model, batch, max_side=max_side, size=size, native=native, flip_tta=flip_tta,
                          precision=precision)
    return [d[0].cpu().numpy() for d in depth]
