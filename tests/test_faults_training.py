"""Faults a user can cause in train / demo / ablate, through the real CLI: one ``error:`` line, exit 1, no
traceback, and never a lost or damaged run."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from clirun import assert_user_error, run_cli

SMALL = [
    "data.kwargs.size=[64, 96]", "data.kwargs.length=8", "data.val_kwargs.size=[64, 96]",
    "data.val_kwargs.length=2", "augment.crop_size=[64, 80]", "train.batch_size=4", "train.num_workers=0",
    "train.log_every=1", "train.val_every=2", "train.max_steps=2",
]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def no_model_download(monkeypatch):
    monkeypatch.delenv("CLIP2DEPTH_NYU_ROOT", raising=False)


@pytest.fixture()
def no_model_build(monkeypatch):
    """Fails the test if a model is built: bad input must be refused before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the arguments were checked")

    monkeypatch.setattr("clip2depth.training.trainer.create_model", refuse)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    result = run_cli("-q", "train", "--out", out, *sets(*SMALL))
    assert result.code == 0, result.err
    return out


@pytest.fixture()
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


@pytest.mark.parametrize(
    ("item", "fragments"),
    [
        ("train.lr=abc", ["train.lr='abc'", "expected a number"]),
        ("train.batch_size=0", ["train.batch_size=0", ">= 1"]),
        ("train.batch_size=-4", ["train.batch_size=-4", ">= 1"]),
        ("train.accumulation=0", ["train.accumulation=0"]),
        ("train.log_every=0", ["train.log_every=0"]),
        ("train.val_every=0", ["train.val_every=0"]),
        ("train.num_workers=-1", ["train.num_workers=-1", ">= 0"]),
        ("train.max_steps=-5", ["train.max_steps=-5", ">= 1"]),
        ("train.epochs=two", ["train.epochs='two'", "expected an integer"]),
        ("train.amp=off", ["train.amp='off'", "auto, fp32, bf16, fp16"]),
        ("train.compile=maybe", ["train.compile='maybe'", "true or false"]),
        ("augment.crop_size=[0, 64]", ["augment.crop_size", "positive"]),
        ("augment.crop_size=64", ["augment.crop_size", "a list of 2 integers"]),
        ("augment.flip_p=1.5", ["augment.flip_p=1.5", "<= 1"]),
        ("augment.gamma=[1.2, 0.8]", ["augment.gamma", "low <= high"]),
        ("eval.min_depth=20", ["eval.min_depth=20", "eval.max_depth=10"]),
        ("eval.max_depth=0.0001", ["eval.min_depth", "eval.max_depth=0.0001"]),
        ("eval.crop=middle", ["eval.crop='middle'", "nyu_eigen"]),
        ("train=3", ["train is a section", "train.epochs="]),
        ("augment=[1, 2]", ["augment is a section"]),
        ("train.nope=1", ["unknown key 'nope' in section train"]),
        ("nope.lr=1", ["unknown key 'nope'"]),
        ("train.lr", ["expected KEY=VALUE"]),
        ("model_overrides.mirror_length=many", ["mirror_length"]),
        ("model_overrides.no_such_field=1", ["no_such_field"]),
        ("data.dataset=imagenet", ["data.dataset='imagenet'", "folder"]),
        ("model=runs/nope/best", ["runs/nope/best", "no model directory", "tiny"]),
        ("model=no-such-preset", ["no-such-preset", "expected a preset", "tiny"]),
    ],
)
def test_bad_set_values_are_one_error_line_before_any_model(item, fragments, no_model_build, tmp_path):
    result = run_cli("train", "--out", tmp_path / "run", "--set", item)
    assert_user_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_user_yaml_unknown_key_is_named_and_missing_keys_take_defaults(tmp_path, no_model_build):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.001\n  learning_rate: 0.01\n")
    assert_user_error(run_cli("train", "--recipe", bad, "--out", tmp_path / "a"), str(bad), "learning_rate")
    partial = tmp_path / "partial.yaml"
    partial.write_text("model: tiny\ntrain:\n  max_steps: 2\n")  # no data / augment / eval sections at all
    from clip2depth.training.config import load_recipe

    recipe = load_recipe(str(partial))
    assert recipe.train.max_steps == 2 and recipe.train.batch_size == 8 and recipe.eval.max_depth == 10.0


def test_nyu_without_data_root_fails_at_once_naming_the_root_and_variable(tmp_path, no_model_build):
    result = run_cli("train", "--recipe", "nyu", "--out", tmp_path / "run")
    assert_user_error(result, "--data-root", "CLIP2DEPTH_NYU_ROOT")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("content", "fragment"), [
    ("", "is empty"),
    ("model: tiny\ntrain: {lr: [", "not valid YAML"),
    ("just text", "must be a mapping"),
    ("model: tiny\ntrain:\n  batch_size: 0\n", "train.batch_size=0"),
])
def test_damaged_config_yaml_on_resume(run_copy, content, fragment, no_model_build):
    (run_copy / "config.yaml").write_text(content)
    assert_user_error(run_cli("train", "--resume", run_copy), "config.yaml", fragment)


