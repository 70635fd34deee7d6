"""ONNX export of a CLIP2Depth model: one graph from an RGB image of any size to metric depth.

The graph has one input and one output:

- ``image``: B×3×H×W float32 RGB in [0, 1], any H and W. Inside the graph the image is resized
  (bilinear) to the nearest multiple of the patch size, normalised with the CLIP weights' mean/std,
  and the depth is resized back, as ``model.infer`` does; the one difference is that ONNX ``Resize``
  from PyTorch's TorchScript exporter has no antialiasing, so at sizes that are not patch multiples
  the graph's input resize is plain bilinear (at most half a patch of change per side).
- ``depth``: B×1×H×W float32 depth in metres, in (0, max_depth].

The query ``q`` is image-independent, so it is computed once (eval mode) and baked into the graph
as a constant: the mirror and the whole text encoder are absent from the file. The file's metadata
(``metadata_props``) records the preset, max depth, patch size, the model's own scale (``train_size``),
mean/std, input layout and units.

Exporter choice. PyTorch has two ONNX exporters. The TorchScript one (``dynamo=False``) is used
because it needs nothing beyond ``onnx``: the dynamo exporter also needs ``onnxscript``, which the
``clip2depth[onnx]`` extra does not install. Two parts of the model need an export-friendly path:

1. ``nn.MultiheadAttention`` (CLIP's blocks and the decoder's layers) reshapes with the sequence
   length read once from the input shape, which the exporter folds into a constant
   (pytorch/pytorch#120075, #122321). The graph is traced from a structural copy of the image
   encoder and decoder (sharing their tensors) in which each attention module is replaced by
   :class:`TraceableAttention`, the same computation with ``-1`` reshapes; the live model is never
   modified.
2. The positional embedding: the image encoder recomputes it while tracing
   (:meth:`~clip2depth.models.image_encoder.FrozenImageEncoder.positional_embedding`), so ONNX
   ``Resize`` (bicubic, half-pixel) produces it for whatever grid arrives at run time.

:func:`verify_onnx` compares onnxruntime with the same computation in PyTorch at several sizes;
``clip2depth export`` runs it by default, including a size that is not a multiple of the patch.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clip2depth.errors import Clip2DepthError, ConfigError
from clip2depth.io.atomic import atomic_path
from clip2depth.models.infer import plain_attention
from clip2depth.models.model import Clip2Depth

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "depth"
MIN_OPSET = 17  # LayerNormalization is an ONNX operator from opset 17 on
MAX_OPSET = 20  # the newest opset PyTorch's TorchScript exporter writes (checked 17 to 20)
_DYNAMIC_AXES = {
    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
    OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
}


def require_onnx() -> tuple[Any, Any]:
    """Import ``onnx`` and ``onnxruntime`` or raise one error that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise Clip2DepthError(
            f"ONNX export and verification need the onnx and onnxruntime packages ({exc}); "
            "install them with: pip install 'clip2depth[onnx]'"
        ) from exc
    return onnx, onnxruntime


def _patch_multiple(n: Any, patch: int) -> Any:
    """Nearest positive multiple of ``patch``; ``n`` is an int eagerly and a traced size under export."""
    if isinstance(n, torch.Tensor):
        return torch.clamp(torch.round(n / patch) * patch, min=patch).to(torch.int64)
    return max(patch, round(n / patch) * patch)


class DepthGraph(nn.Module):
    """What the exported graph computes: resize, ``decoder(image_encoder(x), q)``, resize back.

    Args:
        model: the model to export; its image encoder and decoder are shared, not copied.
        query: 1×Q query computed once from the model, or ``None`` for prompt mode ``none``.
    """

    def __init__(self, model: Clip2Depth, query: torch.Tensor | None) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.decoder = model.decoder
        self.patch_size = model.patch_size
        self.register_buffer("query", None if query is None else query.detach().clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """B×3×H×W RGB in [0, 1], any H and W → B×1×H×W float32 depth in metres."""
        h, w = image.shape[-2:]
        size = (_patch_multiple(h, self.patch_size), _patch_multiple(w, self.patch_size))
        x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        x = x.to(self.image_encoder.mean.dtype)
        depth = self.decoder(self.image_encoder(x), self.query).float()
        return F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)


