"""ONNX export of a CLIP2Depth model: one graph from an RGB image to metric depth.

The graph has one input and one output:

- ``image``: B×3×H×W float32 RGB in [0, 1] (normalisation with the CLIP weights' mean/std happens
  inside the graph). B, H and W are dynamic; H and W must be multiples of the CLIP patch size
  (16 for ViT-B/16, 14 for ViT-L/14), as for the PyTorch model.
- ``depth``: B×1×H×W float32 depth in metres, in (0, max_depth].

The query ``q`` is image-independent, so it is computed once (eval mode) and baked into the graph
as a constant: the mirror and the whole text encoder are absent from the file.

Exporter choice. PyTorch has two ONNX exporters. The TorchScript one (``dynamo=False``) is used
because it needs nothing beyond ``onnx``: the dynamo exporter also needs ``onnxscript``, which the
``clip2depth[onnx]`` extra does not install, so it is neither required nor tried. Left alone, the
TorchScript exporter gets two things wrong for this model; both are fixed for the duration of the
export by :func:`_exportable`, and the result matches PyTorch to ~2e-7 relative error at sizes other
than the traced one (tests/test_export.py):

1. ``nn.MultiheadAttention`` (CLIP's blocks and the decoder's layers): its Python code reshapes with
   the sequence length read once from the input shape, which the exporter folds into a constant, so
   the graph only runs at the sample size (pytorch/pytorch#120075, #122321). Each attention module is
   run through an equivalent formulation that reshapes with ``-1`` instead.
2. The positional embedding: :class:`~clip2depth.models.image_encoder.FrozenImageEncoder` resizes it
   once per grid size and caches the result in Python, and skips the resize at the pretrained grid;
   a trace would record either as a constant of the sample size. During export the resize always
   runs, from the pretrained grid, with a target size computed from the input shape, so ONNX
   ``Resize`` (bicubic, half-pixel) produces the embedding for whatever grid arrives at run time.

:func:`verify_onnx` compares onnxruntime with PyTorch at several sizes; ``clip2depth export`` runs it
by default.
"""

from __future__ import annotations

import logging
import math
import types
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clip2depth.errors import Clip2DepthError, ConfigError
from clip2depth.io.atomic import atomic_path
from clip2depth.models.clip2depth import Clip2Depth
from clip2depth.models.image_encoder import FrozenImageEncoder
from clip2depth.models.infer import plain_attention

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "depth"
MIN_OPSET = 17  # LayerNormalization is an ONNX operator from opset 17 on
MAX_OPSET = 20  # the newest opset PyTorch's TorchScript exporter writes (checked 17 to 20)
_DYNAMIC_AXES = {
    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
    OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
}


def _require_onnx() -> tuple[Any, Any]:
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