def test_truncated_config_yaml_on_resume(run_copy, no_model_build):
    text = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text(text[: len(text) // 2].rsplit("\n", 2)[0] + "\n  lr: [0.1")
    assert_user_error(run_cli("train", "--resume", run_copy), "config.yaml")


def test_existing_run_folder_is_never_replaced_without_overwrite(run_copy):
    before = snapshot(run_copy)
    result = run_cli("-q", "train", "--out", run_copy, *sets(*SMALL))
    assert_user_error(result, str(run_copy), "--resume", "--overwrite")
    assert snapshot(run_copy) == before
    again = run_cli("-q", "train", "--out", run_copy, "--overwrite", *sets(*SMALL))
    assert again.code == 0, again.err
    assert len((run_copy / "log.jsonl").read_text().splitlines()) == len(before["log.jsonl"].splitlines())


def test_demo_and_ablate_refuse_a_used_output_folder(tmp_path, no_model_build):
    for command in ("demo", "ablate"):
        out = tmp_path / command
        out.mkdir()
        marker = "report.md" if command == "demo" else "ablation.md"
        (out / marker).write_text("earlier results")
        assert_user_error(run_cli(command, "--out", out), "--resume", "--overwrite")
        assert (out / marker).read_text() == "earlier results"


def test_bit_flipped_resume_state_is_refused_and_kept(run_copy, no_model_build):
    path = run_copy / "last" / "resume.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    before = snapshot(run_copy)
    assert_user_error(run_cli("train", "--resume", run_copy), "resume.safetensors", "checksum")
    assert snapshot(run_copy) == before


def test_truncated_resume_state_is_refused(run_copy, no_model_build):
    path = run_copy / "last" / "resume.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    assert_user_error(run_cli("train", "--resume", run_copy), "resume.safetensors")


@pytest.mark.parametrize("content", [
    {"state": "step 3"},
    {"unrelated": 1},
    [],
])
def test_resume_json_with_wrong_content_is_refused(run_copy, content):
    meta = json.loads((run_copy / "last" / "resume.json").read_text())
    wrong = {**meta, **content} if isinstance(content, dict) and "state" in content else content
    (run_copy / "last" / "resume.json").write_text(json.dumps(wrong))
    assert_user_error(run_cli("train", "--resume", run_copy), "cannot resume", "resume state")


def test_full_disk_while_saving_is_one_error_line_and_keeps_the_checkpoint(run_copy, monkeypatch):
    before = snapshot(run_copy / "last")
    import clip2depth.models.checkpoint as ckpt

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    result = run_cli("-q", "train", "--resume", run_copy, "--set", "train.max_steps=4")
    assert_user_error(result, "No space left on device", "previous one is intact", "--resume")
    assert snapshot(run_copy / "last") == before
    assert not (run_copy / "last.partial").exists()


def test_non_finite_weights_never_replace_a_finite_checkpoint(run_copy):
    import torch

    from clip2depth.errors import Clip2DepthError
    from clip2depth.training.config import read_recipe_file
    from clip2depth.training.trainer import Trainer

    before = snapshot(run_copy / "last")
    trainer = Trainer(read_recipe_file(run_copy / "config.yaml"), run_copy, resume=True, progress=False)
    trainer.prepare()
    with torch.no_grad():
        next(p for _, p in trainer.model.trainable_parameters()).fill_(float("nan"))
    with pytest.raises(Clip2DepthError, match="non-finite at step 2.*last \\(step 2\\) was kept"):
        trainer.save_checkpoint()
    assert snapshot(run_copy / "last") == before


def test_ctrl_c_during_start_up_exits_130_and_writes_nothing(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("clip2depth.training.trainer.create_model", interrupted)
    out = tmp_path / "run"
    result = run_cli("-q", "train", "--out", out, *sets(*SMALL))
    assert result.code == 130 and "Traceback" not in result.err
    assert not out.exists() or list(out.iterdir()) == []


def test_resume_of_a_run_interrupted_before_its_first_checkpoint_starts_at_step_0(run_copy):
    shutil.rmtree(run_copy / "last")
    shutil.rmtree(run_copy / "best")
    result = run_cli("-q", "train", "--resume", run_copy)
    assert result.code == 0, result.err
    assert "done: 2 steps" in result.out


def test_flag_mistakes(tmp_path, no_model_build):
    assert_user_error(run_cli("train", "--pretrained", "none", "--set", "train.lr=-1"), "train.lr", "> 0")
    assert_user_error(run_cli("train", "--clip-pretrained", "none"), "unrecognized arguments: --clip-pretrained")
    assert_user_error(run_cli("train", "--no-progress"), "unrecognized arguments: --no-progress")  # -q instead
    assert_user_error(run_cli("train", "--resume", tmp_path, "--out", tmp_path / "x"), "--resume", "--out")
    assert_user_error(run_cli("demo", "--out", tmp_path, "--resume", "--overwrite"), "--resume", "--overwrite")
    assert_user_error(run_cli("ablate", "--out", tmp_path / "a", "--variants", "prompt=loud"), "prompt=loud")
    assert_user_error(run_cli("ablate", "--out", tmp_path / "a", "--limit", "-1"), "--limit", "'-1'")
    assert not (tmp_path / "a").exists()


def test_resume_state_of_an_older_run_without_checksum_still_resumes(run_copy):
    path = run_copy / "last" / "resume.json"
    meta = json.loads(path.read_text())
    del meta["resume_sha256"]
    path.write_text(json.dumps(meta))
    result = run_cli("-q", "train", "--resume", run_copy, "--set", "train.max_steps=3")
    assert result.code == 0, result.err
    assert "done: 3 steps" in result.out
    assert "resume_sha256" in (run_copy / "last" / "resume.json").read_text()  # the new checkpoint has one
