"""ONNX export: onnxruntime matches PyTorch at several sizes (odd ones too); q is baked in; metadata; the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import clip2depth
from clip2depth.cli import export as export_command
from clip2depth.inference.export import INPUT_NAME, OUTPUT_NAME, DepthGraph, export_onnx, verify_onnx
from clirun import assert_user_error, run_cli

MAX_RELATIVE_ERROR = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model with non-trivial trained parts, saved, reloaded and exported once for the module."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(7)
    model = clip2depth.create_model("tiny")
    with torch.no_grad():
        model.prompt_encoder.mirror.add_(torch.randn_like(model.prompt_encoder.mirror))
        model.decoder.head.layers[-1].bias.add_(0.3)
    model.save_pretrained(str(root / "model"))
    loaded = clip2depth.create_model(str(root / "model"))
    path = root / "tiny.onnx"
    export_onnx(loaded, path, sample_size=(224, 320))
    return loaded, path


def _run(path, images: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]


def _relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(got - expected) / np.abs(expected)))


def test_graph_has_dynamic_batch_height_width(exported):
    _, path = exported
    graph = onnx.load(str(path)).graph
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert not any(i.name == "prompt_encoder.mirror" for i in graph.initializer)


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 224, 320), (2, 352, 480), (2, 64, 96)])
def test_onnxruntime_matches_pytorch(exported, batch, height, width):
    model, path = exported
    images = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height + batch))
    with torch.no_grad():
        expected = model(images).numpy()
    got = _run(path, images)
    assert got.shape == (batch, 1, height, width)
    assert _relative_error(got, expected) <= MAX_RELATIVE_ERROR
    assert np.all(got > 0) and np.all(got <= model.max_depth)


@pytest.mark.parametrize(("height", "width"), [(100, 130), (37, 250), (8, 9)])
def test_any_input_size_comes_back_at_that_size(exported, height, width):
    model, path = exported
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(width))
    got = _run(path, images)
    assert got.shape == (2, 1, height, width)
    with torch.no_grad():
        expected = DepthGraph(model, model.query())(images).numpy()
        infer = model.infer(images[0], native=True)  # the graph predicts at the size it is given
    assert _relative_error(got, expected) <= MAX_RELATIVE_ERROR
    # model.infer antialiases its downscale, the graph cannot: same size, close values.
    assert infer.shape == (height, width)
    assert _relative_error(got[0, 0], infer) < 0.05


def test_graph_resizes_to_the_nearest_patch_multiple(exported, monkeypatch):
    model, _ = exported
    seen = []

    def decoder(features, query):
        seen.append(tuple(features[0].shape[-2:]))
        return torch.ones(1, 1, 16 * features[0].shape[-2], 16 * features[0].shape[-1])

    monkeypatch.setattr(model.decoder, "forward", decoder)
    with torch.no_grad():
        DepthGraph(model, model.query())(torch.rand(1, 3, 100, 130))
    assert seen == [(6, 8)]  # 100/16 = 6.25 -> 6 patches, 130/16 = 8.1 -> 8 patches (96x128)


def test_verify_onnx_reports_each_size(exported):
    model, path = exported
    errors = verify_onnx(model, path, [(64, 96), (96, 64), (100, 130)], batch=2)
    assert set(errors) == {(64, 96), (96, 64), (100, 130)}
    assert all(0 <= e <= MAX_RELATIVE_ERROR for e in errors.values())


def test_metadata_describes_the_graph(exported):
    model, path = exported
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["preset"] == "tiny" and props["units"] == "metres" and props["precision"] == "fp32"
    assert float(props["max_depth"]) == model.max_depth
    assert int(props["patch_size"]) == model.patch_size
    assert json.loads(props["train_size"]) == list(model.config.train_size) == [192, 256]
    assert np.allclose(json.loads(props["mean"]), model.image_encoder.mean.flatten().tolist())
    assert np.allclose(json.loads(props["std"]), model.image_encoder.std.flatten().tolist())
    assert "Bx3xHxW RGB in [0, 1]" in props["input"]


def test_fp16_export_is_smaller_and_close(exported, tmp_path):
    model, path = exported
    half = tmp_path / "half.onnx"
    export_onnx(model, half, sample_size=(64, 96), fp16=True)
    assert half.stat().st_size < 0.7 * path.stat().st_size
    props = {p.key: p.value for p in onnx.load(str(half)).metadata_props}
    assert props["precision"] == "fp16"
    errors = verify_onnx(model, half, [(64, 96), (100, 130)])
    assert all(0 < e <= 2e-2 for e in errors.values())  # float16 rounding, not float32 identity
    assert model.image_encoder.mean.dtype == torch.float32  # the live model stays float32


def test_query_is_a_constant_of_the_graph(exported, tmp_path):
    model, path = exported
    images = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    before_onnx = _run(path, images)
    with torch.no_grad():
        before_torch = model(images).numpy()
    mirror = model.prompt_encoder.mirror
    saved = mirror.detach().clone()
    try:
        with torch.no_grad():
            mirror.add_(torch.randn_like(mirror))
            after_torch = model(images).numpy()
        after_onnx = _run(path, images)
    finally:
        with torch.no_grad():
            mirror.copy_(saved)
    assert _relative_error(after_torch, before_torch) > 1e-3  # the mirror matters to PyTorch ...
    np.testing.assert_array_equal(after_onnx, before_onnx)  # ... but not to the exported graph


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = clip2depth.create_model("tiny").train()
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    types_before = [type(m) for m in model.modules()]
    attributes_before = [sorted(vars(m)) for m in model.modules()]
    export_onnx(model, tmp_path / "m.onnx", sample_size=(64, 64))
    assert model.training and not model.image_encoder.visual.training
    assert [type(m) for m in model.modules()] == types_before  # no module swapped or patched in the live model
    assert [sorted(vars(m)) for m in model.modules()] == attributes_before
    assert torch.backends.mha.get_fastpath_enabled()
    model.eval()
    with torch.no_grad():
        depth = model(images)  # the PyTorch path still works (cache, fast path) after export
    assert _relative_error(_run(tmp_path / "m.onnx", images), depth.numpy()) <= MAX_RELATIVE_ERROR
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind


def test_bad_sizes_and_opset_are_config_errors(tmp_path):
    model = clip2depth.create_model("tiny")
    with pytest.raises(clip2depth.ConfigError, match="multiples of the patch size 16"):
        export_onnx(model, tmp_path / "m.onnx", sample_size=(100, 64))  # the traced sample only
    for opset in (13, 99):
        with pytest.raises(clip2depth.ConfigError, match=f"opset={opset} is not supported"):
            export_onnx(model, tmp_path / "m.onnx", opset=opset)
    assert not list(tmp_path.iterdir())


def test_missing_onnxruntime_names_the_extra(hide_module, tmp_path):
    hide_module("onnxruntime")
    with pytest.raises(clip2depth.Clip2DepthError, match=r"pip install 'clip2depth\[onnx\]'"):
        export_onnx(clip2depth.create_model("tiny"), tmp_path / "m.onnx")


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    export_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_exports_and_checks_three_sizes_by_default(exported, tmp_path, capsys):
    model, _ = exported
    model_dir = tmp_path / "model"
    model.save_pretrained(str(model_dir))
    out = tmp_path / "cli.onnx"
    assert export_command.run(_cli(["export", "--model", str(model_dir), "--onnx", str(out)])) == 0
    printed = capsys.readouterr().out
    assert "224x320: max relative error" in printed and "352x480: max relative error" in printed
    assert "100x130: max relative error" in printed  # a size that is not a patch multiple
    images = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(images).numpy()
    assert _relative_error(_run(out, images), expected) <= MAX_RELATIVE_ERROR  # the file is this model


@pytest.mark.parametrize(("sizes", "fragments"), [(["64"], ["H W pairs"]),
                                                 (["64", "0"], ["--check-sizes", "'0' is not a whole number"])])
def test_cli_refuses_bad_check_sizes_before_exporting(tmp_path, sizes, fragments):
    result = run_cli("export", "--model", "tiny", "--onnx", tmp_path / "m.onnx", "--check-sizes", *sizes)
    assert_user_error(result, *fragments)
    assert not list(tmp_path.iterdir())


def test_cli_fails_when_the_check_fails(tmp_path, monkeypatch):
    import clip2depth.inference.export as export_module

    monkeypatch.setattr(export_module, "verify_onnx", lambda *a, **k: {(64, 64): 1e-2})
    args = _cli(["export", "--model", "tiny", "--onnx", str(tmp_path / "m.onnx"), "--check-sizes", "64", "64"])
    with pytest.raises(clip2depth.Clip2DepthError, match="differs from PyTorch"):
        export_command.run(args)
