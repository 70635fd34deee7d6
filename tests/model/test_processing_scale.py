"""The model's own scale (docs/predict.md#processing-size): which size the network sees, and that depth comes back
at the input's size; evaluation keeps the protocol's sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clip2depth
from clip2depth.data.synthetic import SyntheticDataset
from clip2depth.errors import ConfigError
from clip2depth.evaluation.protocol import EvalSettings, evaluate
from clip2depth.inference.run import PredictOptions
from clip2depth.io.depth import load_depth_png16
from clip2depth.models.config import list_models, load_preset
from clip2depth.models.infer import network_size
from clip2depth.training.config import apply_overrides, load_recipe
from clip2depth.training.trainer import Trainer, train
from clirun import assert_user_error, run_cli

# --- the rule, worked out by hand ------------------------------------------------------------------


def test_presets_carry_the_scale_of_their_recipe() -> None:
    sizes = {name: load_preset(name).train_size for name in list_models()}
    assert sizes["clip2depth-vit-b-16"] == [480, 640]  # the NYU evaluation input (training crop 416x544)
    assert sizes["clip2depth-vit-b-16-kitti"] == [352, 1216]  # the KB crop
    assert sizes["tiny"] == [192, 256]  # the synthetic recipe's validation scenes
    assert all(size in ([480, 640], [352, 1216], [192, 256]) for size in sizes.values()), sizes


def test_a_phone_photo_is_predicted_at_the_paper_scale() -> None:
    paper = load_preset("clip2depth-vit-b-16").train_size
    # 3000x4000 (H x W): scale sqrt(480*640 / (3000*4000)) = 0.16 -> exactly 480 x 640, 30 x 40 patches.
    assert network_size(3000, 4000, 16, model_size=paper) == (480, 640)
    assert network_size(4000, 3000, 16, model_size=paper) == (640, 480)  # portrait: aspect kept
    # 16:9, 2250x4000: scale sqrt(307200 / 9e6) = 0.18475 -> 415.7 x 739.0 -> 26 and 46 patches of 16.
    assert network_size(2250, 4000, 16, model_size=paper) == (416, 736)
    # A small image is scaled up to the same pixel count.
    assert network_size(120, 160, 16, model_size=paper) == (480, 640)
    # 14-px patches (ViT-L/14): 480 / 14 = 34.3 -> 34, 640 / 14 = 45.7 -> 46.
    assert network_size(3000, 4000, 14, model_size=load_preset("clip2depth-vit-l-14").train_size) == (476, 644)
    # KITTI raw 375x1242 at the KB crop's pixel count: scale 0.95865 -> 359.5 x 1190.6 -> 22 and 74 patches.
    assert network_size(375, 1242, 16, model_size=load_preset("clip2depth-vit-b-16-kitti").train_size) == (352, 1184)


def test_overrides_and_native() -> None:
    own = (480, 640)
    assert network_size(3000, 4000, 16, model_size=own, max_side=1600) == (1200, 1600)  # the old default
    assert network_size(480, 640, 16, model_size=own, max_side=1600) == (480, 640)  # max_side never enlarges
    assert network_size(3000, 4000, 16, model_size=own, size=(500, 700)) == (496, 704)  # rounded to patches
    assert network_size(100, 130, 16, model_size=own, native=True) == (96, 128)
    assert network_size(100, 130, 16) == (96, 128)  # no model scale: the image's own size
    with pytest.raises(ConfigError, match=r"^max_side and native exclude each other") as both:
        network_size(100, 130, 16, model_size=own, max_side=64, native=True)
    assert both.value.params == ("max_side", "native")
    with pytest.raises(ConfigError, match=r"^size and native exclude each other"):
        PredictOptions(size=(64, 64), native=True)
    for bad in ((0, 64), (64,), (64.5, 64), "64x64", (True, 64)):
        with pytest.raises(ConfigError, match=r"^size=.* must be \(height, width\), two whole numbers") as caught:
            PredictOptions(size=bad)
        assert caught.value.params == ("size",)
    with pytest.raises(ConfigError, match=r"^max_side=1.5 must be a positive whole number"):
        PredictOptions(max_side=1.5)


# --- the whole path on the tiny model ---------------------------------------------------------------


@pytest.fixture()
def seen(tiny_model):
    """The H, W of every batch the model's forward receives."""
    sizes: list[tuple[int, int]] = []
    handle = tiny_model.register_forward_pre_hook(lambda _, args: sizes.append(tuple(args[0].shape[-2:])))
    yield sizes
    handle.remove()


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_infer_predicts_at_the_model_scale_and_returns_the_input_size(tiny_model, seen) -> None:
    assert tiny_model.processing_size == (192, 256)
    photo = _photo(600, 800)  # 0.32 x -> 192 x 256
    depth = tiny_model.infer(photo)
    assert depth.shape == (600, 800) and seen == [(192, 256)]
    np.testing.assert_array_equal(depth, tiny_model.infer(photo, size=(192, 256)))
    assert not np.allclose(depth, tiny_model.infer(photo, native=True))  # 608 x 800: another prediction
    assert seen[-1] == (608, 800)  # 600 / 16 = 37.5 -> 38 patches (round half to even)
    assert tiny_model.infer(photo, max_side=400).shape == (600, 800) and seen[-1] == (304, 400)
    assert tiny_model.infer(_photo(48, 64)).shape == (48, 64) and seen[-1] == (192, 256)  # scaled up
    depths = tiny_model.infer_batch([photo, _photo(48, 64, 1), photo], batch_size=2)
    assert [d.shape for d in depths] == [(600, 800), (48, 64), (600, 800)]
    np.testing.assert_allclose(depths[0], depth, rtol=1e-5, atol=1e-6)  # batched or alone: the same depth
    with pytest.raises(ConfigError, match="max_side and size exclude each other"):
        tiny_model.infer(photo, max_side=64, size=(64, 64))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    clip2depth.create_model("tiny").save_pretrained(out)
    return out


