"""Every open_clip backbone family as the frozen CLIP: tiny random-weight configs of each family.

``tiny`` is OpenAI-CLIP style (open_clip ViT, causal text mask, EOT pooling); ``tiny-sigmoid`` is
SigLIP style (timm ViT with attention pooling, bidirectional text, last-position pooling);
``tiny-eva`` an EVA-02 timm tower (RoPE, patch 14); ``tiny-mobileclip`` a FastViT tower (MobileCLIP's
family; the smallest FastViT for speed) with a bidirectional text tower; ``tiny-convnext`` a ConvNeXt
tower inside a plain ``CLIP``.
"""

from __future__ import annotations

import sys
import types

import open_clip
import pytest
import torch
from torch import nn

import clip2depth
from clip2depth.analysis.ablation import variant_overrides
from clip2depth.errors import ConfigError
from clip2depth.models.clip_backbone import ClipBundle, build_clip, register_clip_configs
from clip2depth.models.config import load_preset
from clip2depth.models.model import Clip2Depth
from clip2depth.models.text_towers import SequenceLayout, text_tower_of

FAMILIES = ["tiny", "tiny-sigmoid", "tiny-eva", "tiny-mobileclip", "tiny-convnext"]
TIMM_FAMILIES = FAMILIES[1:]
HIERARCHICAL = ["tiny-mobileclip", "tiny-convnext"]
SENTENCE = "a photo of a small cat"

register_clip_configs()  # the tiny configs' tokenizers (context lengths) must be known before any model is built
_BUNDLES: dict[str, ClipBundle] = {}


def _bundle(name: str) -> ClipBundle:
    """One random CLIP per family, shared by the tests (building the timm towers is the slow part)."""
    if name not in _BUNDLES:
        config = load_preset(name)
        _BUNDLES[name] = build_clip(config.clip_model, weights=None, reference_tag=None, seed=config.clip_init_seed)
    return _BUNDLES[name]


def _model(name: str, **overrides) -> clip2depth.Clip2Depth:
    """A fresh model (own mirror and decoder) around the family's shared frozen CLIP."""
    return Clip2Depth.assemble(load_preset(name).replace(**overrides), _bundle(name))


def _words(name: str, text: str) -> torch.Tensor:
    tokenizer = open_clip.get_tokenizer(load_preset(name).clip_model)
    return torch.tensor(SequenceLayout.from_tokenizer(tokenizer).words(tokenizer([text])[0]))


@pytest.mark.parametrize("name", FAMILIES)
def test_mirror_set_to_a_sentence_equals_encode_text(name):
    tokens = open_clip.get_tokenizer(load_preset(name).clip_model)([SENTENCE])
    with torch.no_grad():
        expected = _bundle(name).model.encode_text(tokens)
    words = _words(name, SENTENCE)

    model = _model(name, mirror_length=len(words))
    encoder = model.prompt_encoder
    with torch.no_grad():
        encoder.mirror.copy_(encoder.token_embedding(words))
    torch.testing.assert_close(encoder.compute_query(), expected, rtol=1e-4, atol=1e-5)

    # concat: the prompt's own words, then the mirror holding the rest of the sentence.
    head, tail = "a photo of", "a small cat"
    concat = _model(name, prompt_mode="concat", prompt=head, mirror_length=len(_words(name, tail)))
    with torch.no_grad():
        concat.prompt_encoder.mirror.copy_(encoder.token_embedding(_words(name, tail)))
    torch.testing.assert_close(concat.prompt_encoder.compute_query(), expected, rtol=1e-4, atol=1e-5)

    language = _model(name, prompt_mode="language", prompt=SENTENCE)
    torch.testing.assert_close(language.query(), expected, rtol=1e-4, atol=1e-5)


def test_the_families_differ_in_mask_and_pooling():
    clip_like, sigmoid_like = _model("tiny").prompt_encoder, _model("tiny-sigmoid").prompt_encoder
    assert clip_like.attn_mask is not None and clip_like.pool_type == "argmax"
    # [SOT, mirror, EOT]: the causal mask lets the sequence end at the pooled EOT position.
    assert clip_like.pooled_index == 1 + clip_like.mirror.shape[0]
    assert sigmoid_like.attn_mask is None and sigmoid_like.pool_type == "last"
    assert sigmoid_like.pooled_index == sigmoid_like.positional_embedding.shape[0] - 1
    assert _model("tiny-mobileclip").prompt_encoder.attn_mask is None  # MobileCLIP: bidirectional, EOT pooling


