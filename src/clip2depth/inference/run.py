"""Depth for users' own files: run a :class:`~clip2depth.inference.plan.PredictionPlan` and report each input.

The library behind ``clip2depth predict``; the command parses flags, plans, and prints the report::

    from clip2depth import create_model
    from clip2depth.inference.camera import CameraSpec
    from clip2depth.inference.outputs import OutputOptions
    from clip2depth.inference.run import predict_paths

    model = create_model("runs/nyu/best", device="cuda")
    outputs = OutputOptions(formats=("png16", "ply"), camera=CameraSpec(fov_deg=70))
    report = predict_paths(model, ["photos/", "clip.mp4"], out_dir="depth", outputs=outputs)
    for path, reason in report.failed:
        print(f"{path}: {reason}")

A bad input never ends the run, nor does a batch that runs out of memory: each input gets one
:class:`~clip2depth.inference.plan.InputRecord` (done, skipped, failed or out of memory) and the rest goes on.

The steps of a run (reading an input, predicting a batch, writing outputs, a whole video) live in
:mod:`clip2depth.inference.steps`, which the Ray engine (:mod:`clip2depth.inference.raydata`) calls too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from clip2depth.errors import Clip2DepthError, is_out_of_memory
from clip2depth.inference.outputs import OutputOptions
from clip2depth.inference.plan import InputRecord, Job, PredictionPlan, PredictReport, plan_predictions
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
from clip2depth.io.progress import progress as progress_bar
from clip2depth.models.infer import size_batches

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BATCH_SIZE", "PredictOptions", "predict_paths", "run_plan"]


def predict_paths(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out_dir: str | os.PathLike[str],
    outputs: OutputOptions | None = None,
    options: PredictOptions | None = None,
    skip_existing: bool = False,
    progress: bool = True,
) -> PredictReport:
    """:func:`~clip2depth.inference.plan.plan_predictions`, then :func:`run_plan`: files, folders, glob
    patterns and videos in, the ``outputs`` in ``out_dir`` (replacing existing ones unless ``skip_existing``)."""
    plan = plan_predictions(inputs, out_dir, outputs, skip_existing=skip_existing)
    return run_plan(model, plan, options, progress=progress)


def run_plan(
    model: nn.Module | None, plan: PredictionPlan, options: PredictOptions | None = None, *, progress: bool = True
) -> PredictReport:
    """Predict the plan's jobs and write their outputs.

    Images are read as a viewer shows them (:func:`clip2depth.io.images.load_image`: EXIF orientation,
    grayscale, alpha, 16-bit, palette) and streamed: at most ``4 × batch_size`` are held in memory,
    and images of the same size are predicted together (:func:`clip2depth.models.infer.size_batches`).
    Videos are predicted frame by frame, ``batch_size`` frames at a time.

    Args:
        model: the depth model (on the device to use): anything :func:`~clip2depth.models.infer.predict_depth`
            runs, e.g. a :class:`~clip2depth.models.model.Clip2Depth`; None only for a plan with nothing to
            predict (every input skipped or refused), which then needs no model loaded.
        progress: show a progress bar on stderr (when it is a terminal; see :mod:`clip2depth.io.progress`).
    """
    settled = [InputRecord(r.index, r.input, "failed", error=r.reason) for r in plan.refused]
    settled += [InputRecord(job.index, str(job.path), "skipped") for job in plan.skipped]
    if not plan.jobs:
        return PredictReport(plan.matched, sorted(settled, key=lambda r: r.index))
    if model is None:
        raise ValueError("run_plan needs a model: the plan has inputs to predict")
    run = _Run(model, plan.outputs, options or PredictOptions())
    run.records += settled
    with ExitStack() as stack:
        run.bar = stack.enter_context(progress_bar(total=len(plan.jobs), enabled=progress, desc="predict",
                                                   unit="file"))  # fmt: skip
        if not run.bar.disable:
            stack.enter_context(logging_redirect_tqdm())
        for batch in size_batches(run.load(j for j in plan.jobs if not j.is_video), size=lambda item: item.rgb.shape,
                                  batch_size=run.options.batch_size):  # fmt: skip
            run.predict_images(batch)
        for job in plan.jobs:
            if job.is_video:
                run.video(job)
    return PredictReport(plan.matched, sorted(run.records, key=lambda r: r.index))


class _Run:
    """One :func:`run_plan` call: the records so far, in completion order."""

    def __init__(self, model: nn.Module, outputs: OutputOptions, options: PredictOptions) -> None:
        self.model, self.outputs, self.options = model, outputs, options
        self.records: list[InputRecord] = []
        self.bar: Any = None

    def add(self, record: InputRecord) -> None:
        if record.status != "done":
            logger.debug("%s %s: %s", record.input, record.status, record.error)  # the report lists them
        self.records.append(record)
        self.bar.update(1)

    def record(self, job: Job, status: str, **fields: Any) -> None:
        self.add(InputRecord(job.index, str(job.path), status, **fields))

    # ------------------------------------------------------------------ images

    def load(self, jobs: Iterator[Job]) -> Iterator[LoadedImage]:
        for job in jobs:
            try:
                loaded = read_image(job, self.outputs)
            except Clip2DepthError as exc:
                self.record(job, "failed", error=error_reason(job.path, exc))
                continue
            log_network_size(job.path, *loaded.rgb.shape[:2], self.model, self.options)
            yield loaded

    def predict_images(self, batch: list[LoadedImage]) -> None:
        """Predict one same-size batch and write each image's outputs; a batch out of memory is recorded."""
        height, width = batch[0].rgb.shape[:2]
        start = time.perf_counter()
        try:
            depths = predict_images(self.model, [item.rgb for item in batch], self.options)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            depths = None
        if depths is None:  # outside the except clause, so the traceback's tensors are already freed
            error = out_of_memory_reason(self.model, self.options, len(batch), "image", height, width)
            for item in batch:
                self.record(item.job, "out_of_memory", height=height, width=width, error=error)
            return
        shared = (time.perf_counter() - start) / len(batch)
        for item, depth in zip(batch, depths, strict=True):
            start = time.perf_counter()
            size = {"height": height, "width": width}
            try:
                written = write_image(item, depth, self.outputs)
            except (Clip2DepthError, OSError) as exc:
                self.record(item.job, "failed", **size, error=f"cannot write outputs: {exc}")
                continue
            seconds = item.seconds + shared + time.perf_counter() - start
            self.record(item.job, "done", outputs=tuple(written), **size, **depth_fields(depth), seconds=seconds)

    # ------------------------------------------------------------------ videos

    def video(self, job: Job) -> None:
        self.add(predict_video(self.model, job, self.outputs, self.options, progress=not self.bar.disable))