def test_predict_writes_full_size_outputs_predicted_at_the_model_scale(tiny_dir: Path, tmp_path: Path) -> None:
    Image.fromarray(_photo(120, 200)).save(tmp_path / "photo.png")
    model = clip2depth.create_model(tiny_dir)
    runs = {"own": [], "size": ["--size", "64", "96"], "native": ["--native"], "max": ["--max-side", "100"]}
    for name, flags in runs.items():
        result = run_cli("-q", "predict", tmp_path / "photo.png", "--model", tiny_dir, "--format", "png16,npy",
                         "--out", tmp_path / name, *flags)
        assert result.code == 0, result.err
    depth = {name: np.load(tmp_path / name / "photo.npy") for name in runs}
    assert all(d.shape == (120, 200) for d in depth.values())
    assert load_depth_png16(tmp_path / "own" / "photo.png").shape == (120, 200)
    # 120x200 at 192x256's pixel count: 1.431 x -> 171.7 x 286.2 -> 176 x 288.
    np.testing.assert_allclose(depth["own"], model.infer(tmp_path / "photo.png", size=(176, 288)), rtol=1e-5)
    np.testing.assert_allclose(depth["size"], model.infer(tmp_path / "photo.png", size=(64, 96)), rtol=1e-5)
    np.testing.assert_allclose(depth["native"], model.infer(tmp_path / "photo.png", size=(128, 192)), rtol=1e-5)
    np.testing.assert_allclose(depth["max"], model.infer(tmp_path / "photo.png", size=(64, 96)), rtol=1e-5)
    assert not np.allclose(depth["own"], depth["native"])


def test_predict_refuses_two_scale_flags_in_one_line(tiny_dir: Path, tmp_path: Path) -> None:
    result = run_cli("predict", tmp_path / "photo.png", "--model", tiny_dir, "--max-side", "64", "--native")
    assert_user_error(result, "--native", "not allowed with argument --max-side")
    result = run_cli("predict", tmp_path / "photo.png", "--model", tiny_dir, "--max-side", "none")
    assert_user_error(result, "--max-side", "'none'")  # --native replaces it


