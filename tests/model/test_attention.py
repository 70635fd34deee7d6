"""The image encoder's attention through scaled_dot_product_attention gives the depth the module path gave."""

from __future__ import annotations

import pytest
import torch

import clip2depth
from clip2depth.models import image_encoder
from clip2depth.models.image_encoder import run_block


def _depth(model, images, *, module_path: bool, monkeypatch) -> torch.Tensor:
    with monkeypatch.context() as m:
        if module_path:  # what the encoder did before: each open_clip block called as a module (MHA fast path)
            m.setattr(image_encoder, "run_block", lambda block, x: block(x))
        with torch.no_grad():
            return model(images)


@pytest.mark.parametrize("model_fixture", ["tiny_model", "vitb16_model"])
def test_sdpa_attention_keeps_depth_within_1e4_relative(model_fixture, request, monkeypatch):
    model = request.getfixturevalue(model_fixture).eval()
    images = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    assert torch.backends.mha.get_fastpath_enabled()  # the old path really was the fused kernel
    old = _depth(model, images, module_path=True, monkeypatch=monkeypatch)
    new = _depth(model, images, module_path=False, monkeypatch=monkeypatch)
    assert new.shape == old.shape == (2, 1, 96, 128)
    assert ((new - old).abs() / old).max().item() <= 1e-4


def test_run_block_equals_the_block_with_gradients():
    # The fine-tuning ablation runs its unfrozen blocks with autograd through the same function.
    model = clip2depth.create_model("tiny", unfreeze_image_blocks=1)
    block = model.image_encoder.visual.transformer.resblocks[0]
    x = torch.randn(2, 17, model.image_encoder.width, generator=torch.Generator().manual_seed(0))
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    run_block(block, a).square().sum().backward()
    block(b).square().sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_blocks_of_another_kind_run_themselves():
    layer = torch.nn.TransformerEncoderLayer(32, 4, batch_first=True).eval()
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(run_block(layer, x), layer(x))


def test_a_hooked_block_runs_as_a_module_so_its_hooks_fire(tiny_model):
    block = tiny_model.image_encoder.visual.transformer.resblocks[0]
    seen = []
    handle = block.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    try:
        x = torch.randn(1, 5, tiny_model.image_encoder.width)
        with torch.no_grad():
            out = run_block(block, x)
    finally:
        handle.remove()
    assert seen == [out.shape]
