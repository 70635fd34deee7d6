"""Training the mirror and decoder (docs/method.md#training-recipe): one CPU, one GPU, or many GPUs (``torchrun``).

Design notes:

- The data order is a pure function of (seed, epoch): a seeded permutation split into global batches,
  each rank taking its slice. Augmentation draws from a generator seeded by (seed, epoch, index). So the
  data position is just (epoch, batch), and a resumed run sees exactly the batches it would have seen.
- The learning rate is a pure function of the step (:func:`one_cycle_lr`), so no scheduler state exists.
- ``last/`` and ``best/`` are model directories that ``create_model`` loads; ``last/`` also holds the
  resume state (``resume.safetensors`` + ``resume.json``). A checkpoint is written into a fresh
  directory first and swapped in by renames, so a failed write never damages the previous one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from clip2depth.data import build_dataset
from clip2depth.data.transforms import TrainAugment
from clip2depth.errors import CheckpointError, Clip2DepthError, DataError
from clip2depth.evaluation.metrics import MetricAverager
from clip2depth.evaluation.protocol import EvalResult, EvalSettings, evaluate
from clip2depth.io.atomic import atomic_write_json
from clip2depth.models.checkpoint import load_trained_state, read_model_dir, save_pretrained, save_state
from clip2depth.models.factory import create_model
from clip2depth.training.losses import silog_loss

logger = logging.getLogger(__name__)

RESUME_TENSORS = "resume.safetensors"
RESUME_JSON = "resume.json"


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


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_abs_rel: float = math.inf
    best_step: int = -1
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    skipped_samples: int = 0
    elapsed_s: float = 0.0


class EpochBatchSampler(Sampler):
    """Yields ``(epoch, index)`` of this rank's micro-batches, from global batch ``start_batch`` on."""

    def __init__(self, n: int, *, seed: int, epoch: int, global_batch: int, rank: int, world: int,
                 start_batch: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch
        self.global_batch, self.rank, self.world = global_batch, rank, world
        self.start_batch = start_batch
        self.local = global_batch // world

    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = perm[b * self.global_batch : (b + 1) * self.global_batch]
            for index in chunk[self.rank * self.local : (self.rank + 1) * self.local].tolist():
                yield self.epoch, index

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.local


class AugmentedDataset(Dataset):
    """Applies :class:`TrainAugment` with a generator seeded by (seed, epoch, index)."""

    def __init__(self, base: Dataset, augment: TrainAugment, seed: int) -> None:
        self.base, self.augment, self.seed = base, augment, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor] | dict[str, str]:
        epoch, index = key
        try:
            sample = self.base[index]
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
            sample = self.augment(sample, gen)
        except DataError as exc:
            return {"error": str(exc)}
        return {"image": sample["image"], "depth": sample["depth"]}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "error" not in it]
    errors = [it["error"] for it in items if "error" in it]
    if not good:
        return {"errors": errors}
    return {
        "image": torch.stack([it["image"] for it in good]),
        "depth": torch.stack([it["depth"] for it in good]),
        "errors": errors,
    }


