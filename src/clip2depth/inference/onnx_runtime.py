"""ONNX Runtime as ``predict``'s runtime (``--runtime onnx``): an exported graph behind the depth-model interface.

:func:`check_onnx_runtime` refuses what this runtime cannot do before any model loads;
:class:`OnnxRuntimeModel` exports a model once (:func:`clip2depth.inference.export.export_onnx`) and predicts
with the file, wherever a :class:`~clip2depth.models.base.DepthModel` predicts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from clip2depth.errors import Clip2DepthError, ConfigError
from clip2depth.inference.export import INPUT_NAME, OUTPUT_NAME, export_onnx, require_onnx
from clip2depth.models.base import DepthModel
from clip2depth.models.model import Clip2Depth


def check_onnx_runtime(*, device: str, precision: str, engine: str = "local") -> None:
    """Refuse what ``predict``'s ONNX runtime cannot do, before any model is loaded.

    Raises:
        ConfigError: a device other than the CPU, a precision other than fp32, or the Ray engine.
        Clip2DepthError: onnx or onnxruntime are not installed (naming the extra that installs them).
    """
    if torch.device(device).type != "cpu":
        raise ConfigError(f"device={device}: the ONNX runtime runs on the CPU; use device cpu or the torch runtime",
                          params=("device",))  # fmt: skip
    if precision != "fp32":
        raise ConfigError(f"precision={precision}: the ONNX runtime computes in float32 only; use precision fp32",
                          params=("precision",))  # fmt: skip
    if engine != "local":
        raise ConfigError(f"engine={engine}: the ONNX runtime runs in this process only; use engine local",
                          params=("engine",))  # fmt: skip
    require_onnx()


class OnnxRuntimeModel(DepthModel):
    """An exported graph run by ONNX Runtime on the CPU, usable wherever a depth model predicts (``predict``).

    ``forward`` takes B×3×H×W RGB in [0, 1] (H, W multiples of :attr:`patch_size`, as for the PyTorch model)
    and returns B×1×H×W metres as a CPU tensor. Only float32 runs here: the graph has no autocast, and it never
    computes gradients.

    Args:
        path: an ONNX file written by :func:`export_onnx`.
        patch_size: the source model's patch size (inputs are rounded to its multiples before ``forward``).
        processing_size: the source model's own scale (H, W) that ``infer`` and ``predict`` resize to by default;
            None predicts images at their own size.
        config: the source model's config, kept so that code reading ``model.config`` works unchanged.
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``, so both runtimes get
            the same share of the CPU).

    Raises:
        Clip2DepthError: onnxruntime is not installed (the message names the extra), or the file cannot be read.
    """

    def __init__(self, path: str | Path, *, patch_size: int, processing_size: tuple[int, int] | None = None,
                 config: Any = None, threads: int | None = None) -> None:
        super().__init__()
        _, ort = require_onnx()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise Clip2DepthError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        self._patch_size = patch_size
        self._processing_size = processing_size
        self.config = config
        # Where inputs go (models.infer.model_device reads the first buffer): this runtime takes CPU tensors.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    @property
    def patch_size(self) -> int:
        return self._patch_size

    @property
    def processing_size(self) -> tuple[int, int] | None:
        """The source model's own scale (None: images at their own size)."""
        return self._processing_size

    @classmethod
    def from_model(cls, model: Clip2Depth, *, threads: int | None = None) -> OnnxRuntimeModel:
        """Export ``model`` (fp32, query baked in) to a temporary file and load it; the file is removed after."""
        if not isinstance(model, Clip2Depth):
            raise ConfigError(f"the ONNX runtime runs CLIP2Depth models, not {type(model).__name__}",
                              params=("runtime",))  # fmt: skip
        require_onnx()
        with tempfile.TemporaryDirectory(prefix="clip2depth-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(model, path)
            return cls(path, patch_size=model.patch_size, processing_size=model.processing_size, config=model.config,
                       threads=threads)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W RGB in [0, 1] → B×1×H×W float32 metres (CPU)."""
        if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"):
            raise ConfigError("the ONNX runtime computes in float32 only; use precision fp32", params=("precision",))
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])