@pytest.mark.parametrize("name", TIMM_FAMILIES)
def test_image_features_equal_the_towers_own_forward_intermediates(name):
    model = _model(name)
    encoder = model.image_encoder
    p = model.patch_size
    torch.manual_seed(0)
    images = torch.rand(2, 3, 2 * p, 3 * p)
    features = encoder(images)
    expected = encoder.trunk.forward_intermediates(
        encoder.normalize(images), indices=encoder.indices, intermediates_only=True)
    assert len(features) == len(encoder.indices)
    for got, want, stride, width in zip(features, expected, encoder.strides, encoder.widths, strict=True):
        assert got.shape == (2, width, 2 * p // stride, 3 * p // stride)
        torch.testing.assert_close(got, want)

    if not hasattr(encoder.trunk, "dynamic_img_size"):
        return  # a hierarchical trunk is used as open_clip built it
    # At the tower's own input size, the dynamic-size copy matches the fixed-size tower open_clip built.
    config = load_preset(name)
    original = build_clip(config.clip_model, weights=None, reference_tag=None, seed=config.clip_init_seed)
    original = original.model.visual.trunk.eval()
    size = original.patch_embed.img_size
    images = torch.rand(1, 3, *size)
    want = original.forward_intermediates(encoder.normalize(images), indices=encoder.indices, intermediates_only=True)
    for got, ref in zip(encoder(images), want, strict=True):
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("name", ["tiny-sigmoid", "tiny-eva"])
def test_blocks_after_the_deepest_used_one_never_run(name):
    model = _model(name)
    trunk = model.image_encoder.trunk
    deepest = max(model.image_encoder.indices)
    later = list(trunk.blocks[deepest + 1:]) + [trunk.norm, model.image_encoder.visual.head]
    assert len(later) > 2
    called = []
    hooks = [m.register_forward_hook(lambda *a: called.append(1)) for m in later]
    model(torch.rand(1, 3, 2 * model.patch_size, 2 * model.patch_size))
    for h in hooks:
        h.remove()
    assert not called


@pytest.mark.parametrize("name", HIERARCHICAL)
def test_stages_after_the_deepest_used_one_never_run(name):
    model = _model(name, blocks=[1, 2, 3])
    later = [model.image_encoder.trunk.stages[3], model.image_encoder.visual.head]
    called = []
    hooks = [m.register_forward_hook(lambda *a: called.append(1)) for m in later]
    features = model.image_encoder(torch.rand(1, 3, 64, 96))
    for h in hooks:
        h.remove()
    assert not called
    assert [f.shape[-1] for f in features] == [96 // 4, 96 // 8, 96 // 16]


@pytest.mark.parametrize("name", HIERARCHICAL)
def test_hierarchical_levels_are_resampled_to_the_decoder_grid(name):
    model = _model(name)
    assert model.image_encoder.strides == [8, 16, 32]
    assert model.decoder.grid_stride == 16
    seen = []
    hook = model.decoder.blocks[0].register_forward_hook(lambda m, args, out: seen.append(out.shape))
    model(torch.rand(1, 3, 64, 96))
    hook.remove()
    assert seen == [(1, (64 // 16) * (96 // 16), model.config.reduce_dim)]


@pytest.mark.parametrize("name", FAMILIES)
def test_output_size_equals_input_size_for_odd_sizes(name):
    model = _model(name)
    depth = model.infer(torch.rand(3, 37, 53))
    assert depth.shape == (37, 53)
    assert (depth > 0).all() and (depth <= model.max_depth).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_reach_only_the_mirror_and_the_decoder(name):
    model = _model(name)
    names = {n for n, _ in model.trainable_parameters()}
    assert names and all(n == "prompt_encoder.mirror" or n.startswith("decoder.") for n in names)
    model.train()
    model(torch.rand(2, 3, 2 * model.patch_size, 2 * model.patch_size)).mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == names
    assert model.prompt_encoder.mirror.grad.abs().sum() > 0
    assert not model.image_encoder.visual.training and not model.prompt_encoder.transformer.training


@pytest.mark.parametrize("name", FAMILIES)
def test_a_trained_model_directory_round_trips(name, tmp_path):
    model = _model(name)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(str(tmp_path / "m"))
    loaded = clip2depth.create_model(tmp_path / "m")
    images = torch.rand(1, 3, 2 * model.patch_size, 3 * model.patch_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


def test_hugging_face_and_coca_text_towers_are_refused_by_name():
    with pytest.raises(ConfigError, match="Hugging Face"):
        text_tower_of(types.SimpleNamespace(text=nn.Linear(2, 2)))
    with pytest.raises(ConfigError, match="CoCa"):
        text_tower_of(types.SimpleNamespace(text=open_clip.transformer.TextTransformer(
            context_length=8, vocab_size=16, width=8, heads=2, layers=1, embed_cls=True)))


def test_fine_tuning_is_refused_for_timm_towers():
    with pytest.raises(ConfigError, match="unfreeze_image_blocks"):
        _model("tiny-convnext", unfreeze_image_blocks=1)


def test_decoder_stride_must_divide_the_input_multiple():
    with pytest.raises(ConfigError, match="decoder_stride"):
        _model("tiny-convnext", decoder_stride=64)


@pytest.mark.parametrize(
    ("preset", "family"),
    [("clip2depth-siglip2-b-16", "ViT-B-16-SigLIP2"), ("clip2depth-eva02-b-16", "EVA02-B-16"),
     ("clip2depth-mobileclip-s1", "MobileCLIP-S1"), ("clip2depth-convnext-base-w", "convnext_base_w")],
)
def test_backbone_presets_name_a_real_open_clip_tag(preset, family):
    config = load_preset(preset)
    assert config.clip_model == family
    assert config.clip_pretrained in open_clip.list_pretrained_tags_by_model(family)


def test_ablation_varies_the_backbone():
    overrides = variant_overrides("backbone=clip2depth-convnext-base-w")
    assert overrides["clip_model"] == "convnext_base_w" and overrides["blocks"] == [2, 3, 4]
    assert overrides["decoder_stride"] == 16 and "max_depth" not in overrides
    with pytest.raises(ConfigError, match="backbone"):
        variant_overrides("backbone=no-such-preset")


def test_backbone_variant_trains_on_its_own_clip_weights_when_the_recipe_has_real_ones():
    from clip2depth.analysis.ablation import variant_recipe
    from clip2depth.training.config import Recipe

    overrides = variant_overrides("backbone=clip2depth-eva02-b-16")
    real = variant_recipe(Recipe(model="clip2depth-vit-b-16", pretrained="openai"), overrides)
    assert real.pretrained == load_preset("clip2depth-eva02-b-16").clip_pretrained
    assert real.model_spec.config.clip_model == "EVA02-B-16"
    random = variant_recipe(Recipe(model="clip2depth-vit-b-16", pretrained=None), overrides)
    assert random.pretrained is None
    same_clip = variant_recipe(Recipe(model="clip2depth-vit-b-16", pretrained="openai"), {"mirror_length": 8})
    assert same_clip.pretrained == "openai"


def test_siglip2_mirror_needs_no_tokenizer_and_is_laid_out_as_gemma_tokenizes(siglip2_stand_in):
    model = clip2depth.create_model("clip2depth-siglip2-b-16")  # transformers is not importable here
    enc = model.prompt_encoder
    assert enc.prompt_tokens is None  # no prompt, so no tokenizer
    # SigLIP 2's Gemma tokenizer: the words, end of text (1), then padding (0) to the 64-token context.
    ids = torch.randint(3, 300, (model.config.mirror_length,), generator=torch.Generator().manual_seed(0))
    tokens = torch.cat([ids, torch.tensor([1]), torch.zeros(64 - len(ids) - 1, dtype=torch.long)])[None]
    with torch.no_grad():
        enc.mirror.copy_(enc.token_embedding(ids))
        torch.testing.assert_close(enc.compute_query(), enc.encode_tokens(tokens))
        tokens[0, len(ids)] = 2  # any other end token gives another query
        assert not torch.allclose(enc.compute_query(), enc.encode_tokens(tokens))


@pytest.mark.parametrize("mode", ["language", "concat"])
def test_siglip2_prompt_modes_need_the_tokenizer_and_name_the_extra(siglip2_stand_in, mode):
    with pytest.raises(ConfigError, match=rf"prompt_mode '{mode}' needs the tokenizer of CLIP ViT-B-16-SigLIP2.*"
                                          r"pip install 'clip2depth\[siglip\]'"):
        clip2depth.create_model("clip2depth-siglip2-b-16", prompt_mode=mode)


def test_random_weights_warning_names_a_tag_the_clip_really_has():
    from clip2depth.models.clip_backbone import _how_to_pass_weights

    assert _how_to_pass_weights("ViT-B-16-SigLIP2", "webli") == "Pass pretrained='webli' (or a local file)."
    assert _how_to_pass_weights("ViT-B-16-SigLIP2", "openai") == "Pass pretrained='webli' (or a local file)."
    assert "'merged2b_s8b_b131k'" in _how_to_pass_weights("EVA02-B-16", None)
    assert "'laion2b_s34b_b88k'" in _how_to_pass_weights("ViT-B-16", "laion2b_s34b_b88k")
    assert "no pretrained tag for clip2depth-tiny-vit" in _how_to_pass_weights("clip2depth-tiny-vit", None)
    for name in clip2depth.list_models():
        config = load_preset(name)
        advice = _how_to_pass_weights(config.clip_model, config.clip_pretrained)
        tags = open_clip.list_pretrained_tags_by_model(config.clip_model)
        assert (f"pretrained={config.clip_pretrained!r}" in advice) if config.clip_pretrained else not tags, name


@pytest.mark.slow
def test_real_siglip2_preset_builds_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    model = clip2depth.create_model("clip2depth-siglip2-b-16")  # the full ViT-B-16-SigLIP2, random weights
    enc = model.prompt_encoder
    assert enc.prefix_ids.tolist() == [] and enc.suffix_ids.tolist() == [1] + [0] * 3  # 60 rows, EOS, padding
    assert enc.pooled_index == 63 and enc.compute_query().shape == (1, 768)
