"""``predict --engine ray``: a Ray Data pipeline, and :class:`DepthPredictor` for your own Ray pipelines.

The pipeline (:func:`run_ray`) runs one :class:`~clip2depth.inference.plan.PredictionPlan`, made on the
driver, in four stages:

1. the plan's jobs become a dataset (``ray.data.from_items``);
2. read: CPU tasks fetch each input (from storage when it is a URL) and decode it
   (:func:`~clip2depth.inference.steps.read_image`);
3. predict: an actor pool (``--workers`` actors, ``--gpus-per-worker`` GPUs each) that loads the model
   once per actor predicts same-size images together (:class:`DepthPredictor`); a video goes through
   this stage whole, read, predicted and written by one actor
   (:func:`~clip2depth.inference.steps.predict_video`);
4. write: CPU tasks write each image's outputs (:func:`~clip2depth.inference.steps.write_image`), to the
   same names as the local engine, and return its record.

Ray retries a task, and restarts an actor, whose worker dies; outputs appear under their final names
only when complete, so a retried input is written again whole, and the driver keeps one record per input.

Using the predictor in your own pipeline (``ray.data.read_images`` gives an ``image`` column of H×W×3
uint8 arrays)::

    import ray
    from clip2depth.inference.raydata import DepthPredictor

    ds = ray.data.read_images("s3://bucket/photos/", mode="RGB", include_paths=True)
    ds = ds.map_batches(DepthPredictor, fn_constructor_kwargs={"model": "hf-hub:me/clip2depth-nyu", "batch_size": 8},
                        batch_size=32, num_gpus=1, compute=ray.data.ActorPoolStrategy(size=4))
    for row in ds.iter_rows():
        row["path"], row["depth"]        # H×W float32 metres at the image's size
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from clip2depth.errors import Clip2DepthError, ConfigError, is_out_of_memory
from clip2depth.inference.camera import ImageCamera
from clip2depth.inference.manifest import record_row, row_record
from clip2depth.inference.outputs import OutputOptions, output_targets
from clip2depth.inference.plan import InputRecord, Job, PredictionPlan, PredictReport
from clip2depth.inference.pointcloud import Intrinsics
from clip2depth.inference.steps import (
    DEFAULT_BATCH_SIZE,
    LoadedImage,
    PredictOptions,
    depth_fields,
    error_reason,
    log_network_size,
    out_of_memory_reason,
    predict_images,
    predict_video,
    read_image,
    write_image,
)
from clip2depth.inference.storage import location
from clip2depth.io.progress import progress as progress_bar

logger = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'clip2depth[ray]'"

IO_TASK_CPUS = 0.5
"""CPUs a read or write task asks for: they mostly wait on storage, and asking for less than the actors' one
CPU also keeps Ray Data from fusing reading into the actors (decoding would then hold up prediction)."""


def import_ray() -> Any:
    """The ``ray`` module (with Ray Data).

    Raises:
        ConfigError: Ray is not installed; the message names the extra.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray with Ray Data: {RAY_EXTRA}") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and with how many workers the pipeline runs; checked when built.

    Attributes:
        address: a Ray cluster to join (``HOST:PORT`` or ``ray://HOST:PORT``); None: ``RAY_ADDRESS`` if set,
            else a new local Ray instance, stopped at the end.
        workers: predicting actors; None: the cluster's GPUs ÷ ``gpus_per_worker``, or without GPUs its
            CPUs less one (one CPU stays free for reading and writing, without which the pipeline stalls).
        gpus_per_worker: GPUs per actor (a fraction shares a GPU); None: 1 when the cluster has GPUs, else 0.

    Raises:
        ConfigError: ``workers`` below 1 or ``gpus_per_worker`` below 0 (the message names the field).
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers={self.workers} must be at least 1", params=("workers",))
        if self.gpus_per_worker is not None and not self.gpus_per_worker >= 0:
            raise ConfigError(f"gpus_per_worker={self.gpus_per_worker} must be 0 or more", params=("gpus_per_worker",))


@dataclass(frozen=True)
class _Layout:
    workers: int
    gpus_per_worker: float


def _pool(options: RayOptions, cpus: float, gpus: float) -> _Layout:
    """The actor pool ``options`` ask for on a cluster of ``cpus`` CPUs and ``gpus`` GPUs (defaults filled in)."""
    per_worker = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
    if options.workers is not None:
        workers = options.workers
    elif per_worker > 0:
        workers = max(1, int(gpus // per_worker))
    else:
        workers = max(1, int(cpus) - 1)
    return _Layout(workers, per_worker)


def _layout(options: RayOptions, cpus: float, gpus: float) -> _Layout:
    """:func:`_pool`, checked against the cluster.

    Raises:
        ConfigError: the actors need more GPUs than there are, or would leave no CPU for the read and
            write tasks (the pipeline would stall).
    """
    layout = _pool(options, cpus, gpus)
    workers, per_worker = layout.workers, layout.gpus_per_worker
    if per_worker * workers > gpus:
        raise ConfigError(f"workers={workers} with gpus_per_worker={per_worker:g} need {per_worker * workers:g} GPUs; "
                          f"the Ray cluster has {gpus:g}", params=("workers", "gpus_per_worker"))  # fmt: skip
    if workers >= cpus:
        raise ConfigError(f"workers={workers} would take every CPU of the Ray cluster ({cpus:g}), leaving none to "
                          f"read and write images; use at most {max(int(cpus) - 1, 0)} workers, or a cluster with "
                          "more CPUs", params=("workers",))  # fmt: skip
    return layout


def _local_cpus(options: RayOptions) -> int:
    """CPUs a local instance advertises: this machine's, and at least one more than the actors take."""
    import torch

    cpus = os.cpu_count() or 1
    return max(cpus, _pool(options, cpus, torch.cuda.device_count()).workers + 1)


@contextlib.contextmanager
def _quiet_core_worker(quiet: bool) -> Iterator[None]:
    """Keep Ray's C++ log lines (errors Ray Data's own actors trigger about their constructor arguments) off the
    driver's stderr: the processes started here log fatal errors only, unless ``RAY_BACKEND_LOG_LEVEL`` is set
    (or ``verbose``, ``-v``, asks for everything)."""
    if not quiet or "RAY_BACKEND_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    try:
        yield
    finally:
        del os.environ["RAY_BACKEND_LOG_LEVEL"]


@contextlib.contextmanager
def ray_session(options: RayOptions, *, verbose: bool = False) -> Iterator[_Layout]:
    """Connect to Ray for the block (or use the connection this process has) and size the actor pool.

    A local instance started here advertises one CPU more than the actors take (at least the machine's
    count), so reading and writing always have a slot; it is shut down after the block.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        address = options.address or os.environ.get("RAY_ADDRESS") or "local"
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose,
                                  "logging_level": logging.INFO if verbose else logging.ERROR}  # fmt: skip
        if address == "local":
            kwargs["num_cpus"] = _local_cpus(options)
        try:
            with _quiet_core_worker(not verbose):
                ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address} ({exc}); check --ray-address / "
                              "RAY_ADDRESS, or leave both unset to start a local instance") from None  # fmt: skip
        started = True
    try:
        resources = ray.cluster_resources()
        yield _layout(options, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)))
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------- the predictor


class DepthPredictor:
    """A Ray Data callable class: a batch with an ``image`` column in, the same batch with ``depth`` added.

    Ray builds one per actor, so the model loads once per actor; pass the arguments through
    ``fn_constructor_kwargs``. Images (H×W×3 uint8 RGB, any sizes, e.g. from ``ray.data.read_images``) of
    the same size are predicted together, ``batch_size`` at a time; each depth is H×W float32 metres at
    its image's size, and does not depend on the other images of the batch (nor on its size) beyond
    floating-point summation order.

    Args:
        model: a preset, model directory or ``hf-hub:org/name`` (:func:`clip2depth.create_model`); on a
            cluster, a directory every node can read, or the Hub.
        pretrained: CLIP weights for a preset, as for ``create_model``.
        device: ``auto`` (the actor's GPU when Ray gave it one, else the CPU), ``cpu``, ``cuda``, ...
        batch_size, max_side, size, native, flip_tta, precision: as for
            :class:`~clip2depth.inference.steps.PredictOptions` (none of max_side, size, native: the model's own scale).
        image_column, depth_column: the column names read and written.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        pretrained: str | None = None,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_side: int | None = None,
        size: tuple[int, int] | None = None,
        native: bool = False,
        flip_tta: bool = False,
        precision: str = "fp32",
        image_column: str = "image",
        depth_column: str = "depth",
    ) -> None:
        from clip2depth.models.factory import create_model, resolve_device

        self.options = PredictOptions(batch_size=batch_size, max_side=max_side, size=size, native=native,
                                      flip_tta=flip_tta, precision=precision)  # fmt: skip
        self.model = create_model(str(model), pretrained=pretrained, device=resolve_device(device))
        self.image_column, self.depth_column = image_column, depth_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        images = list(batch[self.image_column])
        depths: list[np.ndarray | None] = [None] * len(images)
        for group in self._groups(images, range(len(images))):
            for i, depth in zip(group, predict_images(self.model, [images[i] for i in group], self.options),
                                strict=True):  # fmt: skip
                depths[i] = depth
        batch[self.depth_column] = depths
        return batch

    def _groups(self, images: list[np.ndarray], indices: Any) -> Iterator[list[int]]:
        """Indices of same-size images, in groups of at most ``batch_size``, in order of first appearance."""
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i in indices:
            by_size.setdefault(tuple(np.shape(images[i])), []).append(i)
        size = self.options.batch_size
        for members in by_size.values():
            for start in range(0, len(members), size):
                yield members[start : start + size]


# ---------------------------------------------------------------------------------------------- the pipeline

_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)
_NO_DEPTH = np.zeros((0, 0), np.float32)


def _job_row(job: Job) -> dict[str, Any]:
    return {"index": job.index, "path": str(job.path), "base": str(job.base)}


def _job(row: dict[str, Any], outputs: OutputOptions) -> Job:
    path, base = location(row["path"]), location(row["base"])
    return Job(int(row["index"]), path, base, tuple(output_targets(path, base, outputs)))


def _camera_json(camera: ImageCamera | None) -> str:
    return "" if camera is None else json.dumps(dataclasses.asdict(camera))


def _camera(text: str) -> ImageCamera | None:
    if not text:
        return None
    fields = json.loads(text)
    return ImageCamera(**{**fields, "intrinsics": Intrinsics(**fields["intrinsics"])})


def _record_json(record: InputRecord) -> str:
    return json.dumps({**record_row(record), "index": record.index})


def _read(row: dict[str, Any], outputs: OutputOptions) -> dict[str, Any]:
    """Stage 2: decode an image row (videos pass through to the actor)."""
    job = _job(row, outputs)
    out = {**row, "image": _NO_IMAGE, "camera": "", "read_seconds": 0.0, "record": ""}
    if job.is_video:
        return out
    try:
        loaded = read_image(job, outputs)
    except Clip2DepthError as exc:
        out["record"] = _record_json(InputRecord(job.index, str(job.path), "failed", error=error_reason(job.path, exc)))
        return out
    return {**out, "image": loaded.rgb, "camera": _camera_json(loaded.camera), "read_seconds": loaded.seconds}


class _PipelinePredictor(DepthPredictor):
    """Stage 3 of :func:`run_ray`: :class:`DepthPredictor` over the rows still to predict; videos whole;
    a group that runs out of memory, or a model this worker cannot load, becomes its rows' records."""

    def __init__(self, model: str, pretrained: str | None, device: str, options: PredictOptions,
                 outputs: OutputOptions) -> None:  # fmt: skip
        self.outputs = outputs
        self.failure: str | None = None
        try:
            super().__init__(model, pretrained=pretrained, device=device, batch_size=options.batch_size,
                             max_side=options.max_side, size=options.size, native=options.native,
                             flip_tta=options.flip_tta, precision=options.precision)
        except Clip2DepthError as exc:  # e.g. the model is not on this node: each input says so, no actor restarts
            self.failure = f"cannot load the model on this Ray worker: {exc}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        count = len(batch["index"])
        records = list(batch["record"])
        images = list(batch["image"])
        depths: list[np.ndarray] = [_NO_DEPTH] * count
        seconds = [0.0] * count
        batch["depth"], batch["predict_seconds"] = depths, seconds
        if self.failure is not None:
            batch["record"] = [r or _record_json(InputRecord(int(batch["index"][i]), str(batch["path"][i]), "failed",
                                                             error=self.failure))
                               for i, r in enumerate(records)]  # fmt: skip
            return batch
        todo = []
        for i in range(count):
            if records[i]:
                continue
            job = _job({"index": batch["index"][i], "path": batch["path"][i], "base": batch["base"][i]}, self.outputs)
            if job.is_video:
                records[i] = _record_json(predict_video(self.model, job, self.outputs, self.options))
            else:
                log_network_size(job.path, *images[i].shape[:2], self.model, self.options)
                todo.append(i)
        for group in self._groups(images, todo):
            start = time.perf_counter()
            try:
                predicted = predict_images(self.model, [images[i] for i in group], self.options)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                predicted = None
            if predicted is None:
                height, width = images[group[0]].shape[:2]
                error = out_of_memory_reason(self.model, self.options, len(group), "image", height, width)
                for i in group:
                    records[i] = _record_json(InputRecord(int(batch["index"][i]), str(batch["path"][i]),
                                                          "out_of_memory", height=height, width=width, error=error))
                continue
            shared = (time.perf_counter() - start) / len(group)
            for i, depth in zip(group, predicted, strict=True):
                depths[i], seconds[i] = depth, shared
        batch["record"] = records
        return batch


def _write(row: dict[str, Any], outputs: OutputOptions) -> dict[str, Any]:
    """Stage 4: write an image's outputs; every row leaves as its record (JSON)."""
    if row["record"]:
        return {"record": row["record"]}
    job = _job(row, outputs)
    start = time.perf_counter()
    loaded = LoadedImage(job, np.asarray(row["image"]), _camera(row["camera"]), float(row["read_seconds"]))
    depth = np.asarray(row["depth"], dtype=np.float32)
    height, width = loaded.rgb.shape[:2]
    try:
        written = write_image(loaded, depth, outputs)
    except (Clip2DepthError, OSError) as exc:
        record = InputRecord(job.index, str(job.path), "failed", height=height, width=width,
                             error=f"cannot write outputs: {exc}")  # fmt: skip
        return {"record": _record_json(record)}
    seconds = loaded.seconds + float(row["predict_seconds"]) + time.perf_counter() - start
    record = InputRecord(job.index, str(job.path), "done", outputs=tuple(written), height=height, width=width,
                         **depth_fields(depth), seconds=seconds)  # fmt: skip
    return {"record": _record_json(record)}


def run_ray(
    plan: PredictionPlan,
    model: str | os.PathLike[str],
    options: PredictOptions | None = None,
    ray_options: RayOptions | None = None,
    *,
    pretrained: str | None = None,
    device: str = "auto",
    progress: bool = True,
    verbose: bool = False,
) -> PredictReport:
    """Run ``plan`` as a Ray Data pipeline (see the module docstring); the same outputs and records as
    :func:`~clip2depth.inference.run.run_plan`.

    Args:
        model, pretrained: what each actor loads (:func:`clip2depth.create_model`).
        device: each actor's device (``auto``: its GPU when it has one).
        ray_options: the cluster and the actor pool.
        progress: a progress bar on stderr, one step per finished input.
        verbose: Ray's own logs and the workers' output on the driver's stderr.
    """
    from clip2depth.models.factory import check_device_name
    from clip2depth.models.spec import resolve_model

    options = options or PredictOptions()
    ray_options = ray_options or RayOptions()
    check_device_name(device)  # what can be checked here fails here, not in every actor
    resolve_model(str(model), pretrained=pretrained, download=False)
    records = [InputRecord(r.index, r.input, "failed", error=r.reason) for r in plan.refused]
    records += [InputRecord(job.index, str(job.path), "skipped") for job in plan.skipped]
    if plan.jobs:
        records += _run_jobs(plan, str(model), options, ray_options, pretrained, device, progress, verbose)
    return PredictReport(plan.matched, sorted(records, key=lambda r: r.index))


def _run_jobs(plan: PredictionPlan, model: str, options: PredictOptions, ray_options: RayOptions,
              pretrained: str | None, device: str, progress: bool, verbose: bool) -> list[InputRecord]:  # fmt: skip
    with ray_session(ray_options, verbose=verbose) as layout:
        ray = import_ray()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
        outputs = plan.outputs
        ds = ray.data.from_items([_job_row(job) for job in plan.jobs])
        ds = ds.map(_read, fn_kwargs={"outputs": outputs}, num_cpus=IO_TASK_CPUS)
        ds = ds.map_batches(_PipelinePredictor, batch_size=options.batch_size, batch_format="numpy",
                            fn_constructor_kwargs={"model": model, "pretrained": pretrained, "device": device,
                                                   "options": options, "outputs": outputs},
                            compute=ray.data.ActorPoolStrategy(size=layout.workers), num_cpus=1,
                            num_gpus=layout.gpus_per_worker or None)  # fmt: skip
        ds = ds.map(_write, fn_kwargs={"outputs": outputs}, num_cpus=IO_TASK_CPUS)
        done: dict[int, InputRecord] = {}
        with progress_bar(total=len(plan.jobs), enabled=progress, desc="predict", unit="file") as bar:
            for row in ds.iter_rows():
                fields = json.loads(row["record"])
                record = row_record(fields, int(fields["index"]))
                if record.index not in done:  # a retried task's row is the same input's: keep one
                    done[record.index] = record
                    bar.update(1)
    return list(done.values())
