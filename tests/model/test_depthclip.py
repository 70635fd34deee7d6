"""DepthCLIP baseline (docs/method.md#baselines): the read-out formula, the prompts, the features, the options."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from clip2depth.errors import ConfigError
from clip2depth.models.depthclip import DepthCLIP, build_depthclip

# The authors' exact strings (template 'This {} is {}': no trailing period) and bins in metres.
PROMPTS = [
    "This object is giant",
    "This object is extremely close",
    "This object is close",
    "This object is not in distance",
    "This object is a little remote",
    "This object is far",
    "This object is unseen",
]
BINS = [1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00]


@pytest.fixture(scope="module")
def model() -> DepthCLIP:
    return build_depthclip()  # RN50, random seeded weights


def _variant(model: DepthCLIP, **overrides) -> DepthCLIP:
    """Same CLIP (no rebuild), other config."""
    return DepthCLIP(
        config=model.config.replace(**overrides), clip=model.clip, clip_mean=open_clip.OPENAI_DATASET_MEAN,
        clip_std=open_clip.OPENAI_DATASET_STD, tokenizer_name="RN50",
    )


def _layer4(model: DepthCLIP, images: torch.Tensor, mean, std) -> torch.Tensor:
    """RN50 layer4 output through open_clip's own forward_intermediates (independent of our code)."""
    x = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = model.clip.visual.forward_intermediates(x, indices=[4], stop_early=True, intermediates_only=True)
    return out["image_intermediates"][0]


def test_forward_equals_the_formula_on_the_models_features(model):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 96)
    f = model.patch_features(images)
    t = model.text_features
    assert f.shape == (2, 1024, 2, 3) and t.shape == (7, 1024)

    logits = 100.0 * torch.einsum("bchw,kc->bkhw", f, t) / 0.1
    coarse = (logits.softmax(dim=1) * torch.tensor(BINS).view(1, 7, 1, 1)).sum(dim=1, keepdim=True)
    expected = F.interpolate(coarse, size=(64, 96), mode="bilinear", align_corners=True)

    depth = model(images)
    assert depth.shape == (2, 1, 64, 96)
    assert torch.allclose(depth, expected, atol=1e-5)
    assert depth.min() >= min(BINS) - 1e-5 and depth.max() <= max(BINS) + 1e-5
    assert depth.grad_fn is None


def test_depth_from_features_per_pixel(model):
    # Small logits so the softmax is not one-hot and every bin weight matters.
    torch.manual_seed(1)
    f = 1e-3 * torch.randn(1, 1024, 2, 2)
    t = F.normalize(torch.randn(7, 1024), dim=-1)
    depth = model.depth_from_features(f, t)
    assert depth.shape == (1, 1, 2, 2)
    for i in range(2):
        for j in range(2):
            scores = [1000.0 * float(f[0, :, i, j] @ t[k]) for k in range(7)]
            weights = [math.exp(s - max(scores)) for s in scores]
            want = sum(w * b for w, b in zip(weights, BINS, strict=True)) / sum(weights)
            assert depth[0, 0, i, j].item() == pytest.approx(want, abs=1e-5)


def test_text_features_are_the_normalised_seven_prompts(model):
    assert model.prompts == PROMPTS
    tokens = open_clip.get_tokenizer("RN50")(PROMPTS)
    with torch.no_grad():
        want = F.normalize(model.clip.encode_text(tokens), dim=-1)
    assert torch.allclose(model.text_features, want, atol=1e-6)
    assert torch.allclose(model.text_features.norm(dim=-1), torch.ones(7), atol=1e-6)
    assert model.text_features is model.text_features  # encoded once, then cached


def test_patch_features_are_layer4_normalised_then_every_other_channel(model):
    torch.manual_seed(2)
    images = torch.rand(1, 3, 64, 64)
    raw = _layer4(model, images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert raw.shape == (1, 2048, 2, 2)
    want = (raw / raw.norm(dim=1, keepdim=True))[:, 0::2]
    assert torch.allclose(model.patch_features(images), want, atol=1e-6)


def test_normalization_option_switches_input_mean_std(model):
    torch.manual_seed(3)
    images = torch.rand(1, 3, 64, 64)
    clip_norm = _variant(model, normalization="clip")
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert torch.allclose(clip_norm.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    assert torch.allclose(clip_norm.std.flatten(), torch.tensor(open_clip.OPENAI_DATASET_STD))
    raw = _layer4(model, images, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    assert torch.allclose(clip_norm.backbone_features(images), raw, atol=1e-5)
    assert not torch.allclose(model.backbone_features(images), raw, atol=1e-3)


def test_attnpool_value_features(model):
    torch.manual_seed(4)
    images = torch.rand(1, 3, 64, 64)
    value = _variant(model, dense_features="attnpool_value")
    pool = model.clip.visual.attnpool
    raw = _layer4(model, images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        want = F.normalize(pool.c_proj(pool.v_proj(raw.permute(0, 2, 3, 1))), dim=-1).permute(0, 3, 1, 2)
    assert torch.allclose(value.patch_features(images), want, atol=1e-5)


def test_frozen_and_interface(model):
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.clip.training
    model.eval()
    assert model.patch_size == 32 and model.max_depth == 10.0
    assert model.device == torch.device("cpu")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 50, 64))


def test_infer_any_size_and_flip_tta_order(model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(70, 100, 3), dtype=np.uint8)
    depth = model.infer(image)
    assert depth.shape == (70, 100) and depth.dtype == np.float32
    assert depth.min() >= min(BINS) - 1e-5 and depth.max() <= max(BINS) + 1e-5

    # The authors average with the flipped prediction at H/32×W/32, then upsample; we average at
    # full resolution. Both must agree.
    x = torch.rand(3, 64, 96)
    ours = model.infer(x, flip_tta=True, native=True)  # at 64x96, the size of their computation
    t = model.text_features
    low = model.depth_from_features(model.patch_features(x[None]), t)
    low_flip = model.depth_from_features(model.patch_features(x[None].flip(-1)), t).flip(-1)
    theirs = F.interpolate(0.5 * (low + low_flip), size=(64, 96), mode="bilinear", align_corners=True)
    assert np.allclose(ours, theirs[0, 0].numpy(), atol=1e-5)


def test_config_validation():
    with pytest.raises(ConfigError, match="one bin per distance word"):
        build_depthclip(bins=[1.0, 2.0])
    with pytest.raises(ConfigError, match="unknown"):
        build_depthclip(no_such_field=1)
    with pytest.raises(ConfigError, match="normalization"):
        build_depthclip(normalization="caffe")


def test_create_model_is_typed_by_what_it_builds():
    """``create_model("depthclip-rn50")`` is a DepthCLIP to a type checker too; every other name a Clip2Depth."""
    import typing

    from clip2depth.models.base import DepthModel
    from clip2depth.models.depthclip import DEPTHCLIP_RN50
    from clip2depth.models.factory import create_model
    from clip2depth.models.model import Clip2Depth

    baseline, other = (typing.get_type_hints(o) for o in typing.get_overloads(create_model))
    assert typing.get_args(baseline["name_or_dir"]) == (DEPTHCLIP_RN50,) and baseline["return"] is DepthCLIP
    assert other["return"] is Clip2Depth
    assert not issubclass(DepthCLIP, Clip2Depth) and not issubclass(Clip2Depth, DepthCLIP)
    assert issubclass(DepthCLIP, DepthModel) and issubclass(Clip2Depth, DepthModel)
