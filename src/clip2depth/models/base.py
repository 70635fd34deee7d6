"""What every depth model here shares: the user-facing ``infer`` / ``infer_batch``, ``device``, ``patch_size``
and ``processing_size``.

:class:`~clip2depth.models.model.Clip2Depth`, :class:`~clip2depth.models.depthclip.DepthCLIP` and the
constant baseline derive from :class:`DepthModel`, so none of them borrows from another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from clip2depth.models.infer import ImageLike, check_scale, image_tensor, model_device, predict_batch, size_batches


class DepthModel(nn.Module):
    """A metric depth model: ``forward`` maps B×3×H×W RGB in [0, 1] to B×1×H×W metres.

    Subclasses provide ``forward``, :attr:`patch_size` (``forward`` needs H and W to be multiples of it) and
    :attr:`processing_size`; ``infer`` and ``infer_batch`` take images of any size, predict them at the
    model's own scale and hand back depth at the input's size.
    """

    @property
    def patch_size(self) -> int:
        """Input height and width must be multiples of this many pixels."""
        raise NotImplementedError

    @property
    def processing_size(self) -> tuple[int, int] | None:
        """(H, W) of the model's own scale: by default images are predicted at this pixel count, aspect kept
        (:func:`clip2depth.models.infer.network_size`); None: at their own size."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the model's tensors (and so its inputs) live."""
        return model_device(self)

    @torch.no_grad()
    def infer_batch(
        self,
        images: Sequence[ImageLike],
        *,
        max_side: int | None = None,
        size: tuple[int, int] | None = None,
        native: bool = False,
        flip_tta: bool = False,
        precision: str = "fp32",
        batch_size: int = 8,
    ) -> list[np.ndarray]:
        """Depth for several images of any sizes (same-size images share a batch of up to ``batch_size``).

        Args:
            images: image file paths, PIL images, arrays (H×W, H×W×3 or H×W×4; uint8, uint16 or float
                in [0, 1]) or 3×H×W tensors (uint8, or float in [0, 1]), converted by
                :func:`clip2depth.models.infer.image_tensor`: files, PIL images and arrays follow the one
                reading rule of :func:`clip2depth.io.images.to_rgb_uint8` (EXIF orientation, 16-bit
                scaled, alpha dropped, palette converted), so they give the pixels ``predict`` and the
                datasets give.
            max_side, size, native: at most one. None of them: each image is predicted at the model's own
                scale (:attr:`processing_size`: its pixel count, the image's aspect kept, sides rounded to
                the patch size; larger images are scaled down, smaller ones up). ``max_side``: only images
                whose longer side exceeds it are scaled down, to it. ``size``: predicted at this (H, W),
                rounded to the patch size. ``native``: at the image's own size, rounded to the patch size.
            flip_tta: average with the prediction on the horizontally flipped image.
            precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; outputs stay float32).
            batch_size: most images predicted together.

        Returns:
            One H×W float32 array of metres per input, at the input's own (upright) size.

        Raises:
            DataError: a file is missing or unreadable, or an array or tensor is not an image.
            ConfigError: more than one of ``max_side``, ``size``, ``native``, or a side below 1.
        """
        check_scale(max_side=max_side, size=size, native=native)
        was_training = self.training
        self.eval()
        try:
            tensors = [image_tensor(im) for im in images]
            results: list[np.ndarray] = [np.empty(0, np.float32)] * len(tensors)
            for batch in size_batches(enumerate(tensors), size=lambda item: item[1].shape, batch_size=batch_size):
                depths = predict_batch(self, [t for _, t in batch], max_side=max_side, size=size, native=native,
                                       flip_tta=flip_tta, precision=precision)
                for (i, _), depth in zip(batch, depths, strict=True):
                    results[i] = depth
        finally:
            self.train(was_training)
        return results

    @torch.no_grad()
    def infer(
        self,
        image: ImageLike,
        *,
        max_side: int | None = None,
        size: tuple[int, int] | None = None,
        native: bool = False,
        flip_tta: bool = False,
        precision: str = "fp32",
    ) -> np.ndarray:
        """Depth of one image (path, PIL image, array or 3×H×W tensor), H×W float32 metres at its size, predicted
        at the model's own scale unless ``max_side``, ``size`` or ``native`` says otherwise (see
        :meth:`infer_batch`)."""
        return self.infer_batch([image], max_side=max_side, size=size, native=native, flip_tta=flip_tta,
                                precision=precision)[0]
