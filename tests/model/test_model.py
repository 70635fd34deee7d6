"""The model of docs/method.md#the-model: parity with open_clip, frozen CLIP, shapes, prompt modes, query cache."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import clip2depth
from clip2depth.models.base import DepthModel
from clip2depth.models.clip_backbone import build_clip
from clip2depth.models.config import PAPER_PROMPT
from clip2depth.models.infer import network_size
from clip2depth.models.prompt_encoder import PromptEncoder


def _open_clip_intermediates(encoder, images):
    visual = encoder.visual
    out = visual.forward_intermediates(
        encoder.normalize(images), indices=encoder.indices, stop_early=True, intermediates_only=True
    )
    return out["image_intermediates"]


@pytest.mark.parametrize("model_fixture", ["tiny_model", "vitb16_model"])
def test_image_features_match_open_clip(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    torch.manual_seed(1)
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        ours = model.image_encoder(images)
        theirs = _open_clip_intermediates(model.image_encoder, images)
    assert len(ours) == len(model.config.blocks)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == (2, model.image_encoder.width, 14, 14)
        assert (a - b).abs().max().item() <= 1e-5


def test_paper_preset_uses_blocks_3_6_9_and_quickgelu(vitb16_model):
    assert vitb16_model.image_encoder.indices == [2, 5, 8]
    assert vitb16_model.image_encoder.num_run == 9
    act = vitb16_model.image_encoder.visual.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"  # OpenAI weights were trained with QuickGELU


def test_blocks_after_the_last_used_one_never_run(tiny_model):
    blocks = tiny_model.image_encoder.visual.transformer.resblocks
    deep = clip2depth.create_model("tiny", blocks=[1, 2])
    called = []
    handles = [b.register_forward_hook(lambda *a, i=i: called.append(i)) for i, b in
               enumerate(deep.image_encoder.visual.transformer.resblocks)]
    post = deep.image_encoder.visual.ln_post.register_forward_hook(lambda *a: called.append("ln_post"))
    with torch.no_grad():
        deep(torch.rand(1, 3, 64, 64))
    for h in handles + [post]:
        h.remove()
    assert called == [0, 1]
    assert len(blocks) == 3


def test_positional_embedding_resized_once_per_grid(fresh_tiny):
    enc = fresh_tiny.image_encoder
    with torch.no_grad():
        for _ in range(3):
            enc(torch.rand(1, 3, 416, 544))
        enc(torch.rand(1, 3, 224, 224))
    grids = sorted(key[0] for key in enc._pos_cache)
    assert grids == [(14, 14), (26, 34)]
    native = enc._pos_cache[next(k for k in enc._pos_cache if k[0] == (14, 14))]
    assert torch.equal(native, enc.visual.positional_embedding.detach())
    resized = enc._pos_cache[next(k for k in enc._pos_cache if k[0] == (26, 34))]
    assert resized.shape == (1 + 26 * 34, enc.width)
    assert torch.equal(resized[0], enc.visual.positional_embedding[0].detach())  # class token untouched


def test_only_mirror_and_decoder_get_gradients(fresh_tiny):
    model = fresh_tiny
    model.train()
    depth = model(torch.rand(2, 3, 64, 96))
    (depth.log().mean()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert "prompt_encoder.mirror" in with_grad
    assert all(n == "prompt_encoder.mirror" or n.startswith("decoder.") for n in with_grad)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("decoder.")
               and n != "prompt_encoder.mirror")
    # CLIP modules stay in eval mode inside a training model
    assert model.training and model.decoder.training
    assert not model.image_encoder.visual.training
    assert not model.prompt_encoder.transformer.training


def test_image_path_builds_no_autograd_graph(fresh_tiny):
    fresh_tiny.train()
    feats = fresh_tiny.image_encoder(torch.rand(1, 3, 64, 64))
    assert all(f.grad_fn is None and not f.requires_grad for f in feats)


def test_unfreezing_last_blocks_for_the_finetuning_ablation():
    model = clip2depth.create_model("tiny", unfreeze_image_blocks=1)
    model.train()
    model(torch.rand(1, 3, 64, 64)).mean().backward()
    blocks = model.image_encoder.visual.transformer.resblocks
    assert all(p.grad is not None for p in blocks[2].parameters())
    assert all(p.grad is None for p in blocks[1].parameters())
    assert "image_encoder.visual.transformer.resblocks.2.attn.in_proj_weight" in model.trainable_state_dict()


@pytest.mark.parametrize("size", [(224, 224), (352, 352), (416, 544), (480, 640), (352, 1216)])
def test_tiny_runs_at_dataset_sizes(tiny_model, size):
    with torch.no_grad():
        depth = tiny_model(torch.rand(1, 3, *size))
    assert depth.shape == (1, 1, *size)
    assert torch.isfinite(depth).all()
    assert depth.min() > 0 and depth.max() <= tiny_model.config.max_depth


def test_output_is_bounded_by_max_depth_even_for_extreme_logits(fresh_tiny):
    with torch.no_grad():
        fresh_tiny.decoder.head.layers[-1].bias.fill_(-1e4)
        low = fresh_tiny(torch.rand(1, 3, 32, 32))
        fresh_tiny.decoder.head.layers[-1].bias.fill_(1e4)
        high = fresh_tiny(torch.rand(1, 3, 32, 32))
    assert low.min() > 0
    assert high.max() == pytest.approx(fresh_tiny.config.max_depth)


def test_input_size_must_be_a_multiple_of_the_patch(tiny_model):
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        tiny_model(torch.rand(1, 3, 100, 64))


# ------------------------------------------------------------------------------ text side

def _tiny_bundle():
    return build_clip("clip2depth-tiny-vit", weights=None, reference_tag=None, seed=3)


def test_language_query_equals_open_clip_encode_text():
    bundle = _tiny_bundle()
    enc = PromptEncoder(bundle.model, mode="language", mirror_length=4, mirror_init_std=0.02,
                        prompt=PAPER_PROMPT, tokenizer_name="clip2depth-tiny-vit")
    tokens = open_clip.get_tokenizer("clip2depth-tiny-vit")([PAPER_PROMPT])
    with torch.no_grad():
        expected = bundle.model.encode_text(tokens)
    assert enc.mirror is None
    assert (enc() - expected).abs().max().item() <= 1e-5


def test_mirror_holding_the_prompt_embeddings_reproduces_encode_text():
    """The mirror path is CLIP's text path: with the prompt's own word embeddings as M it gives encode_text."""
    bundle = _tiny_bundle()
    tokens = open_clip.get_tokenizer("clip2depth-tiny-vit")([PAPER_PROMPT])
    n_words = int(tokens.argmax()) - 1
    enc = PromptEncoder(bundle.model, mode="mirror", mirror_length=n_words, mirror_init_std=0.02,
                        prompt=PAPER_PROMPT, tokenizer_name="clip2depth-tiny-vit")
    with torch.no_grad():
        enc.mirror.copy_(bundle.model.token_embedding(tokens[0, 1 : n_words + 1]))
        expected = bundle.model.encode_text(tokens)
        got = enc.compute_query()
    assert (got - expected).abs().max().item() <= 1e-5


def test_concat_mode_puts_prompt_words_before_the_mirror():
    bundle = _tiny_bundle()
    enc = PromptEncoder(bundle.model, mode="concat", mirror_length=3, mirror_init_std=0.02,
                        prompt=PAPER_PROMPT, tokenizer_name="clip2depth-tiny-vit")
    seen = {}
    orig = enc.encode_embeddings
    enc.encode_embeddings = lambda e: seen.setdefault("e", e) is not None and orig(e)
    with torch.no_grad():
        enc.compute_query()
    emb = seen["e"][0]
    words = bundle.model.token_embedding(enc.prompt_word_ids)
    n = words.shape[0]
    assert emb.shape[0] == 2 + n + 3
    assert torch.equal(emb[1 : 1 + n], words)
    assert torch.equal(emb[1 + n : 1 + n + 3], enc.mirror)


def test_mirror_too_long_for_the_text_encoder_is_a_config_error():
    with pytest.raises(clip2depth.ConfigError, match="mirror_length"):
        clip2depth.create_model("tiny", mirror_length=80)


@pytest.mark.parametrize("mode", ["mirror", "language", "concat", "none"])
def test_every_prompt_mode_trains(mode):
    model = clip2depth.create_model("tiny", prompt_mode=mode)
    model.train()
    model(torch.rand(1, 3, 32, 48)).mean().backward()
    names = {n for n, _ in model.trainable_parameters()}
    assert ("prompt_encoder.mirror" in names) == (mode in ("mirror", "concat"))
    assert (model.decoder.film_mul is None) == (mode == "none")
    assert all(p.grad is not None for _, p in model.trainable_parameters())


def test_query_is_cached_in_eval_and_never_stale(fresh_tiny, monkeypatch):
    model = fresh_tiny.eval()
    calls = []
    real = model.prompt_encoder.compute_query
    monkeypatch.setattr(model.prompt_encoder, "compute_query", lambda: calls.append(1) or real())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = model(x)
        model(x)
    assert len(calls) == 1
    # an optimizer step changes the mirror in place: the next eval forward must see it
    opt = torch.optim.SGD([model.prompt_encoder.mirror], lr=10.0)
    model.prompt_encoder.mirror.grad = torch.randn_like(model.prompt_encoder.mirror)
    opt.step()
    with torch.no_grad():
        b = model(x)
    assert len(calls) == 2
    assert not torch.equal(a, b)
    with torch.no_grad():
        model.prompt_encoder.mirror.copy_(torch.zeros_like(model.prompt_encoder.mirror))
        model(x)
    assert len(calls) == 3


def test_query_is_computed_once_per_training_forward(fresh_tiny, monkeypatch):
    model = fresh_tiny.train()
    calls = []
    real = model.prompt_encoder.compute_query
    monkeypatch.setattr(model.prompt_encoder, "compute_query", lambda: calls.append(1) or real())
    model(torch.rand(4, 3, 32, 32))
    assert len(calls) == 1


# ------------------------------------------------------------------------------ infer

def test_infer_returns_metres_at_the_input_size(tiny_model):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(250, 333, 3), dtype=np.uint8)
    out = tiny_model.infer(arr)
    assert out.shape == (250, 333) and out.dtype == np.float32
    assert np.all(out > 0) and np.all(out <= tiny_model.config.max_depth)
    out_pil = tiny_model.infer(Image.fromarray(arr))
    np.testing.assert_allclose(out_pil, out, atol=1e-5)
    out_t = tiny_model.infer(torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    np.testing.assert_allclose(out_t, out, atol=1e-5)


def test_infer_batch_matches_single_inference(tiny_model):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 255, size=s, dtype=np.uint8) for s in [(64, 80, 3), (96, 64, 3), (64, 80, 3)]]
    batch = tiny_model.infer_batch(imgs)
    for img, out in zip(imgs, batch, strict=True):
        assert out.shape == img.shape[:2]
        np.testing.assert_allclose(out, tiny_model.infer(img), atol=1e-4)


def test_infer_max_side_downscales_but_returns_full_size(tiny_model):
    arr = np.zeros((200, 400, 3), dtype=np.uint8)
    assert network_size(200, 400, 16, max_side=128) == (64, 128)
    assert tiny_model.infer(arr, max_side=128).shape == (200, 400)


class _Steps(DepthModel):
    """Depth 1 m on the left half of its input and 3 m on the right half, whatever the pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))  # where inputs go (CPU)

    @property
    def patch_size(self) -> int:
        return 2

    @property
    def processing_size(self) -> tuple[int, int] | None:
        return None  # at the input's own size unless a call says otherwise

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        depth = torch.ones(b, 1, h, w)
        depth[..., w // 2 :] = 3.0
        return depth


def test_infer_resizes_depth_back_bilinearly():
    out = _Steps().infer(np.zeros((4, 8, 3), np.uint8), max_side=4)  # predicted at 2×4: rows of [1, 1, 3, 3]
    # bilinear, align_corners=False, to 8 columns: column i samples x = (i + 0.5) / 2 − 0.5 (nearest: 1,1,1,1,3,3,3,3)
    np.testing.assert_allclose(out, np.tile([1.0, 1.0, 1.0, 1.5, 2.5, 3.0, 3.0, 3.0], (4, 1)), rtol=1e-6)


class _RedIsDepth(_Steps):
    """Depth ``1 + 2·red`` metres, pixel by pixel: a model that mirrors exactly with its input."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 1.0 + 2.0 * images[:, :1]


def test_flip_tta_averages_with_the_prediction_of_the_mirror_image_flipped_back():
    ramp = torch.linspace(0.0, 1.0, 8).expand(3, 4, 8).clone()  # red grows to the right
    model = _RedIsDepth()
    plain = model.infer(ramp)
    np.testing.assert_allclose(plain, 1.0 + 2.0 * ramp[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(model.infer(ramp, flip_tta=True), plain, rtol=1e-6)  # unflipped: a flat 2 m


@pytest.mark.parametrize("max_depth", [10.0, 80.0])
def test_output_is_max_depth_times_sigmoid_of_the_logits(max_depth):
    torch.manual_seed(0)
    model = clip2depth.create_model("tiny", max_depth=max_depth)
    last = model.decoder.head.layers[-1]  # the transposed convolution that gives the logits
    images = torch.rand(1, 3, 32, 48)
    for logit in (-9.0, -5.0, 2.0):  # 10 m: 1.23 mm, 66.9 mm, 8.81 m; 80 m: 9.87 mm, 0.535 m, 70.5 m
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(logit)
            depth = model(images)
        expected = max_depth / (1.0 + math.exp(-logit))
        assert depth.shape == (1, 1, 32, 48)
        torch.testing.assert_close(depth, torch.full_like(depth, expected), rtol=1e-5, atol=0)


def test_film_gain_scales_the_deepest_level_only(fresh_tiny):
    decoder = fresh_tiny.decoder
    torch.manual_seed(0)
    features = [torch.randn(1, width, 2, 3) for width in fresh_tiny.image_encoder.widths]  # shallowest first
    with torch.no_grad():
        query = fresh_tiny.query()
        decoder.film_mul.weight.zero_()
        decoder.film_mul.bias.zero_()  # gain 0: after the deepest level, a = W_add(q) whatever the image said
        base = decoder(features, query)
        deepest_moved = decoder([*features[:-1], features[-1] + 1.0], query)
        shallowest_moved = decoder([features[0] + 1.0, *features[1:]], query)
    assert torch.equal(deepest_moved, base)
    assert (shallowest_moved - base).abs().max().item() > 1e-4  # shallower levels are added after FiLM


def test_preset_registry():
    names = clip2depth.list_models()
    assert {"clip2depth-vit-b-16", "clip2depth-vit-l-14", "tiny"} <= set(names)
    cfg = clip2depth.load_preset("clip2depth-vit-b-16")
    assert (cfg.clip_model, cfg.clip_pretrained, cfg.blocks, cfg.mirror_length, cfg.reduce_dim) == (
        "ViT-B-16", "openai", [3, 6, 9], 64, 64)
    with pytest.raises(clip2depth.ConfigError, match="unknown model preset"):
        clip2depth.create_model("no-such-preset")
    with pytest.raises(clip2depth.ConfigError, match="unknown key 'reduce_dimm'; known: name, clip_model"):
        clip2depth.create_model("tiny", reduce_dimm=3)


def test_paper_preset_trainable_size(vitb16_model):
    trainable = sum(p.numel() for _, p in vitb16_model.trainable_parameters())
    assert vitb16_model.prompt_encoder.mirror.numel() == 64 * 512
    assert 1.0e6 < trainable - 64 * 512 < 1.2e6  # "about 1.1 M parameters + 32,768 for the mirror"


def test_reduced_precision_inference_stays_close_to_fp32_and_returns_float32(tiny_model):
    from clip2depth.models.infer import predict_depth

    torch.manual_seed(1)
    images = torch.rand(2, 3, 50, 70)
    reference = predict_depth(tiny_model, images)
    for precision in ("bf16", "fp16"):
        depth = predict_depth(tiny_model, images, precision=precision)
        assert depth.dtype == torch.float32 and depth.shape == (2, 1, 50, 70)
        relative = ((depth - reference).abs() / reference).mean().item()
        assert 0 < relative < 0.05, (precision, relative)


def test_unknown_precision_is_refused(tiny_model):
    from clip2depth.errors import ConfigError
    from clip2depth.models.infer import predict_depth

    with pytest.raises(ConfigError, match="precision='int8' is not one of fp32, bf16, fp16"):
        predict_depth(tiny_model, torch.rand(1, 3, 32, 32), precision="int8")


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_device_prefers_cuda_then_apple_mps_then_cpu(monkeypatch, cuda, mps, expected):
    from clip2depth.models.factory import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"


def test_model_modules_import_each_other_without_cycles():
    """No import cycle in models/, counting function-local and type-checking imports too."""
    import ast
    from pathlib import Path

    root = Path(clip2depth.__file__).parent / "models"
    graph = {}
    for path in root.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clip2depth.models"):
                parts = node.module.split(".")
                names |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
        graph[path.stem] = names - {path.stem}

    def reaches(start, target, seen=()):
        return any(n == target or (n not in seen and reaches(n, target, (*seen, n))) for n in graph.get(start, ()))

    cycles = [name for name in graph if reaches(name, name)]
    assert not cycles, cycles
    assert "checkpoint" in graph["model"] and "model" not in graph["checkpoint"]
    assert "factory" not in graph["model"]
