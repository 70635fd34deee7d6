"""Faults a user can cause in train / demo / ablate, through the real CLI: one ``error:`` line, exit 1, no
traceback, and never a lost or damaged run."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from safetensors import SafetensorError

from clirun import assert_user_error, run_cli

try:
    import resource
except ImportError:  # not on Windows
    resource = None

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

    monkeypatch.setattr("clip2depth.models.model.Clip2Depth.from_spec", refuse)


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
        ("train.batch_size=0", ["train.batch_size=0 is invalid: expected an integer >= 1"]),
        ("train.batch_size=-4", ["train.batch_size=-4", ">= 1"]),
        ("train.accumulation=0", ["train.accumulation=0"]),
        ("train.log_every=0", ["train.log_every=0"]),
        ("train.val_every=0", ["train.val_every=0"]),
        ("train.num_workers=-1", ["train.num_workers=-1", ">= 0"]),
        ("train.max_steps=-5", ["train.max_steps=-5", ">= 1"]),
        ("train.epochs=two", ["train.epochs='two'", "expected an integer"]),
        ("train.amp=off", ["train.amp='off'", "auto, fp32, bf16, fp16"]),
        ("train.compile=maybe", ["train.compile='maybe' is invalid: expected true/false"]),
        ("train.lr=-1", ["train.lr=-1 is invalid: expected a number > 0"]),
        ("train.lr=nan", ["train.lr=nan is invalid: expected a finite number"]),
        ("train.max_steps=2.5", ["train.max_steps=2.5 is invalid: expected an integer >= 1 or null"]),
        ("augment.crop_size=[0, 64]", ["augment.crop_size=[0, 64] is invalid: expected a list of 2 integers >= 1"]),
        ("augment.crop_size=64", ["augment.crop_size=64", "a list of 2 integers"]),
        ("augment.crop_size=[64, 64, 64]", ["augment.crop_size=[64, 64, 64]", "a list of 2 integers"]),
        ("augment.flip_p=1.5", ["augment.flip_p=1.5 is invalid: expected a number in [0, 1]"]),
        ("augment.gamma=[1.2, 0.8]", ["augment.gamma=[1.2, 0.8]", "low <= high"]),
        ("augment.brightness=[0, 1]", ["augment.brightness=[0, 1]", "a list of 2 numbers > 0"]),
        ("data.val_fraction=1", ["data.val_fraction=1", "a number in [0, 1)"]),
        ("eval.min_depth=20", ["eval.min_depth=20.0 is invalid: expected a number < max_depth (10)"]),
        ("eval.max_depth=0.0001", ["eval.min_depth=0.001", "max_depth (0.0001)"]),
        ("eval.crop=middle", ["eval.crop='middle'", "nyu_eigen", "or null"]),
        ("eval.limit=0", ["eval.limit=0 is invalid: expected an integer >= 1 or null"]),
        ("train=3", ["train is a section", "epochs, max_steps"]),
        ("augment=[1, 2]", ["augment is a section"]),
        ("train.nope=1", ["unknown key 'train.nope'; known: epochs"]),
        ("train.lr.x=1", ["train.lr has no sub-keys"]),
        ("model.mirror_length=0", ["model has no sub-keys; did you mean model_overrides.mirror_length?"]),
        ("nope.lr=1", ["unknown key 'nope'"]),
        ("train.lr", ["expected KEY=VALUE"]),
        ("model_overrides.mirror_length=many", ["model_overrides.mirror_length='many'", "an integer >= 1"]),
        ("model_overrides.mirror_length=0", ["model_overrides.mirror_length=0", "an integer >= 1"]),
        ("model_overrides.reduce_dim=30", ["model_overrides.reduce_dim=30", "a multiple of decoder_heads (4)"]),
        ("model_overrides.no_such_field=1", ["unknown key 'model_overrides.no_such_field'"]),
        ("data.dataset=imagenet", ["data.dataset='imagenet'", "folder"]),
        ("model=runs/nope/best", ["no such model directory: runs/nope/best", "tiny"]),
        ("model=no-such-preset", ["unknown model preset 'no-such-preset'", "tiny"]),
    ],
)
def test_bad_set_values_are_one_error_line_before_any_model(item, fragments, no_model_build, tmp_path):
    result = run_cli("train", "--out", tmp_path / "run", "--set", item)
    assert_user_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_user_yaml_unknown_key_is_named_and_missing_keys_take_defaults(tmp_path, no_model_build):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.001\n  learning_rate: 0.01\n")
    assert_user_error(run_cli("train", "--recipe", bad, "--out", tmp_path / "a"), str(bad),
                      "unknown key 'train.learning_rate'")
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
    ("model: tiny\ntrain: 3\n", "train must be a mapping"),
    ("model: tiny\nclip_pretrained: null\n", "unknown key 'clip_pretrained'"),
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


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),  # its own words
])
def test_full_disk_while_saving_is_one_error_line_and_keeps_the_checkpoint(run_copy, monkeypatch, failure):
    before = snapshot(run_copy / "last")
    import clip2depth.models.checkpoint as ckpt

    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(ckpt, "save_file", full)
    result = run_cli("-q", "train", "--resume", run_copy, "--set", "train.max_steps=4")
    assert_user_error(result, f"cannot write the checkpoint {run_copy / 'last'}", "No space left on device",
                      "previous one is intact", "--resume")
    assert snapshot(run_copy / "last") == before
    assert not (run_copy / "last.partial").exists()


@pytest.mark.skipif(resource is None, reason="needs RLIMIT_FSIZE (POSIX)")
def test_save_state_turns_the_safetensors_write_error_into_an_oserror(tmp_path):
    """A real failed write (file size limit: EFBIG), so the translation is checked against safetensors' own words."""
    import torch

    from clip2depth.models.checkpoint import save_state

    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]))
    try:
        with pytest.raises(OSError) as info:
            save_state({"w": torch.zeros(10_000)}, tmp_path / "w.safetensors")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert info.value.errno == errno.EFBIG and info.value.filename == str(tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_non_finite_weights_never_replace_a_finite_checkpoint(run_copy):
    import torch

    from clip2depth.errors import Clip2DepthError
    from clip2depth.training.config import apply_overrides, read_recipe_file
    from clip2depth.training.trainer import Trainer

    before = snapshot(run_copy / "last")
    recipe = apply_overrides(read_recipe_file(run_copy / "config.yaml"), ["train.max_steps=4"])
    trainer = Trainer(recipe, run_copy, resume=True, progress=False)
    trainer.prepare()
    with torch.no_grad():
        next(p for _, p in trainer.model.trainable_parameters()).fill_(float("nan"))
    with pytest.raises(Clip2DepthError, match="non-finite at step 2.*last \\(step 2\\) was kept"):
        trainer.save_checkpoint()
    assert snapshot(run_copy / "last") == before


def test_ctrl_c_during_start_up_exits_130_and_writes_nothing(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("clip2depth.models.model.Clip2Depth.from_spec", interrupted)
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
    assert_user_error(run_cli("train", "--resume", tmp_path, "--out", tmp_path / "x"), "--resume", "--out")
    assert_user_error(run_cli("demo", "--out", tmp_path, "--resume", "--overwrite"), "--resume", "--overwrite")
    assert_user_error(run_cli("ablate", "--out", tmp_path / "a", "--variants", "prompt=loud"), "prompt=loud")
    assert_user_error(run_cli("ablate", "--out", tmp_path / "a", "--limit", "-1"), "--limit", "'-1'")
    assert not (tmp_path / "a").exists()


def test_resume_state_without_its_checksum_is_refused(run_copy, no_model_build):
    path = run_copy / "last" / "resume.json"
    meta = json.loads(path.read_text())
    del meta["resume_sha256"]
    path.write_text(json.dumps(meta))
    before = snapshot(run_copy)
    assert_user_error(run_cli("train", "--resume", run_copy), "cannot resume", "resume_sha256")
    assert snapshot(run_copy) == before


def test_recipe_with_a_key_given_twice_names_the_file_key_and_lines(tmp_path, no_model_build):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("model: tiny\ntrain:\n  lr: 0.001\n  batch_size: 4\n  lr: 0.01\n")
    result = run_cli("train", "--recipe", recipe, "--out", tmp_path / "run")
    assert_user_error(result, str(recipe), "key 'train.lr' is given twice (lines 3 and 5)")
    assert not (tmp_path / "run").exists()
    top = tmp_path / "top.yaml"
    top.write_text("model: tiny\npretrained: null\nmodel: tiny-eva\n")
    assert_user_error(run_cli("train", "--recipe", top), str(top), "key 'model' is given twice (lines 1 and 3)")


def test_resume_of_a_finished_run_says_so_and_changes_nothing(run_copy, no_model_build):
    before = snapshot(run_copy)
    result = run_cli("train", "--resume", run_copy)
    assert result.code == 0, result.err
    assert f"{run_copy} is finished: its checkpoint is at step 2 of 2; nothing was changed" in result.out
    assert "--set train.max_steps=N" in result.out and not result.error_lines
    assert snapshot(run_copy) == before


def test_a_killed_run_resumed_logs_every_step_once(tmp_path, monkeypatch):
    """Killed while saving its step-4 checkpoint, after logging steps 3-4: the resume from step 2 drops those."""
    import clip2depth.training.trainer as trainer_module

    items = [*SMALL, "train.max_steps=6", "train.val_every=2"]
    whole = tmp_path / "whole"
    assert run_cli("-q", "train", "--out", whole, *sets(*items)).code == 0
    real_save = trainer_module.save_last

    def killed_at_step_4(run_dir, model, optimizer, scaler, state, **kwargs):
        if state.step == 4:
            raise KeyboardInterrupt
        real_save(run_dir, model, optimizer, scaler, state, **kwargs)

    monkeypatch.setattr(trainer_module, "save_last", killed_at_step_4)
    run = tmp_path / "run"
    assert run_cli("-q", "train", "--out", run, *sets(*items)).code == 130
    with open(run / "log.jsonl", "a") as log:
        log.write('{"step": 5, "loss": 0.')  # the kill also cut a line short
    logged = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()[:-1]]
    assert logged == [1, 2, 2, 3, 4, 4]  # losses, validations at 2 and 4; the checkpoint is the one at 2
    monkeypatch.undo()

    result = run_cli("-q", "train", "--resume", run)
    assert result.code == 0, result.err

    def records(folder):
        return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
                for line in (folder / "log.jsonl").read_text().splitlines()]

    assert records(run) == records(whole)  # the same records with the same values, each step once
    assert [r["step"] for r in records(run) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records(run) if "val_abs_rel" in r] == [2, 4, 6]


