"""clip2depth: a frozen CLIP as a metric depth estimator (CLIP2Depth).

Quick start::

    import clip2depth
    model = clip2depth.create_model("clip2depth-vit-b-16", pretrained="openai")
    depth_m = model.infer(pil_image)   # H×W float32 numpy array, metres

The model names below are loaded on first use, so ``import clip2depth`` (and the command line's
``--help``) does not wait for torch and open_clip to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clip2depth.errors import CheckpointError, Clip2DepthError, ConfigError, DataError

__version__ = "0.1.0"

_LAZY = {
    "Clip2Depth": "clip2depth.models.model",
    "ModelConfig": "clip2depth.models.config",
    "list_models": "clip2depth.models.config",
    "load_preset": "clip2depth.models.config",
    "create_model": "clip2depth.models.factory",
}

if TYPE_CHECKING:
    from clip2depth.models.config import ModelConfig, list_models, load_preset
    from clip2depth.models.factory import create_model
    from clip2depth.models.model import Clip2Depth

__all__ = [
    "CheckpointError",
    "Clip2Depth",
    "Clip2DepthError",
    "ConfigError",
    "DataError",
    "ModelConfig",
    "__version__",
    "create_model",
    "list_models",
    "load_preset",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'clip2depth' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
