"""Training the mirror and decoder (docs/method.md#training-recipe): one CPU, one GPU, or many GPUs (``torchrun``).

The loop is here; its parts sit beside it: :mod:`~clip2depth.training.config` (the typed recipe),
:mod:`~clip2depth.training.datasets` (data order and augmentation), :mod:`~clip2depth.training.resume`
(checkpoints and exact resume), :mod:`~clip2depth.training.distributed` (ranks, AMP) and
:mod:`~clip2depth.training.runlog` (log.jsonl, TensorBoard, progress). The learning rate is a pure
function of the step (:func:`one_cycle_lr`), so no scheduler state exists.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch.utils.data import DataLoader

from clip2depth.errors import Clip2DepthError, ConfigError, DataError
from clip2depth.evaluation.metrics import MetricAverager
from clip2depth.evaluation.protocol import EvalResult, evaluate
from clip2depth.io.atomic import atomic_path
from clip2depth.io.outputs import claim_output_dir, writable_folder
from clip2depth.models.card import Validation
from clip2depth.models.model import Clip2Depth
from clip2depth.training.config import Recipe
from clip2depth.training.datasets import AugmentedDataset, EpochBatchSampler, build_augment, build_datasets, collate
from clip2depth.training.distributed import all_reduce_sum, amp_settings, barrier, setup_ranks
from clip2depth.training.losses import silog_loss
from clip2depth.training.resume import (
    TrainState,
    find_last,
    read_resume,
    restore_rng,
    save_best,
    save_last,
    weights_are_finite,
)
from clip2depth.training.runlog import LOG_NAME, RunLog, drop_records_after

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
RUN_OUTPUTS: tuple[str, ...] = (CONFIG_NAME, LOG_NAME, "last", "best", "last.old", "best.old", "last.partial",
                                "best.partial", "tensorboard")
"""What a run writes into its folder (a fresh run refuses a folder holding any of them)."""

StopReason = Literal["SIGINT", "SIGTERM", "time limit"]


@dataclass(frozen=True)
class TrainSummary:
    """What :func:`train` reports about a run."""

    run_dir: Path
    state: TrainState
    """Position and counters at the end: step, best validation AbsRel and its step, skipped steps and samples."""
    total_steps: int
    """Optimizer steps the recipe asks for."""
    stopped: StopReason | None = None
    """Why training stopped before ``total_steps`` (resumable); None when it got there."""
    already_finished: bool = False
    """A resume found the run at ``total_steps`` already: nothing was trained or written."""

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C or SIGTERM (the command line exits with 130)."""
        return self.stopped in ("SIGINT", "SIGTERM")


def one_cycle_lr(step: int, total: int, *, max_lr: float, pct_start: float, div_factor: float,
                 final_div_factor: float) -> float:
    """One-cycle schedule (cosine warm-up to ``max_lr``, cosine decay to ``max_lr/div/final_div``)."""
    initial = max_lr / div_factor
    final = initial / final_div_factor
    warm = max(1, int(pct_start * total))
    if step < warm:
        t = step / warm
        return initial + (max_lr - initial) * (1 - math.cos(math.pi * t)) / 2
    t = min(1.0, (step - warm) / max(1, total - warm))
    return final + (max_lr - final) * (1 + math.cos(math.pi * t)) / 2