def test_reproduce_smoke_test_with_the_tiny_model_drops_the_recipes_openai_weights(nyu_host, tmp_path, caplog):
    server, lists = nyu_host
    out = tmp_path / "repro"
    caplog.set_level(logging.INFO, logger="clip2depth.training.config")
    result = run_cli("-q", "reproduce", "nyu", "--out", out, "--data-root", tmp_path / "data", "--download",
                     "--mirror", server.url, *lists, "--model", "tiny", "--depthclip", "none",
                     *sets("augment.crop_size=[64, 96]", "train.batch_size=4", "train.max_steps=2",
                           "train.val_every=2", "train.num_workers=0", "eval.limit=1"))
    assert result.code == 0, result.err
    saved = yaml.safe_load((out / "train" / "config.yaml").read_text())
    assert (saved["model"], saved["pretrained"]) == ("tiny", None)
    assert "pretrained=openai gives way to null" in caplog.text
    assert json.loads((out / "train" / "finished.json").read_text())["state"]["step"] == 2


def test_resume_with_other_model_settings_is_refused_and_changes_nothing(run_copy):
    before = snapshot(run_copy)
    result = run_cli("-q", "train", "--resume", run_copy, *sets("model_overrides.mirror_length=4",
                                                               "train.max_steps=4"))
    assert_user_error(result, str(run_copy / "last"), "other settings (mirror_length)")
    assert snapshot(run_copy) == before
