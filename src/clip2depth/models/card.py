"""The model card: ``README.md`` beside ``config.json``, with the metadata the Hugging Face Hub reads.

``save_pretrained`` writes it (so ``push_to_hub`` uploads it and every training checkpoint has one): YAML
front matter (``library_name``, ``pipeline_tag: depth-estimation``, licence, tags, the base CLIP and, where it
is a Hub repository, ``base_model``; the measured metrics as a ``model-index``), then what the model is, how
to load it, the training recipe and the metrics. A training run passes its resolved recipe and latest
validation; a model saved elsewhere says that neither is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import open_clip
import yaml

from clip2depth.models.config import ModelConfig

CARD_NAME = "README.md"
LIBRARY_NAME = "clip2depth"
LICENSE = "mit"
PIPELINE_TAG = "depth-estimation"
TAGS = ("clip2depth", "depth-estimation", "monocular-depth-estimation", "metric-depth", "clip", "open_clip")
PAPER = "https://arxiv.org/abs/2402.03251"
_HF_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class Validation:
    """Metrics a training run measured on its validation set after ``step`` optimizer steps."""

    step: int
    metrics: dict[str, float]  # metric key (abs_rel, rmse, d1, ...) → value
    count: int  # images evaluated


def base_model(clip_model: str, weights: str | None) -> str | None:
    """The Hugging Face Hub repository the CLIP weights come from, when there is one.

    ``hf-hub:org/name`` gives ``org/name``; an open_clip pretrained tag gives the repository open_clip
    downloads it from (``ViT-B-16`` + ``openai`` → ``timm/vit_base_patch16_clip_224.openai``); a local file,
    a folder or random weights give None.
    """
    if weights is None:
        return None
    if weights.startswith(_HF_PREFIX):
        return weights[len(_HF_PREFIX):].split("@")[0]
    parts = (open_clip.get_pretrained_cfg(clip_model, weights) or {}).get("hf_hub", "").strip("/").split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else None  # org/name[/file in the repository]


def model_card(
    config: ModelConfig,
    *,
    clip_weights: str | None,
    trainable_parameters: int,
    recipe: dict[str, Any] | None = None,
    validation: Validation | None = None,
    repo_id: str | None = None,
) -> str:
    """The text of ``README.md`` for a model directory.

    Args:
        config: the model's config (as in ``config.json``).
        clip_weights: the CLIP weights it was built on (tag, path, ``hf-hub:`` or None = random).
        trainable_parameters: the number of parameters in ``model.safetensors``.
        recipe: the resolved training recipe (a run's ``config.yaml``), if trained by ``clip2depth train``.
        validation: the run's latest validation metrics.
        repo_id: the Hub repository the card is uploaded to (used in the loading example).
    """
    front: dict[str, Any] = {
        "library_name": LIBRARY_NAME,
        "pipeline_tag": PIPELINE_TAG,
        "license": LICENSE,
        "tags": list(TAGS),
    }
    base = base_model(config.clip_model, clip_weights)
    if base:
        front["base_model"] = base
    data = (recipe or {}).get("data") or {}
    dataset, split = data.get("dataset") or "unknown", data.get("val_split") or "val"
    front[LIBRARY_NAME] = {
        "preset": config.name,
        "clip_model": config.clip_model,
        "clip_weights": clip_weights,
        "prompt_mode": config.prompt_mode,
        "trainable_parameters": trainable_parameters,
        "max_depth_m": config.max_depth,
    }
    if validation is not None:
        front[LIBRARY_NAME]["validation_step"] = validation.step
        finite = {k: float(v) for k, v in validation.metrics.items() if math.isfinite(v)}
        if finite:
            front["model-index"] = [{
                "name": config.name,
                "results": [{
                    "task": {"type": PIPELINE_TAG, "name": "Depth Estimation"},
                    "dataset": {"type": dataset, "name": f"{dataset} ({split})"},
                    "metrics": [{"type": k, "name": k, "value": v} for k, v in finite.items()],
                }],
            }]
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + _body(
        config, clip_weights, trainable_parameters, recipe, validation, repo_id)


def _body(config: ModelConfig, clip_weights: str | None, trainable: int, recipe: dict[str, Any] | None,
          validation: Validation | None, repo_id: str | None) -> str:
    weights = f"`{clip_weights}`" if clip_weights else "random weights (a test or demo model)"
    source = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    lines = [
        f"# {config.name}",
        "",
        f"Metric depth estimation with a frozen CLIP, after *CLIP Can Understand Depth* ([arXiv:2402.03251]({PAPER})),",
        "made with clip2depth. CLIP's image and text encoders stay frozen "
        f"(open_clip `{config.clip_model}`, CLIP weights {weights}); what was trained, and is stored in "
        f"`model.safetensors`, is {_trained_parts(config)}: {trainable:,} parameters. The output is depth in "
        f"metres (at most {config.max_depth:g} m) at the input image's size. Images are predicted at the model's "
        f"own scale, the pixel count of {config.train_size[0]}×{config.train_size[1]} (H×W) with their aspect kept "
        "(`size=`, `max_side=` or `native=True` of `infer` choose another).",
        "",
        "## Use",
        "",
        "```python",
        "import clip2depth",
        "",
        f'model = clip2depth.create_model("{source}")',
        'depth = model.infer("photo.jpg")  # H×W float32 numpy array, metres',
        "```",
        "",
        "or through `torch.hub` from a clone of clip2depth:",
        "",
        "```python",
        "import torch",
        "",
        f'model = torch.hub.load("path/to/clip2depth", "clip2depth", "{source}", source="local")',
        "```",
        "",
        ("The model's `config.json` names the CLIP weights; open_clip fetches them on first use." if clip_weights
         else "Its CLIP has random (seeded) weights, so its depth only means something on the data it was trained on."),
        "",
        "## Training recipe",
        "",
    ]
    if recipe is None:
        lines += ["Not recorded: this model was saved outside a `clip2depth train` run.", ""]
    else:
        lines += ["The resolved recipe of the run (its `config.yaml`):", "", "```yaml",
                  yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    lines += ["## Metrics", ""]
    if validation is None:
        lines += ["None recorded with this checkpoint.", ""]
    else:
        data = (recipe or {}).get("data") or {}
        where = (f"the `{data.get('val_split') or 'val'}` split of `{data['dataset']}`" if data.get("dataset")
                 else "the validation set")
        lines += [f"Measured on {where} ({validation.count} images) after step {validation.step}:", "",
                  "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in validation.metrics.items()]
        lines.append("")
    return "\n".join(lines)


def _trained_parts(config: ModelConfig) -> str:
    parts = ["the FiLM depth decoder"]
    if config.prompt_mode in ("mirror", "concat"):
        parts.insert(0, f"the {config.mirror_length}-row mirror read through CLIP's text encoder "
                        f"(prompt mode `{config.prompt_mode}`)")
    if config.unfreeze_image_blocks:
        parts.append(f"the last {config.unfreeze_image_blocks} used blocks of CLIP's image encoder")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
