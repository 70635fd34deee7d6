"""clip2depth: a frozen CLIP as a metric depth estimator (CLIP2Depth).

Quick start::

    import clip2depth
    model = clip2depth.create_model("clip2depth-vit-b-16", pretrained="openai")
    depth_m = model.infer(pil_image)   # H×W float32 numpy array, metres
"""

from clip2depth.errors import CheckpointError, Clip2DepthError, ConfigError, DataError
from clip2depth.models.clip2depth import Clip2Depth
from clip2depth.models.config import ModelConfig, list_models, load_preset
from clip2depth.models.factory import create_model

__version__ = "0.1.0"

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