class Trainer:
    """Runs one recipe into ``run_dir``. See :func:`train` for the entry point."""

    def __init__(self, recipe: dict[str, Any], run_dir: str | Path, *, resume: bool = False,
                 on_step: Callable[[int], None] | None = None, progress: bool = True) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.on_step = on_step
        self.progress = progress
        self.t = recipe["train"]
        self.stop_reason: str | None = None

    # -------------------------------------------------------------------------------- set-up

    def _setup_distributed(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.is_main = self.rank == 0

    def _amp(self) -> tuple[torch.dtype | None, bool]:
        mode = str(self.t.get("amp", "auto"))
        if self.device.type != "cuda" or mode in ("off", "false", "False", "fp32"):
            return None, False
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16, True
        return torch.bfloat16, False

    def _build(self) -> None:
        r, t = self.recipe, self.t
        global_batch = int(t["batch_size"])
        accumulation = int(t.get("accumulation", 1))
        if global_batch % (self.world * accumulation):
            raise Clip2DepthError(
                f"train.batch_size={global_batch} must be divisible by world size ({self.world}) × "
                f"train.accumulation ({accumulation})"
            )
        self.global_batch, self.accumulation = global_batch, accumulation
        self.micro_batch = global_batch // (self.world * accumulation)

        torch.manual_seed(int(t["seed"]))
        model_ref = r["model"]
        if self.resume:
            model_ref = str(_existing_checkpoint(self.run_dir / "last"))
        self.model = create_model(model_ref, pretrained=r.get("clip_pretrained"), device=self.device,
                                  **({} if self.resume else (r.get("model_overrides") or {})))
        self.model.train()
        named = self.model.trainable_parameters()
        self.params = [p for _, p in named]
        decay = [p for _, p in named if p.dim() >= 2]
        no_decay = [p for _, p in named if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(t["weight_decay"])},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=float(t["lr"]),
        )
        self.amp_dtype, use_scaler = self._amp()
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.forward = self.model
        if self.world > 1:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        if t.get("compile"):
            self.forward = torch.compile(self.forward)

        d = r["data"]
        train_set = build_dataset(d["dataset"], split=d.get("train_split", "train"), root=d.get("root"),
                                  **(d.get("kwargs") or {}))
        self.val_set = build_dataset(d["dataset"], split=d.get("val_split", "test"), root=d.get("root"),
                                     **(d.get("val_kwargs") or {}))
        a = r["augment"]
        augment = TrainAugment(crop_size=tuple(a["crop_size"]), rotate_deg=float(a["rotate_deg"]),
                               flip_p=float(a["flip_p"]), gamma=tuple(a["gamma"]),
                               brightness=tuple(a["brightness"]), color=tuple(a["color"]),
                               kb_crop=bool(a.get("kb_crop", False)))
        self.train_set = AugmentedDataset(train_set, augment, int(t["seed"]))
        self.batches_per_epoch = len(train_set) // global_batch
        if self.batches_per_epoch == 0:
            raise Clip2DepthError(f"the training set has {len(train_set)} samples, fewer than one batch "
                                  f"of {global_batch}; lower train.batch_size")
        max_steps = t.get("max_steps")
        self.total_steps = int(max_steps) if max_steps else int(t["epochs"]) * self.batches_per_epoch
        self.eval_settings = EvalSettings.from_recipe(r["eval"])
        self.state = TrainState()

    # -------------------------------------------------------------------------------- checkpoints

    def _rng_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        return tensors

    def save_checkpoint(self) -> None:
        """Write ``last/`` (model + resume state) atomically; rank 0 only."""
        if not self.is_main:
            return
        final = self.run_dir / "last"
        partial = self.run_dir / "last.partial"
        shutil.rmtree(partial, ignore_errors=True)
        save_pretrained(self.model, partial)
        opt = self.optimizer.state_dict()
        tensors = self._rng_tensors()
        scalars: dict[str, dict[str, float]] = {}
        for idx, st in opt["state"].items():
            for key, value in st.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    tensors[f"opt.{idx}.{key}"] = value
                else:
                    scalars.setdefault(str(idx), {})[key] = float(value)
        save_state(tensors, partial / RESUME_TENSORS)
        atomic_write_json(partial / RESUME_JSON, {
            "state": asdict(self.state),
            "param_groups": opt["param_groups"],
            "optimizer_scalars": scalars,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "world_size": self.world,
            "global_batch": self.global_batch,
        })
        _swap_in(partial, final)

    def _save_best(self) -> None:
        if not self.is_main:
            return
        partial = self.run_dir / "best.partial"
        shutil.rmtree(partial, ignore_errors=True)
        save_pretrained(self.model, partial, extra={"best": {"step": self.state.step,
                                                             "abs_rel": self.state.best_abs_rel}})
        _swap_in(partial, self.run_dir / "best")

    def load_resume_state(self) -> None:
        last = _existing_checkpoint(self.run_dir / "last")
        # The model weights were loaded by create_model(last); restore optimizer, scaler, RNG and position.
        try:
            meta = json.loads((last / RESUME_JSON).read_text())
            tensors = load_file(str(last / RESUME_TENSORS))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot resume from {last}: resume state unreadable ({exc})") from exc
        if meta.get("global_batch") != self.global_batch:
            raise CheckpointError(
                f"{last} was trained with global batch {meta.get('global_batch')}, this run uses "
                f"{self.global_batch}; resume with the same train.batch_size"
            )
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value.to(self.device)
        for idx, scalars in meta.get("optimizer_scalars", {}).items():
            for name, value in scalars.items():
                state.setdefault(int(idx), {})[name] = torch.tensor(value)
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available():
            cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
        self.state = TrainState(**meta["state"])
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", last, self.state.step,
                    self.state.epoch, self.state.batch_in_epoch)

    # -------------------------------------------------------------------------------- loop

    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["step"])

    def _all_reduce(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def validate(self, keep: int = 0) -> EvalResult:
        result = evaluate(self.model, self.val_set, self.eval_settings, shard=(self.rank, self.world),
                          progress=False, limit=self.recipe["eval"].get("limit"), keep_predictions=keep)
        if self.world > 1:
            keys = list(result.averager_state)
            reduced = self._all_reduce([result.averager_state[k] for k in keys])
            summary = MetricAverager.from_state(dict(zip(keys, reduced, strict=True))).result()
            result.metrics = {k: summary[k] for k in result.metrics}
            result.count = int(summary["count"])
        return result

    def _signal_handler(self, signum: int, _frame: Any) -> None:
        if self.stop_reason is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.stop_reason = signal.Signals(signum).name
        logger.warning("%s received: finishing this step, writing a checkpoint, then stopping", self.stop_reason)

    def _micro_batches(self, loader_iter: Iterator) -> list[dict[str, Any]]:
        return [next(loader_iter) for _ in range(self.accumulation)]

    def train_step(self, micro: list[dict[str, Any]]) -> float:
        """One optimizer step over ``accumulation`` micro-batches; returns the mean loss (nan if skipped)."""
        t = self.t
        lr = one_cycle_lr(self.state.step, self.total_steps, max_lr=float(t["lr"]),
                          pct_start=float(t["pct_start"]), div_factor=float(t["div_factor"]),
                          final_div_factor=float(t["final_div_factor"]))
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
            sync = self.world > 1 and i < len(micro) - 1
            ctx = self.forward.no_sync() if sync else nullcontext()
            autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
            with ctx, autocast:
                pred = self.forward(images)
                loss = silog_loss(pred, depth, min_depth=float(t["loss_min_depth"]),
                                  variance_focus=float(t["variance_focus"]), scale=float(t["loss_scale"]),
                                  per_image=bool(t.get("loss_per_image", False)))
            if torch.isfinite(loss):
                with ctx:
                    self.scaler.scale(loss / len(micro)).backward()
            total += float(loss.detach()) / len(micro)
        finite_here = 1.0 if math.isfinite(total) else 0.0
        finite_all, loss_sum = self._all_reduce([finite_here, total if finite_here else 0.0])
        if finite_all < self.world:
            self.optimizer.zero_grad(set_to_none=True)
            self.state.nonfinite_total += 1
            self.state.nonfinite_streak += 1
            logger.warning("non-finite loss at step %d: step skipped (%d so far)", self.state.step,
                           self.state.nonfinite_total)
            if self.state.nonfinite_streak > int(t["max_nonfinite"]):
                raise Clip2DepthError(
                    f"{self.state.nonfinite_streak} non-finite losses in a row (step {self.state.step}); "
                    "lower train.lr, check the data for invalid depth, or disable amp"
                )
            return math.nan
        self.state.nonfinite_streak = 0
        self.scaler.unscale_(self.optimizer)
        if t.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(self.params, float(t["grad_clip"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / self.world

    def run(self) -> dict[str, Any]:
        self._setup_distributed()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        if self.resume:
            self.load_resume_state()
        elif self.is_main:
            (self.run_dir / "log.jsonl").unlink(missing_ok=True)
        if self.is_main:
            with open(self.run_dir / "config.yaml", "w") as f:
                yaml.safe_dump(self.recipe, f, sort_keys=False)
        self.tb = None
        if self.is_main and self.t.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise Clip2DepthError("train.tensorboard needs the tensorboard package: pip install "
                                      "tensorboard") from exc
            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))

        old_handlers = {}
        if hasattr(signal, "SIGTERM"):
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    old_handlers[sig] = signal.signal(sig, self._signal_handler)
                except ValueError:  # not the main thread
                    pass
        try:
            return self._loop()
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if self.tb is not None:
                self.tb.close()

    def _loop(self) -> dict[str, Any]:
        t, s = self.t, self.state
        log_every, val_every = int(t["log_every"]), int(t["val_every"])
        time_limit = t.get("time_limit_s")
        started = time.perf_counter() - s.elapsed_s
        bar = tqdm(total=self.total_steps, initial=s.step, desc="train", unit="step",
                   disable=not (self.progress and self.is_main), dynamic_ncols=True)
        loader_gen = torch.Generator().manual_seed(int(t["seed"]))  # keeps the global RNG untouched
        validated_at = -1
        losses: list[float] = []
        while s.step < self.total_steps and self.stop_reason is None:
            sampler = EpochBatchSampler(len(self.train_set), seed=int(t["seed"]), epoch=s.epoch,
                                        global_batch=self.global_batch, rank=self.rank, world=self.world,
                                        start_batch=s.batch_in_epoch)
            loader = DataLoader(self.train_set, batch_size=self.micro_batch, sampler=sampler,
                                num_workers=int(t["num_workers"]), collate_fn=_collate, generator=loader_gen,
                                pin_memory=self.device.type == "cuda")
            it = iter(loader)
            while s.batch_in_epoch < self.batches_per_epoch and s.step < self.total_steps:
                loss = self.train_step(self._micro_batches(it))
                s.step += 1
                s.batch_in_epoch += 1
                s.elapsed_s = time.perf_counter() - started
                if math.isfinite(loss):
                    losses.append(loss)
                bar.update(1)
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
                if s.step % log_every == 0 and losses:
                    self._log({"step": s.step, "epoch": s.epoch, "loss": sum(losses) / len(losses), "lr": lr,
                               "time_s": round(s.elapsed_s, 2), "nonfinite": s.nonfinite_total})
                    losses = []
                if s.step % val_every == 0 or s.step == self.total_steps:
                    self._validate_and_save()
                    validated_at = s.step
                if self.on_step is not None:
                    self.on_step(s.step)
                if time_limit and s.elapsed_s >= float(time_limit):
                    self.stop_reason = "time limit"
                if self.stop_reason is not None:
                    break
            else:
                s.epoch += 1
                s.batch_in_epoch = 0
            del it, loader
        bar.close()
        if validated_at != s.step:
            if self.stop_reason is not None and self.stop_reason != "time limit":
                self.save_checkpoint()
            else:
                self._validate_and_save()
        if self.stop_reason is not None:
            logger.warning("stopped (%s) at step %d; continue with --resume %s", self.stop_reason, s.step,
                           self.run_dir)
        return {"state": asdict(s), "stopped": self.stop_reason, "total_steps": self.total_steps}

    def _validate_and_save(self) -> None:
        s = self.state
        result = self.validate()
        abs_rel = result.metrics["abs_rel"]
        self._log({"step": s.step, **{f"val_{k}": v for k, v in result.metrics.items()},
                   "val_count": result.count})
        if self.is_main:
            logger.info("step %d: val abs_rel %.4f rmse %.4f d1 %.4f", s.step, abs_rel,
                        result.metrics["rmse"], result.metrics["d1"])
        improved = math.isfinite(abs_rel) and abs_rel < s.best_abs_rel
        if improved:
            s.best_abs_rel, s.best_step = abs_rel, s.step
        self.save_checkpoint()
        if improved:
            self._save_best()
        if self.world > 1:
            dist.barrier()


def _swap_in(partial: Path, final: Path) -> None:
    """Replace directory ``final`` by ``partial`` with renames only (``final.old`` bridges the gap)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def _existing_checkpoint(final: Path) -> Path:
    """``final``, or ``final.old`` if a crash hit between the two renames of :func:`_swap_in`."""
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / RESUME_JSON).is_file():
            read_model_dir(candidate)
            return candidate
    raise CheckpointError(f"nothing to resume in {final.parent}: no {final.name}/{RESUME_JSON}; "
                          "start the run without --resume")


def train(recipe: dict[str, Any], run_dir: str | Path, *, resume: bool = False,
          on_step: Callable[[int], None] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``recipe`` (a dict from :func:`clip2depth.training.config.load_recipe`) into ``run_dir``."""
    return Trainer(recipe, run_dir, resume=resume, on_step=on_step, progress=progress).run()


__all__ = ["Trainer", "TrainState", "load_trained_state", "one_cycle_lr", "train"]
