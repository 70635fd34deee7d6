"""Training (docs/method.md#training-recipe): schedule, loss, exact resume, faults, checkpoint safety, CLI, demo."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import clip2depth
from clip2depth.cli import main
from clip2depth.errors import Clip2DepthError, ConfigError
from clip2depth.training.config import Recipe, apply_overrides, list_recipes, load_recipe
from clip2depth.training.losses import silog_loss
from clip2depth.training.resume import TrainState, read_resume, restore_rng, save_last
from clip2depth.training.trainer import Trainer, one_cycle_lr, train

SMALL = [
    "data.kwargs.size=[64, 96]", "data.kwargs.length=32", "data.val_kwargs.size=[64, 96]",
    "data.val_kwargs.length=4", "augment.crop_size=[64, 80]", "train.batch_size=4", "train.num_workers=0",
    "train.log_every=1", "train.val_every=3", "train.max_steps=6",
]


def small_recipe(*extra: str) -> Recipe:
    return apply_overrides(load_recipe("synthetic"), [*SMALL, *extra])


def test_one_cycle_lr_shape():
    kw = dict(max_lr=1e-3, pct_start=0.25, div_factor=25.0, final_div_factor=100.0)
    lrs = [one_cycle_lr(s, 100, **kw) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-3 / 25)
    assert max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 25
    assert lrs[100] == pytest.approx(1e-3 / 25 / 100)
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26], strict=True))
    assert all(a >= b for a, b in zip(lrs[25:100], lrs[26:101], strict=True))


def test_silog_loss_by_hand():
    gt = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])  # one invalid pixel
    pred = torch.tensor([[[[2.0, 4.0], [8.0, 7.0]]]])  # exactly twice gt: g = log 2 on valid pixels
    g = math.log(2.0)
    assert silog_loss(pred, gt).item() == pytest.approx(10 * math.sqrt(g * g - 0.85 * g * g), rel=1e-5)
    pred2 = torch.tensor([[[[1.0, 4.0], [4.0, 1.0]]]])  # g = [0, log 2, 0]
    mean_sq, mean = g * g / 3, g / 3
    assert silog_loss(pred2, gt).item() == pytest.approx(10 * math.sqrt(mean_sq - 0.85 * mean**2), rel=1e-5)
    assert math.isnan(silog_loss(pred, torch.zeros_like(gt)).item())


@pytest.mark.parametrize("source", ["synthetic_recipe", "recipe_without_lambda"])
def test_a_training_step_minimises_silog_with_lambda_085(tmp_path, source):
    recipe = small_recipe()
    if source == "recipe_without_lambda":  # a user's recipe that leaves the loss alone gets the paper's lambda
        data = recipe.to_dict()
        del data["train"]["variance_focus"]
        (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data))
        recipe = load_recipe(str(tmp_path / "mine.yaml"))
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    trainer.prepare()
    gt = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])  # one invalid pixel
    pred = torch.tensor([[[[1.0, 4.0], [4.0, 1.0]]]], requires_grad=True)  # g = [0, log 2, 0] on valid pixels
    trainer.forward = lambda images: pred * 1.0  # the loss sees exactly this prediction
    loss = trainer.train_step([{"image": torch.zeros(1, 3, 2, 2), "depth": gt, "errors": []}])
    g = math.log(2.0)
    assert loss == pytest.approx(10 * math.sqrt(g * g / 3 - 0.85 * (g / 3) ** 2), rel=1e-6)  # λ = 1 gives 3.268
    assert pred.grad is not None and pred.grad[0, 0, 1, 1] == 0  # the invalid pixel takes no part


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_trains_with_the_papers_silog_lambda(name):
    assert load_recipe(name).train.variance_focus == 0.85


def test_resume_state_restores_the_torch_random_stream(tmp_path, fresh_tiny):
    optimizer = torch.optim.AdamW([p for _, p in fresh_tiny.trainable_parameters()])
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    torch.manual_seed(123)
    save_last(tmp_path, fresh_tiny, optimizer, scaler, TrainState(), world=1, global_batch=8,
              recipe=small_recipe().to_dict(), validation=None)
    expected = torch.rand(5)  # what the run would have drawn next
    torch.rand(7)  # the stream moves on (or a new process starts from another seed)
    restore_rng(read_resume(tmp_path / "last", global_batch=8).rng)
    assert torch.equal(torch.rand(5), expected)


def test_recipe_overrides_are_strict():
    with pytest.raises(ConfigError, match="unknown key 'train.learning_rate'; known: epochs, max_steps"):
        apply_overrides(load_recipe("synthetic"), ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_recipe("imagenet")
    r = apply_overrides(load_recipe("synthetic"), ["model_overrides.mirror_length=4", "train.lr=1e-4"])
    assert r.model_overrides == {"mirror_length": 4} and r.train.lr == 1e-4


def _weights(run_dir):
    return load_file(str(run_dir / "last" / "model.safetensors"))


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    recipe = small_recipe()
    full = tmp_path / "full"
    train(recipe, full, progress=False)

    part = tmp_path / "part"

    def interrupt(step):
        if step == 4:  # between validations: the signal handler must write the checkpoint itself
            os.kill(os.getpid(), signal.SIGINT)

    summary = train(recipe, part, on_step=interrupt, progress=False)
    assert summary.stopped == "SIGINT" and summary.interrupted and summary.state.step == 4
    assert summary.total_steps == 6 and summary.run_dir == part and not summary.already_finished
    assert json.loads((part / "last" / "resume.json").read_text())["state"]["step"] == 4
    resumed = train(recipe, part, resume=True, progress=False)
    assert resumed.state.step == 6 and resumed.stopped is None and not resumed.interrupted

    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the logged losses after the resume point are the same too, each step logged once
    def losses(run):
        records = map(json.loads, (run / "log.jsonl").read_text().splitlines())
        return [(r["step"], r["loss"]) for r in records if "loss" in r]

    assert losses(full) == losses(part)
    assert [step for step, _ in losses(part)] == [1, 2, 3, 4, 5, 6]
    # best/ and last/ are model directories create_model loads directly
    clip2depth.create_model(str(part / "best"))
    assert (part / "config.yaml").is_file()


def test_nonfinite_loss_is_skipped_and_counted(tmp_path, monkeypatch):
    import clip2depth.training.trainer as train_module

    calls = {"n": 0}
    real = train_module.silog_loss

    def flaky(pred, gt, **kw):
        calls["n"] += 1
        loss = real(pred, gt, **kw)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(train_module, "silog_loss", flaky)
    summary = train(small_recipe("train.max_steps=4", "train.val_every=4"), tmp_path / "run", progress=False)
    assert summary.state.nonfinite_total == 1
    assert summary.state.step == 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 3, 4]  # the skipped step logs no loss


def test_too_many_nonfinite_losses_stop_with_a_clear_error(tmp_path, monkeypatch):
    import clip2depth.training.trainer as train_module

    monkeypatch.setattr(train_module, "silog_loss", lambda pred, gt, **kw: pred.sum() * float("nan"))
    with pytest.raises(Clip2DepthError, match="non-finite losses in a row"):
        train(small_recipe("train.max_nonfinite=2"), tmp_path / "run", progress=False)


def test_failure_while_writing_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    recipe = small_recipe("train.max_steps=3")
    run_dir = tmp_path / "run"
    train(recipe, run_dir, progress=False)
    before = _weights(run_dir)
    before_state = (run_dir / "last" / "resume.json").read_text()

    trainer = Trainer(apply_overrides(recipe, ["train.max_steps=4"]), run_dir, resume=True, progress=False)
    trainer.prepare()
    with torch.no_grad():
        for _, p in trainer.model.trainable_parameters():
            p.add_(1.0)

    import clip2depth.models.checkpoint as ckpt

    real_save = ckpt.save_file
    calls = {"n": 0}

    def fail_second_file(*args, **kwargs):  # model.safetensors is written, then the resume tensors fail
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated disk failure")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", fail_second_file)
    with pytest.raises(Clip2DepthError, match="simulated disk failure.*previous one is intact"):
        trainer.save_checkpoint()
    after = _weights(run_dir)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (run_dir / "last" / "resume.json").read_text() == before_state
    clip2depth.create_model(str(run_dir / "last"))


def test_resume_falls_back_to_the_previous_checkpoint_after_a_crash_between_renames(tmp_path):
    run_dir = tmp_path / "run"
    recipe = small_recipe("train.max_steps=3")
    train(recipe, run_dir, progress=False)
    os.replace(run_dir / "last", run_dir / "last.old")  # as if killed between the two renames
    summary = train(apply_overrides(recipe, ["train.max_steps=4"]), run_dir, resume=True, progress=False)
    assert summary.state.step == 4


def test_train_cli_and_resume_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["-q", "train", "--recipe", "synthetic", "--out", str(out)]
    for item in [*SMALL, "train.max_steps=2", "train.val_every=2"]:
        args += ["--set", item]
    assert main(args) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    assert main(["-q", "train", "--resume", str(tmp_path / "nope")]) == 1
    assert f"--resume {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "not-a-run").mkdir()
    assert main(["-q", "train", "--resume", str(tmp_path / "not-a-run")]) == 1
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["-q", "train", "--recipe", "synthetic", "--set", "train.nope=1"]) == 1
    assert "unknown key 'train.nope'" in capsys.readouterr().err


def test_demo_writes_report_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["-q", "demo", "--out", str(out), "--test-scenes", "4"]
    for item in [*SMALL, "train.max_steps=3"]:
        args += ["--set", item]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"model", "baseline", "seconds"}
    assert set(summary["model"]) == set(clip2depth.evaluation.metrics.METRIC_KEYS) == set(summary["baseline"])
    report = (out / "report.md").read_text()
    assert f"| clip2depth (tiny, synthetic) | {summary['model']['abs_rel']:.4f} |" in report  # the measured numbers
    assert "![curves](curves.png)" in report and "![samples](samples.png)" in report
    with Image.open(out / "curves.png") as curves, Image.open(out / "samples.png") as samples:
        assert curves.size == (900, 320) and samples.size == (1170, 4 * 234)  # a row per test scene
    assert "AbsRel model/baseline" in capsys.readouterr().out


def test_per_image_silog_is_the_mean_of_single_image_losses():
    torch.manual_seed(0)
    pred, gt = torch.rand(3, 1, 4, 4) + 0.5, torch.rand(3, 1, 4, 4) + 0.5
    gt[2] = 0  # an image without valid pixels is left out
    each = [silog_loss(pred[i : i + 1], gt[i : i + 1]) for i in range(2)]
    assert silog_loss(pred, gt, per_image=True).item() == pytest.approx(float(sum(each) / 2), rel=1e-6)
    assert silog_loss(pred, gt).item() != pytest.approx(float(sum(each) / 2), rel=1e-6)