def test_info_reports_the_processing_size_and_counts_flops_at_it(tiny_dir: Path) -> None:
    own = json.loads(run_cli("-q", "info", "--model", tiny_dir, "--json").out)
    given = json.loads(run_cli("-q", "info", "--model", tiny_dir, "--json", "--size", "96", "128").out)
    assert own["processing_size"] == [192, 256] and own["size"] == [192, 256]
    assert given["processing_size"] == [192, 256] and given["size"] == [96, 128]
    assert own["gflops"]["per_image"] > 3.5 * given["gflops"]["per_image"]  # 4x the pixels


# --- training records its scale; evaluation keeps its own -----------------------------------------

SMALL = [
    "data.kwargs.size=[64, 96]", "data.kwargs.length=8", "data.val_kwargs.size=[64, 96]",
    "data.val_kwargs.length=2", "augment.crop_size=[64, 80]", "train.batch_size=4", "train.num_workers=0",
    "train.max_steps=2", "train.val_every=2",
]


def test_recipes_give_the_evaluation_size_else_the_training_crop() -> None:
    assert load_recipe("nyu").train_size() == (480, 640)
    assert load_recipe("kitti").train_size() == (352, 1216)
    assert load_recipe("synthetic").train_size() == (192, 256)
    assert load_recipe("folder").train_size() == (352, 480)  # the files decide: the crop
    assert load_recipe("nyu").model_spec.config.train_size == [480, 640]
    given = apply_overrides(load_recipe("nyu"), ["model_overrides.train_size=[416, 544]"])
    assert given.model_spec.config.train_size == [416, 544]


def test_training_writes_train_size_and_old_configs_load_with_the_default(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(apply_overrides(load_recipe("synthetic"), SMALL), run_dir, progress=False)
    config = json.loads((run_dir / "best" / "config.json").read_text())
    assert config["model"]["train_size"] == [64, 96]
    assert clip2depth.create_model(run_dir / "best").processing_size == (64, 96)
    # a config.json written before the field existed
    del config["model"]["train_size"]
    (run_dir / "best" / "config.json").write_text(json.dumps(config))
    assert clip2depth.create_model(run_dir / "best").processing_size == (480, 640)


def test_validation_during_training_feeds_the_images_at_their_own_size(tmp_path: Path) -> None:
    recipe = apply_overrides(load_recipe("synthetic"), [*SMALL, "model_overrides.train_size=[128, 160]"])
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    trainer.prepare()
    assert trainer.model.processing_size == (128, 160)
    sizes: list[tuple[int, int]] = []
    trainer.model.register_forward_pre_hook(lambda _, args: sizes.append(tuple(args[0].shape[-2:])))
    trainer.validate()
    assert sizes == [(64, 96), (64, 96)]


def test_evaluation_sizes_do_not_depend_on_the_model_scale(tiny_model, seen) -> None:
    dataset = SyntheticDataset(split="val", size=(72, 100), length=1)
    evaluate(tiny_model, dataset, EvalSettings(crop=None), progress=False)
    evaluate(tiny_model, dataset, EvalSettings(crop=None, input_size=(64, 96)), progress=False)
    evaluate(tiny_model, dataset, EvalSettings(crop=None, max_side=64), progress=False)
    # own size rounded (72 / 16 = 4.5 -> 4, 100 / 16 = 6.25 -> 6); the given size; shrunk to a longest side of 64
    assert seen == [(64, 96), (64, 96), (48, 64)]
    native = evaluate(tiny_model, dataset, EvalSettings(crop=None), progress=False, keep_predictions=1)
    expected = tiny_model.infer(dataset[0]["image"], native=True)
    np.testing.assert_array_equal(native.examples[0][1], expected)