class TraceableAttention(nn.Module):
    """``nn.MultiheadAttention``'s eval-mode self-attention with dynamic sequence length under tracing.

    Shares the wrapped module's parameters; same call signature (attention weights are not returned).
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise Clip2DepthError(
                "ONNX export supports batch-first nn.MultiheadAttention with packed projections only; "
                "this CLIP or decoder uses another variant"
            )
        self.mha = mha
        self.batch_first = True
        self.num_heads = mha.num_heads

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """B×N×E → (B×N×E, None); the reshapes use ``-1`` for N so that it stays dynamic in ONNX."""
        if not (query is key is value) or key_padding_mask is not None or attn_mask is not None or is_causal:
            raise Clip2DepthError("ONNX export supports unmasked self-attention only; this model uses masks")
        mha = self.mha
        b = query.shape[0]
        heads, head_dim = mha.num_heads, mha.head_dim
        qkv = F.linear(query, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.reshape(b, -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax((q * (1.0 / math.sqrt(head_dim))) @ k.transpose(-2, -1), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, -1, mha.embed_dim)
        return mha.out_proj(out), None


def export_graph(model: Clip2Depth, *, fp16: bool = False) -> DepthGraph:
    """The module that is traced: a copy of the graph structure with :class:`TraceableAttention`.

    The copy shares the model's tensors (``fp16=False``) or holds half-precision copies of them
    (``fp16=True``; input and output stay float32). The model itself is not modified.
    """
    graph = DepthGraph(model, model.query())
    shared = {} if fp16 else {id(t): t for t in itertools.chain(graph.parameters(), graph.buffers())}
    graph = copy.deepcopy(graph, shared)
    for module in list(graph.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, TraceableAttention(child))
    if fp16:
        graph.half()
    return graph.eval()


def metadata(model: Clip2Depth, *, fp16: bool) -> dict[str, str]:
    """What a user of the ``.onnx`` file needs to know, stored as ONNX ``metadata_props``."""
    encoder = model.image_encoder
    return {
        "producer": "clip2depth",
        "preset": model.config.name,
        "clip_model": model.config.clip_model,
        "clip_weights": str(model.clip_weights),
        "max_depth": repr(model.max_depth),
        "patch_size": str(model.patch_size),
        # the model's own scale: resize an image to this pixel count (aspect kept) before the graph, as infer does
        "train_size": json.dumps(list(model.processing_size)),
        "mean": json.dumps([round(float(v), 8) for v in encoder.mean.flatten()]),
        "std": json.dumps([round(float(v), 8) for v in encoder.std.flatten()]),
        "input": f"{INPUT_NAME}: float32 Bx3xHxW RGB in [0, 1], any H and W (normalised inside the graph)",
        "output": f"{OUTPUT_NAME}: float32 Bx1xHxW depth at the input size",
        "units": "metres",
        "precision": "fp16" if fp16 else "fp32",
    }


def check_size(model: Clip2Depth, size: Sequence[int], what: str = "size") -> tuple[int, int]:
    """``size`` as (H, W) ints, or a :class:`ConfigError` naming ``what`` unless both are multiples of the patch."""
    if len(size) != 2:
        raise ConfigError(f"{what} must be (height, width), got {tuple(size)}")
    h, w = (int(s) for s in size)
    p = model.patch_size
    if h < p or w < p or h % p or w % p:
        raise ConfigError(f"{what} {h}x{w}: height and width must be positive multiples of the patch size {p}")
    return h, w


def check_any_size(size: Sequence[int], what: str = "size") -> tuple[int, int]:
    """``size`` as (H, W) positive ints, or a :class:`ConfigError` naming ``what``."""
    if len(size) != 2:
        raise ConfigError(f"{what} must be (height, width), got {tuple(size)}")
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ConfigError(f"{what} {h}x{w}: height and width must be positive")
    return h, w


def default_sizes(model: Clip2Depth) -> list[tuple[int, int]]:
    """Two patch-multiple sizes (14×20, 22×30 patches: 224×320 and 352×480 for 16-px) and an odd one.

    The odd size (6.25×8.125 patches: 100×130 for 16-px) exercises the in-graph resize to a patch
    multiple and back.
    """
    p = model.patch_size
    return [(14 * p, 20 * p), (22 * p, 30 * p), (round(6.25 * p), round(8.125 * p))]


def export_onnx(
    model: Clip2Depth,
    path: str | Path,
    *,
    opset: int = MIN_OPSET,
    sample_size: tuple[int, int] | None = None,
    fp16: bool = False,
) -> None:
    """Write ``model`` as an ONNX graph ``image`` (B×3×H×W RGB in [0, 1]) → ``depth`` (B×1×H×W metres).

    Batch, height and width are dynamic and any height and width work (the depth comes back at the
    input size). The query ``q`` is computed once in eval mode and stored in the graph as a
    constant, so later changes to the model's mirror do not affect the file. The file carries
    :func:`metadata` and is written atomically.

    Args:
        model: the model to export (left in the train/eval mode it had).
        path: the ``.onnx`` file to write.
        opset: ONNX opset, 17 to 20.
        sample_size: (H, W) of the example input traced (default: the first of
            :func:`default_sizes`, a patch multiple); the graph works at every size whichever is traced.
        fp16: store weights and compute in float16 (about half the file size); input and output
            stay float32.

    Raises:
        Clip2DepthError: onnx or onnxruntime are not installed, or the model cannot be exported.
        ConfigError: a bad ``opset`` or ``sample_size``.
    """
    if not isinstance(model, Clip2Depth):
        raise ConfigError(
            f"ONNX export supports CLIP2Depth models, not {type(model).__name__}; pass a preset or trained model"
        )
    onnx, _ = require_onnx()
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"opset={opset} is not supported: use {MIN_OPSET} to {MAX_OPSET} (the graph needs LayerNormalization, "
            f"opset >= {MIN_OPSET}; PyTorch's TorchScript exporter writes at most {MAX_OPSET})", params=("opset",)
        )
    h, w = check_size(model, sample_size or default_sizes(model)[0], "sample_size")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            graph = export_graph(model, fp16=fp16)
            sample = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(model.device)
            with plain_attention(), warnings.catch_warnings(), atomic_path(path) as tmp:
                # Tracer warnings flag Python-side shape checks (e.g. "size is a multiple of the patch
                # size") that are constant for a valid input; the legacy exporter's deprecation
                # notices are about the choice documented in this module's docstring.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
                torch.onnx.export(
                    graph,
                    (sample,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=_DYNAMIC_AXES,
                    do_constant_folding=True,
                )
                proto = onnx.load(str(tmp))
                onnx.helper.set_model_props(proto, metadata(model, fp16=fp16))
                onnx.save(proto, str(tmp))
                onnx.checker.check_model(str(tmp))
    except OSError as exc:
        raise Clip2DepthError(f"cannot write {path}: {exc}") from exc
    except (RuntimeError, ValueError, torch.onnx.errors.OnnxExporterError, onnx.checker.ValidationError) as exc:
        raise Clip2DepthError(f"ONNX export of {model.config.name} (opset {opset}) failed: {exc}") from exc
    finally:
        model.train(was_training)
    logger.info("wrote %s (opset %d, %s, dynamic batch/height/width)", path, opset, "fp16" if fp16 else "fp32")


def verify_onnx(
    model: Clip2Depth,
    path: str | Path,
    sizes: Sequence[tuple[int, int]],
    *,
    batch: int = 1,
    seed: int = 0,
) -> dict[tuple[int, int], float]:
    """Run the ONNX file in onnxruntime (CPU) and :class:`DepthGraph` in PyTorch (float32) on the same images.

    Args:
        model: the PyTorch model to compare with (its current query is used).
        path: an ONNX file written by :func:`export_onnx`.
        sizes: (H, W) input sizes to try, any positive sizes.
        batch: images per run.
        seed: seeds the random test images.

    Returns:
        For each size, the largest element-wise relative error ``|onnx − torch| / torch`` (depth is
        strictly positive, so the ratio is always defined).
    """
    _, ort = require_onnx()
    path = Path(path)
    if not path.is_file():
        raise Clip2DepthError(f"{path}: no such ONNX file; write it with export_onnx first")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: fp16 graphs log harmless "cannot constant-fold" warnings
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    errors: dict[tuple[int, int], float] = {}
    try:
        with torch.no_grad():
            reference = DepthGraph(model, model.query()).eval()
        for size in sizes:
            h, w = check_any_size(size, "check size")
            images = torch.rand(batch, 3, h, w, generator=generator)
            with torch.no_grad():
                expected = reference(images.to(model.device)).cpu().numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
            if got.shape != expected.shape:
                raise Clip2DepthError(
                    f"{path}: ONNX output has shape {got.shape} at input {batch}x3x{h}x{w}, expected {expected.shape}"
                )
            errors[(h, w)] = float(np.max(np.abs(got - expected) / np.abs(expected)))
    finally:
        model.train(was_training)
    return errors

