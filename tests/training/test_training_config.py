"""The typed training configuration: recipes load into checked dataclasses; ``--set`` converts by field type."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from clip2depth.errors import CheckpointError, ConfigError
from clip2depth.io.colour import colorize_depth
from clip2depth.training.config import (
    SECTIONS,
    Recipe,
    apply_overrides,
    build_recipe,
    list_recipes,
    load_recipe,
    read_recipe_file,
)


@pytest.mark.parametrize("name", list_recipes())
def test_every_builtin_recipe_loads_and_round_trips_through_config_yaml(name, tmp_path):
    recipe = load_recipe(name)
    path = tmp_path / "config.yaml"
    path.write_text(__import__("yaml").safe_dump(recipe.to_dict(), sort_keys=False))
    assert read_recipe_file(path) == recipe


def test_builtin_recipes_are_what_their_names_say():
    assert set(list_recipes()) >= {"nyu", "kitti", "folder", "synthetic"}
    nyu, kitti, folder = load_recipe("nyu"), load_recipe("kitti"), load_recipe("folder")
    assert (nyu.data.dataset, nyu.eval.crop, nyu.eval.max_depth) == ("nyu", "nyu_eigen", 10.0)
    assert (kitti.data.dataset, kitti.eval.crop, kitti.eval.max_depth) == ("kitti", "kitti_garg", 80.0)
    assert (folder.data.dataset, folder.data.val_fraction, folder.pretrained) == ("folder", 0.1, "openai")


def test_every_field_has_a_default_and_a_docstring():
    for cls in [Recipe, *SECTIONS.values()]:
        tree = ast.parse(inspect.getsource(cls))
        body = tree.body[0].body
        documented = {
            node.target.id for node, after in zip(body, body[1:], strict=False)
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
        }
        for f in dataclasses.fields(cls):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
            if cls is not Recipe or f.name not in SECTIONS:  # a section is documented by its class
                assert f.name in documented, f"{cls.__name__}.{f.name} has no docstring"


def test_set_values_are_converted_to_the_field_type():
    r = build_recipe("synthetic", overrides=[
        "train.lr=1e-4", "train.batch_size=16", "train.tensorboard=yes", "train.max_steps=null",
        "train.time_limit_s=3600", "augment.crop_size=[96, 128]", "augment.gamma=[0.8, 1.2]", "eval.crop=none",
        "train.amp=bf16", "model_overrides.max_depth=20", "data.kwargs.size=[32, 48]",
    ])
    assert r.train.lr == 1e-4 and isinstance(r.train.lr, float)
    assert r.train.batch_size == 16 and isinstance(r.train.batch_size, int)
    assert r.train.tensorboard is True and r.train.max_steps is None and r.train.time_limit_s == 3600.0
    assert r.augment.crop_size == (96, 128) and r.augment.gamma == (0.8, 1.2)
    assert r.eval.crop is None and r.train.amp == "bf16"
    assert r.model_overrides == {"max_depth": 20.0} and isinstance(r.model_overrides["max_depth"], float)
    assert r.data.kwargs["size"] == [32, 48]


def test_shortcut_flags_go_through_the_same_checks():
    r = build_recipe("nyu", data_root="/data/nyu", model="tiny", pretrained="none")
    assert (r.data.root, r.model, r.pretrained) == ("/data/nyu", "tiny", None)
    with pytest.raises(ConfigError, match="unknown model preset 'no-such-preset'"):
        build_recipe("synthetic", model="no-such-preset")


def test_integral_float_for_an_int_field_and_non_finite_numbers():
    assert apply_overrides(Recipe(), ["train.batch_size=8.0"]).train.batch_size == 8
    for bad in ("train.batch_size=8.5", "train.lr=nan", "train.lr=inf", "train.seed=true"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            apply_overrides(Recipe(), [bad])


def test_folder_only_fields_are_refused_for_other_datasets():
    with pytest.raises(ConfigError, match="data.train_list='x.txt' is invalid: expected null: only dataset=folder"):
        build_recipe("nyu", overrides=["data.train_list=x.txt"])


def test_batch_must_split_into_accumulation_steps():
    with pytest.raises(ConfigError, match=r"train.batch_size=6 is invalid: expected a multiple of accumulation \(4\)"):
        build_recipe("synthetic", overrides=["train.batch_size=6", "train.accumulation=4"])


def test_eval_section_gives_the_evaluation_settings():
    s = build_recipe("kitti").eval.settings()
    assert (s.crop, s.min_depth, s.max_depth, s.flip_tta) == ("kitti_garg", 1e-3, 80.0, False)


def test_reports_leave_the_matplotlib_backend_alone(tmp_path, monkeypatch):
    from clip2depth.reporting.report import DEPTH_CMAP, plot_curves, plot_samples

    def forbidden(*args, **kwargs):
        raise AssertionError("matplotlib.use() called by a library function")

    monkeypatch.setattr(matplotlib, "use", forbidden)
    before = matplotlib.get_backend()
    plot_curves([{"step": 1, "loss": 1.0}, {"step": 1, "val_abs_rel": 0.5}], tmp_path / "curves.png")
    gt = torch.full((1, 8, 10), 2.0)
    sample = {"image": torch.rand(3, 8, 10), "depth": gt}
    plot_samples([(sample, np.full((8, 10), 2.5, dtype=np.float32))], tmp_path / "samples.png", max_depth=10.0)
    assert matplotlib.get_backend() == before
    with Image.open(tmp_path / "curves.png") as curves, Image.open(tmp_path / "samples.png") as samples:
        assert (curves.format, curves.size, samples.format, samples.size) == ("PNG", (900, 320), "PNG", (1170, 234))
        colours = {tuple(c) for c in np.asarray(samples.convert("RGB")).reshape(-1, 3)}
    far = colorize_depth(np.full((1, 1), 2.0), cmap=DEPTH_CMAP, vmin=0.0, vmax=2.0)[0, 0]  # 2 m: the scale's top
    assert tuple(far) in colours


def test_a_model_on_another_clip_takes_that_clips_own_weights(tmp_path, tiny_model):
    # nyu trains clip2depth-vit-b-16 (CLIP ViT-B-16) on openai's weights
    assert build_recipe("nyu", model="tiny").pretrained is None  # tiny's CLIP has no tag: random weights
    assert build_recipe("nyu", model="clip2depth-vit-l-14").pretrained == "openai"
    assert build_recipe("nyu", model="clip2depth-eva02-b-16").pretrained == "merged2b_s8b_b131k"
    assert build_recipe("nyu", overrides=["model=tiny"]).pretrained is None  # --set model= is the same switch
    assert build_recipe("nyu", model="tiny", pretrained="openai").pretrained == "openai"  # asked for: kept
    assert build_recipe("synthetic", model="clip2depth-vit-b-16").pretrained is None  # random stays random
    own = build_recipe("nyu", overrides=["model_overrides.clip_model=EVA02-B-16",
                                         "model_overrides.clip_pretrained=merged2b_s8b_b131k"])
    assert own.pretrained == "merged2b_s8b_b131k"
    tiny_model.save_pretrained(tmp_path / "trained")
    assert build_recipe("nyu", model=str(tmp_path / "trained")).pretrained is None  # its recorded weights

    local = tmp_path / "local.yaml"
    local.write_text("model: clip2depth-vit-b-16\npretrained: /weights/vit-b-16.safetensors\n")
    same_clip = build_recipe(str(local), model="clip2depth-vit-b-16-kitti")
    assert same_clip.pretrained == "/weights/vit-b-16.safetensors"  # the same CLIP: its weights fit
    assert build_recipe(str(local), model="tiny").pretrained is None


def test_the_recipe_resolves_its_model_once():
    recipe = build_recipe("synthetic", overrides=["model_overrides.mirror_length=4"])
    spec = recipe.model_spec
    assert spec.name == "tiny" and spec.config.mirror_length == 4 and spec.directory is None
    assert spec.config == load_recipe("synthetic").model_spec.config.replace(mirror_length=4)
    assert recipe.model_spec is spec
    remote = Recipe(model="hf-hub:org/depth")  # not downloaded while the recipe is checked
    assert remote.model_spec.config is None and remote.model_spec.name == "hf-hub:org/depth"


def test_a_checkpoint_of_the_recipes_model_keeps_its_clip_weights(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "last")
    record = json.loads((tmp_path / "last" / "config.json").read_text())
    record["clip"]["weights"] = "/weights/tiny.safetensors"  # as if trained on a weights file
    record["model"]["train_size"] = list(Recipe(model="tiny").train_size())  # ... with that recipe
    (tmp_path / "last" / "config.json").write_text(json.dumps(record))
    spec = Recipe(model="tiny").model_spec.with_directory(tmp_path / "last")
    assert spec.directory == tmp_path / "last" and spec.clip_weights == "/weights/tiny.safetensors"
    assert spec.weights_sha256 == record["weights_sha256"] and spec.config == Recipe().model_spec.config
    asked = Recipe(model="tiny", pretrained="/other.safetensors").model_spec.with_directory(tmp_path / "last")
    assert asked.clip_weights == "/other.safetensors"
    with pytest.raises(CheckpointError, match="other settings \\(mirror_length\\)"):
        apply_overrides(Recipe(model="tiny"), ["model_overrides.mirror_length=4"]).model_spec.with_directory(
            tmp_path / "last")
