"""Pins the architecture of docs/method.md#the-model: a change to any of these must fail a test.

Each test recomputes one part from its description (FiLM after the deepest level only, bicubic
positional-embedding resize, 1-based block numbers, the mirror's text sequence, head strides, the
output squashing) with open_clip / torch primitives, and compares with the model.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clip2depth
from clip2depth.models.decoder import default_head_strides


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(5)
    m = clip2depth.create_model("tiny")
    with torch.no_grad():  # non-trivial trained parts, so that every level and FiLM matter
        for p in m.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
        m.prompt_encoder.mirror.add_(torch.randn_like(m.prompt_encoder.mirror))
    return m.eval()


def _features(levels: int, b: int = 2, c: int = 64, h: int = 4, w: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(levels)
    return [torch.randn(b, c, h, w, generator=g) for _ in range(levels)]


def _reference_decoder(decoder, features: list[torch.Tensor], q: torch.Tensor) -> torch.Tensor:
    """The decoder as described: deepest to shallowest, a = reduce(x) + a, FiLM after the deepest only."""
    b, _, h, w = features[0].shape
    a = None
    for level in reversed(range(len(features))):
        tokens = decoder.reduces[level](features[level].flatten(2).transpose(1, 2))
        a = tokens if a is None else tokens + a
        if level == len(features) - 1:
            a = decoder.film_mul(q).unsqueeze(1) * a + decoder.film_add(q).unsqueeze(1)
        a = decoder.blocks[level](a)
    logits = decoder.head(a.transpose(1, 2).reshape(b, -1, h, w))
    return decoder.max_depth * torch.sigmoid(logits)


def test_decoder_matches_its_description(model):
    features = _features(len(model.config.blocks))
    with torch.no_grad():
        q = model.query()
        assert torch.allclose(model.decoder(features, q), _reference_decoder(model.decoder, features, q), atol=1e-6)


def test_film_comes_right_after_the_deepest_level_and_nowhere_else(model):
    order = []
    handles = [model.decoder.film_mul.register_forward_hook(lambda *a: order.append("film"))]
    handles += [block.register_forward_pre_hook(lambda *a, i=i: order.append(f"block{i}"))
                for i, block in enumerate(model.decoder.blocks)]
    try:
        with torch.no_grad():
            model.decoder(_features(3), model.query())
    finally:
        for h in handles:
            h.remove()
    assert order == ["film", "block2", "block1", "block0"]  # block2 reads the deepest image block


def test_film_changes_the_output_only_through_the_query(model):
    features = _features(3)
    with torch.no_grad():
        q = model.query()
        a = model.decoder(features, q)
        b = model.decoder(features, q + 1.0)
    assert (a - b).abs().max() > 1e-4


def test_positional_embedding_is_resized_bicubically_in_the_model(model):
    encoder = model.image_encoder
    h, w = 64, 96  # a 4x6 grid against the pretrained 14x14
    pos = encoder.visual.positional_embedding.detach()
    gh0, gw0 = encoder.pretrained_grid

    def resized(mode: str) -> torch.Tensor:
        grid = pos[1:].reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h // 16, w // 16), mode=mode, align_corners=False)
        return torch.cat([pos[:1], grid.flatten(2).transpose(1, 2)[0]])

    bicubic, bilinear = resized("bicubic"), resized("bilinear")
    assert (bicubic - bilinear).abs().max() > 1e-3  # the two modes are distinguishable here
    images = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(2))
    visual = copy.deepcopy(encoder.visual)
    visual.positional_embedding = nn.Parameter(bicubic)
    with torch.no_grad():
        ours = encoder(images)
        theirs = visual.forward_intermediates(
            encoder.normalize(images), indices=encoder.indices, stop_early=True, intermediates_only=True
        )["image_intermediates"]
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == (1, encoder.width, h // 16, w // 16)
        assert (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize("blocks", [[1, 3], [2], [1, 2, 3]])
def test_one_based_block_numbers_feed_the_decoder_and_later_blocks_never_run(blocks):
    m = clip2depth.create_model("tiny", blocks=blocks)
    resblocks = m.image_encoder.visual.transformer.resblocks
    outputs: dict[int, torch.Tensor] = {}
    handles = [b.register_forward_hook(lambda mod, i_, out, n=n: outputs.__setitem__(n, out))
               for n, b in enumerate(resblocks, start=1)]
    try:
        with torch.no_grad():
            features = m.image_encoder(torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)))
    finally:
        for h in handles:
            h.remove()
    assert sorted(outputs) == list(range(1, max(blocks) + 1))  # blocks after the deepest used one never run
    assert len(features) == len(blocks)
    for n, feature in zip(blocks, features, strict=True):
        tokens = outputs[n][:, 1:]  # patch tokens of 1-based block n, CLS dropped
        assert torch.equal(feature, tokens.reshape(1, 3, 4, -1).permute(0, 3, 1, 2))


def test_mirror_text_sequence_layout(model):
    """[SOT, M, EOT] + positional_embedding[:L+2], causal mask, ln_final, EOT position, text_projection."""
    enc = model.prompt_encoder
    mirror = enc.mirror.detach()
    length = mirror.shape[0] + 2
    assert enc.prefix_ids.tolist() == [49406] and enc.suffix_ids.tolist() == [49407]  # CLIP's SOT / EOT ids
    sot, eot = enc.token_embedding(torch.cat([enc.prefix_ids, enc.suffix_ids])).detach()
    x = torch.cat([sot[None], mirror, eot[None]])[None] + enc.positional_embedding[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    with torch.no_grad():
        x = enc.ln_final(enc.transformer(x, attn_mask=causal))
        expected = x[:, -1] @ enc.text_projection
        got = enc.compute_query()
        unmasked = enc.ln_final(enc.transformer(
            torch.cat([sot[None], mirror, eot[None]])[None] + enc.positional_embedding[:length]
        ))[:, -1] @ enc.text_projection
    assert got.shape == (1, enc.query_dim)
    assert torch.allclose(got, expected, atol=1e-5)
    assert (unmasked - expected).abs().max() > 1e-4  # the causal mask matters to this check


@pytest.mark.parametrize(("patch", "strides"), [(16, [4, 4]), (14, [2, 7]), (32, [4, 8]), (8, [2, 4])])
def test_head_strides_come_from_the_patch_size(patch, strides):
    assert default_head_strides(patch) == strides


def test_head_upsamples_by_the_patch_size_in_two_deconv_stages(model):
    deconvs = [m for m in model.decoder.head.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [d.stride[0] for d in deconvs] == default_head_strides(model.patch_size) == [4, 4]
    assert [d.kernel_size[0] for d in deconvs] == [4, 4]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 48)).shape == (1, 1, 32, 48)


@pytest.mark.parametrize("max_depth", [10.0, 80.0])
def test_output_is_max_depth_times_sigmoid_of_the_logits(max_depth):
    m = clip2depth.create_model("tiny", max_depth=max_depth)
    last = m.decoder.head.layers[-1]
    features = _features(3)
    for bias in (-2.0, 0.0, 1.5):
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(bias)  # logits == bias everywhere
            depth = m.decoder(features, m.query())
        expected = max_depth * torch.sigmoid(torch.tensor(bias))
        assert torch.allclose(depth, expected.expand_as(depth), rtol=1e-6)