class Trainer:
    """Runs one :class:`Recipe` into ``run_dir``; see :func:`train`."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
                 on_step: Callable[[int], None] | None = None, progress: bool = True) -> None:
        self.recipe = recipe
        self.t = recipe.train
        self.run_dir = Path(run_dir)
        self.resume, self.overwrite = resume, overwrite
        self.on_step = on_step
        self.progress = progress
        self.stop_reason: StopReason | None = None
        self.already_finished = False

    def prepare(self) -> None:
        """Ranks, run folder, data (checked first: no CLIP weights are fetched for a run that cannot start),
        model, optimizer, and the resume state. A resume of a finished run stops after the data (see
        :attr:`already_finished`): no model is built."""
        r, t = self.recipe, self.t
        self.ranks = setup_ranks()
        self.device = self.ranks.device
        world = self.ranks.world
        if t.batch_size % (world * t.accumulation):
            raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by world size ({world}) × "
                              f"train.accumulation ({t.accumulation})")
        self.global_batch, self.micro_batch = t.batch_size, t.batch_size // (world * t.accumulation)
        if self.ranks.is_main:  # a file, or a folder it cannot write in, fails before data and model are built
            writable_folder(self.run_dir, "run folder", create=False)
        last = find_last(self.run_dir) if self.resume else None
        saved = read_resume(last, global_batch=self.global_batch) if last is not None else None
        train_set, self.val_set = build_datasets(r.data, seed=t.seed)
        fresh_in_used_folder = last is None and (self.overwrite or self.resume)
        if self.ranks.is_main and last is None and not fresh_in_used_folder:
            claim_output_dir(self.run_dir, RUN_OUTPUTS, resumable=True)  # refuses a folder holding a run
        self.train_set = AugmentedDataset(train_set, build_augment(r.augment), t.seed)
        self.batches_per_epoch = len(train_set) // t.batch_size
        if self.batches_per_epoch == 0:
            raise DataError(f"the training set has {len(train_set)} samples, fewer than one batch of "
                            f"{t.batch_size}; lower train.batch_size or add samples")
        self.total_steps = t.max_steps or t.epochs * self.batches_per_epoch
        self.eval_settings = r.eval.settings()
        self.state = saved.state if saved is not None else TrainState()
        if self.state.step >= self.total_steps:
            self.already_finished = True
            return

        torch.manual_seed(t.seed)
        self.model = Clip2Depth.from_spec(r.model_spec if last is None else r.model_spec.with_directory(last),
                                          device=self.device)
        self.model.train()
        if self.ranks.is_main and fresh_in_used_folder:  # only now that data and model are known to work
            if self.resume:
                logger.warning("%s holds no checkpoint yet: starting the run from step 0", self.run_dir)
            claim_output_dir(self.run_dir, RUN_OUTPUTS, overwrite=True)
        named = self.model.trainable_parameters()
        self.params = [p for _, p in named]
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": t.weight_decay},
             {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}],
            lr=t.lr,
        )
        self.amp_dtype, use_scaler = amp_settings(t.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.forward = self.model
        if world > 1:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if t.compile:
            self.forward = torch.compile(self.forward)

        self.last_validation: Validation | None = None  # for the model card of the next checkpoint
        if saved is not None:
            self.optimizer.load_state_dict(saved.optimizer)
            if saved.scaler and self.scaler.is_enabled():
                self.scaler.load_state_dict(saved.scaler)
            restore_rng(saved.rng)
            logger.info("resumed from %s at step %d (epoch %d, batch %d)", last, self.state.step,
                        self.state.epoch, self.state.batch_in_epoch)
        self.saved_step = self.state.step if last is not None else None

    # ------------------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> None:
        """Write ``last/`` (rank 0); refused, keeping the previous one, when the weights are not finite."""
        self._check_finite()
        if self.ranks.is_main:
            save_last(self.run_dir, self.model, self.optimizer, self.scaler, self.state,
                      world=self.ranks.world, global_batch=self.global_batch, recipe=self.recipe.to_dict(),
                      validation=self.last_validation)
        self.saved_step = self.state.step

    def _check_finite(self) -> None:
        if not weights_are_finite(self.model):
            kept = (f"{self.run_dir / 'last'} (step {self.saved_step}) was kept" if self.saved_step is not None
                    else "no checkpoint was written")
            raise Clip2DepthError(f"the trained weights became non-finite at step {self.state.step}; {kept}. "
                                "Lower train.lr or check the data for invalid depth, then --resume or start again")

    # ------------------------------------------------------------------------------------------ loop

    def validate(self, keep: int = 0) -> EvalResult:
        """Metrics of the current model on the validation set (averaged over all ranks)."""
        result = evaluate(self.model, self.val_set, self.eval_settings, shard=(self.ranks.rank, self.ranks.world),
                          progress=False, limit=self.recipe.eval.limit, keep_predictions=keep)
        if self.ranks.world > 1:
            keys = list(result.averager_state)
            reduced = all_reduce_sum([result.averager_state[k] for k in keys], self.ranks)
            summary = MetricAverager.from_state(dict(zip(keys, reduced, strict=True))).result()
            result.metrics = {k: summary[k] for k in result.metrics}
            result.count = int(summary["count"])
        return result

    def train_step(self, micro: list[dict[str, Any]]) -> float:
        """One optimizer step over ``accumulation`` micro-batches; returns the mean loss (nan if skipped)."""
        t = self.t
        lr = one_cycle_lr(self.state.step, self.total_steps, max_lr=t.lr, pct_start=t.pct_start,
                          div_factor=t.div_factor, final_div_factor=t.final_div_factor)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for i, batch in enumerate(micro):
            self.state.skipped_samples += len(batch["errors"])
            for err in batch["errors"]:
                logger.warning("training sample skipped: %s", err)
            if "image" not in batch:
                total = math.nan
                continue
            images = batch["image"].to(self.device, non_blocking=True)
            depth = batch["depth"].to(self.device, non_blocking=True)
            sync = self.ranks.world > 1 and i < len(micro) - 1
            ctx = self.forward.no_sync() if sync else nullcontext()
            autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
            with ctx, autocast:
                pred = self.forward(images)
                loss = silog_loss(pred, depth, min_depth=t.loss_min_depth, variance_focus=t.variance_focus,
                                  scale=t.loss_scale, per_image=t.loss_per_image)
            if torch.isfinite(loss):
                with ctx:
                    self.scaler.scale(loss / len(micro)).backward()
            total += float(loss.detach()) / len(micro)
        finite_here = 1.0 if math.isfinite(total) else 0.0
        finite_all, loss_sum = all_reduce_sum([finite_here, total if finite_here else 0.0], self.ranks)
        if finite_all < self.ranks.world:
            self.optimizer.zero_grad(set_to_none=True)
            self.state.nonfinite_total += 1
            self.state.nonfinite_streak += 1
            logger.warning("non-finite loss at step %d: step skipped (%d so far)", self.state.step,
                           self.state.nonfinite_total)
            if self.state.nonfinite_streak > t.max_nonfinite:
                raise Clip2DepthError(
                    f"{self.state.nonfinite_streak} non-finite losses in a row (step {self.state.step}); "
                    "lower train.lr, check the data for invalid depth, or set train.amp=fp32"
                )
            return math.nan
        self.state.nonfinite_streak = 0
        self.scaler.unscale_(self.optimizer)
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / self.ranks.world

    def run(self) -> TrainSummary:
        """Train to the last step (or a stop signal / time limit); a finished run is left as it is."""
        self.prepare()
        if self.already_finished:
            return self._summary()
        if self.ranks.is_main:
            with atomic_path(self.run_dir / CONFIG_NAME) as tmp:
                tmp.write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
            drop_records_after(self.run_dir / LOG_NAME, self.state.step)  # they are logged again
        self.log = RunLog(self.run_dir, enabled=self.ranks.is_main, tensorboard=self.t.tensorboard,
                          total=self.total_steps, initial=self.state.step, show_progress=self.progress)
        try:
            with _stop_on_signals(self._signal_handler):
                self._loop()
        finally:
            self.log.close()
        if self.stop_reason is not None:
            logger.warning("stopped (%s) at step %d; continue with --resume %s", self.stop_reason, self.state.step,
                           self.run_dir)
        return self._summary()

    def _summary(self) -> TrainSummary:
        return TrainSummary(run_dir=self.run_dir, state=self.state, total_steps=self.total_steps,
                            stopped=self.stop_reason, already_finished=self.already_finished)

    def _loop(self) -> None:
        t, s = self.t, self.state
        started = time.perf_counter() - s.elapsed_s
        loader_gen = torch.Generator().manual_seed(t.seed)  # keeps the global RNG untouched
        validated_at = -1
        losses: list[float] = []
        while s.step < self.total_steps and self.stop_reason is None:
            sampler = EpochBatchSampler(len(self.train_set), seed=t.seed, epoch=s.epoch, global_batch=self.global_batch,
                                        rank=self.ranks.rank, world=self.ranks.world, start_batch=s.batch_in_epoch)
            loader = DataLoader(self.train_set, batch_size=self.micro_batch, sampler=sampler, collate_fn=collate,
                                num_workers=t.num_workers, generator=loader_gen,
                                pin_memory=self.device.type == "cuda")
            batches = iter(loader)
            while s.batch_in_epoch < self.batches_per_epoch and s.step < self.total_steps:
                loss = self.train_step(_take(batches, t.accumulation))
                s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
                s.elapsed_s = time.perf_counter() - started
                if math.isfinite(loss):
                    losses.append(loss)
                lr = self.optimizer.param_groups[0]["lr"]
                self.log.step(loss, lr)
                if s.step % t.log_every == 0 and losses:
                    self.log.record({"step": s.step, "epoch": s.epoch, "loss": sum(losses) / len(losses), "lr": lr,
                                     "time_s": round(s.elapsed_s, 2), "nonfinite": s.nonfinite_total})
                    losses = []
                if s.step % t.val_every == 0 or s.step == self.total_steps:
                    self._validate_and_save()
                    validated_at = s.step
                if self.on_step is not None:
                    self.on_step(s.step)
                if t.time_limit_s and s.elapsed_s >= t.time_limit_s:
                    self.stop_reason = "time limit"
                if self.stop_reason is not None:
                    break
            else:
                s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            del batches, loader
        if validated_at != s.step:
            if self.stop_reason is not None and self.stop_reason != "time limit":
                self.save_checkpoint()
            else:
                self._validate_and_save()

    def _validate_and_save(self) -> None:
        s = self.state
        result = self.validate()
        self.last_validation = Validation(step=s.step, metrics=dict(result.metrics), count=result.count)
        abs_rel = result.metrics["abs_rel"]
        self.log.record({"step": s.step, **{f"val_{k}": v for k, v in result.metrics.items()},
                         "val_count": result.count})
        if self.ranks.is_main:
            logger.info("step %d: val abs_rel %.4f rmse %.4f d1 %.4f", s.step, abs_rel, result.metrics["rmse"],
                        result.metrics["d1"])
        improved = math.isfinite(abs_rel) and abs_rel < s.best_abs_rel
        if improved:
            s.best_abs_rel, s.best_step = abs_rel, s.step
        self.save_checkpoint()
        if improved and self.ranks.is_main:
            save_best(self.run_dir, self.model, s, recipe=self.recipe.to_dict(), validation=self.last_validation)
        barrier(self.ranks)

    def _signal_handler(self, signum: int, _frame: Any) -> None:
        if self.stop_reason is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.stop_reason = signal.Signals(signum).name
        logger.warning("%s received: finishing this step, writing a checkpoint, then stopping", self.stop_reason)


def _take(batches: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [next(batches) for _ in range(n)]


@contextmanager
def _stop_on_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``handler`` inside the block (main thread only), restoring the old handlers."""
    old = {}
    for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if sig is None:
            continue
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def train(recipe: Recipe, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          on_step: Callable[[int], None] | None = None, progress: bool = True) -> TrainSummary:
    """Train ``recipe`` (from :func:`~clip2depth.training.config.build_recipe`) into ``run_dir``.

    Args:
        resume: continue the run in ``run_dir`` from ``last/`` exactly (from step 0 when it has no
            checkpoint yet); records of ``log.jsonl`` after the checkpoint's step are dropped, as those
            steps run again. A run already at its last step is left untouched.
        overwrite: start afresh in a folder holding an earlier run's outputs (they are deleted);
            without it such a folder is refused.
        on_step: called with the step number after every optimizer step.
        progress: show a progress bar (on a terminal, unless ``-q``).

    Returns:
        The run's :class:`TrainSummary`.
    """
    return Trainer(recipe, run_dir, resume=resume, overwrite=overwrite, on_step=on_step, progress=progress).run()


__all__ = ["RUN_OUTPUTS", "TrainSummary", "Trainer", "TrainState", "one_cycle_lr", "train"]