class DepthGraph(nn.Module):
    """What the exported graph computes: ``decoder(image_encoder(image), q)`` with ``q`` a constant.

    Args:
        model: the model to export; its image encoder and decoder are shared, not copied.
        query: 1×Q query computed once from the model, or ``None`` for prompt mode ``none``.
    """

    def __init__(self, model: Clip2Depth, query: torch.Tensor | None) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.decoder = model.decoder
        self.register_buffer("query", None if query is None else query.detach().clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """B×3×H×W RGB in [0, 1] → B×1×H×W depth in metres."""
        return self.decoder(self.image_encoder(image), self.query)


def _resized_positional_embedding(
    encoder: FrozenImageEncoder, grid: tuple[Any, Any], like: torch.Tensor
) -> torch.Tensor:
    """The encoder's positional embedding resized from the pretrained grid to ``grid``, uncached.

    Under tracing ``grid`` holds traced sizes, so the resize target follows the input shape. The
    resize also runs at the pretrained grid, where bicubic at scale 1 is the identity.
    """
    pos = encoder.visual.positional_embedding
    gh0, gw0 = encoder.pretrained_grid
    patch_pos = pos[1:].float().reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.flatten(2).transpose(1, 2)[0]
    return torch.cat([pos[:1].float(), patch_pos], dim=0).to(like.dtype)


def _self_attention(
    mha: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, None]:
    """``nn.MultiheadAttention.forward`` for unmasked batch-first self-attention, trace-friendly.

    Same parameters and result as the module's eval-mode forward (attention weights are not
    returned); the reshapes use ``-1`` for the sequence length so that it stays dynamic in ONNX.
    """
    if not (query is key is value) or key_padding_mask is not None or attn_mask is not None or is_causal:
        raise Clip2DepthError("ONNX export supports unmasked self-attention only; this model uses masks")
    b = query.shape[0]
    heads, head_dim = mha.num_heads, mha.head_dim
    qkv = F.linear(query, mha.in_proj_weight, mha.in_proj_bias)
    q, k, v = qkv.reshape(b, -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    weights = torch.softmax((q * (1.0 / math.sqrt(head_dim))) @ k.transpose(-2, -1), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, -1, mha.embed_dim)
    return mha.out_proj(out), None


def _check_attention(mha: nn.MultiheadAttention) -> None:
    if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
        raise Clip2DepthError(
            "ONNX export supports batch-first nn.MultiheadAttention with packed projections only; "
            "this CLIP or decoder uses another variant"
        )


@contextmanager
def _exportable(graph: DepthGraph) -> Iterator[None]:
    """Make ``graph`` traceable with dynamic sizes; everything is restored on exit.

    Disables PyTorch's fused attention fast path (no ONNX equivalent), runs every attention module
    through :func:`_self_attention` and the positional embedding through
    :func:`_resized_positional_embedding` (see the module docstring for why).
    """
    attentions = [m for m in graph.modules() if isinstance(m, nn.MultiheadAttention)]
    for mha in attentions:
        _check_attention(mha)
    encoder = graph.image_encoder
    with plain_attention():
        try:
            # Instance attributes shadow the class methods; deleting them restores the originals.
            for mha in attentions:
                mha.forward = types.MethodType(_self_attention, mha)
            encoder.positional_embedding = types.MethodType(_resized_positional_embedding, encoder)
            yield
        finally:
            with suppress(AttributeError):
                del encoder.positional_embedding
            for mha in attentions:
                with suppress(AttributeError):
                    del mha.forward


def check_size(model: Clip2Depth, size: Sequence[int], what: str = "size") -> tuple[int, int]:
    """``size`` as (H, W) ints, or a :class:`ConfigError` naming ``what`` unless both are multiples of the patch."""
    if len(size) != 2:
        raise ConfigError(f"{what} must be (height, width), got {tuple(size)}")
    h, w = (int(s) for s in size)
    p = model.patch_size
    if h < p or w < p or h % p or w % p:
        raise ConfigError(f"{what} {h}x{w}: height and width must be positive multiples of the patch size {p}")
    return h, w


def default_sizes(model: Clip2Depth) -> list[tuple[int, int]]:
    """Two (H, W) sizes of 14×20 and 22×30 patches (224×320 and 352×480 for 16-px patches)."""
    p = model.patch_size
    return [(14 * p, 20 * p), (22 * p, 30 * p)]


def export_onnx(
    model: Clip2Depth,
    path: str | Path,
    *,
    opset: int = MIN_OPSET,
    sample_size: tuple[int, int] | None = None,
) -> None:
    """Write ``model`` as an ONNX graph ``image`` (B×3×H×W RGB in [0, 1]) → ``depth`` (B×1×H×W metres).

    Batch, height and width are dynamic; height and width must be multiples of the model's patch
    size. The query ``q`` is computed once in eval mode and stored in the graph as a constant, so
    later changes to the model's mirror do not affect the file. The file is written atomically.

    Args:
        model: the model to export (left in the train/eval mode it had).
        path: the ``.onnx`` file to write.
        opset: ONNX opset, 17 to 20.
        sample_size: (H, W) of the example input traced (default: the first of
            :func:`default_sizes`); the graph works at every valid size whichever is traced.

    Raises:
        Clip2DepthError: onnx or onnxruntime are not installed, or the model cannot be exported.
        ConfigError: a bad ``opset`` or ``sample_size``.
    """
    onnx, _ = _require_onnx()
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"opset {opset} is not supported: use {MIN_OPSET} to {MAX_OPSET} (the graph needs LayerNormalization, "
            f"opset >= {MIN_OPSET}; PyTorch's TorchScript exporter writes at most {MAX_OPSET})"
        )
    h, w = check_size(model, sample_size or default_sizes(model)[0], "sample_size")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            query = model.query()
            graph = DepthGraph(model, query).eval()
            sample = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(model.device)
            with _exportable(graph), warnings.catch_warnings(), atomic_path(path) as tmp:
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
                onnx.checker.check_model(str(tmp))
    except OSError as exc:
        raise Clip2DepthError(f"cannot write {path}: {exc}") from exc
    except (RuntimeError, ValueError, torch.onnx.errors.OnnxExporterError, onnx.checker.ValidationError) as exc:
        raise Clip2DepthError(f"ONNX export of {model.config.name} (opset {opset}) failed: {exc}") from exc
    finally:
        model.train(was_training)
    logger.info("wrote %s (opset %d, dynamic batch/height/width)", path, opset)


def verify_onnx(
    model: Clip2Depth,
    path: str | Path,
    sizes: Sequence[tuple[int, int]],
    *,
    batch: int = 1,
    seed: int = 0,
) -> dict[tuple[int, int], float]:
    """Run the ONNX file in onnxruntime (CPU) and the model in PyTorch on the same random images.

    Args:
        model: the PyTorch model to compare with (its current query is used).
        path: an ONNX file written by :func:`export_onnx`.
        sizes: (H, W) input sizes to try, multiples of the patch size.
        batch: images per run.
        seed: seeds the random test images.

    Returns:
        For each size, the largest element-wise relative error ``|onnx − torch| / torch`` (depth is
        strictly positive, so the ratio is always defined).
    """
    _, ort = _require_onnx()
    path = Path(path)
    if not path.is_file():
        raise Clip2DepthError(f"{path}: no such ONNX file; write it with export_onnx first")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    errors: dict[tuple[int, int], float] = {}
    try:
        for size in sizes:
            h, w = check_size(model, size, "check size")
            images = torch.rand(batch, 3, h, w, generator=generator)
            with torch.no_grad():
                expected = model(images.to(model.device)).float().cpu().numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
            if got.shape != expected.shape:
                raise Clip2DepthError(
                    f"{path}: ONNX output has shape {got.shape} at input {batch}x3x{h}x{w}, expected {expected.shape}"
                )
            errors[(h, w)] = float(np.max(np.abs(got - expected) / np.abs(expected)))
    finally:
        model.train(was_training)
    return errors
