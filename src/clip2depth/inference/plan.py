"""What a prediction run will do (the plan) and what it did (one record per input).

:func:`plan_predictions` finds the inputs once, before any model loads, and decides everything that
depends only on the files: output names, clashes, skips, outputs that exist already. ``clip2depth
predict`` refuses an ``--out`` holding outputs of the plan (:attr:`PredictionPlan.existing`), and
:func:`clip2depth.inference.run.run_plan` executes the same plan. A plan is plain data: its jobs are
independent and each names its own output files, so a subset (``jobs[rank::world]``) can run elsewhere,
and the run gives one :class:`InputRecord` per input, which :class:`PredictReport` aggregates.

Inputs and the output folder may be URLs (:mod:`clip2depth.inference.storage`): a job's ``path``, ``base``
and ``targets`` are then ``str`` URLs instead of local ``Path`` objects, and which outputs exist already
is read from one listing of the output prefix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clip2depth.inference import storage
from clip2depth.inference.outputs import OutputOptions, output_targets
from clip2depth.inference.storage import FoundObject, Location
from clip2depth.io.atomic import NAME_MAX
from clip2depth.io.inputs import FoundFile, find_files, is_video_path
from clip2depth.io.outputs import writable_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One input to predict.

    Attributes:
        index: position among the files found, in input order (the order of the report).
        path: the input file (a URL for an object in storage).
        base: ``out_dir / stem``, the output name without suffix (see :mod:`clip2depth.inference.outputs`).
        targets: every file (and for video frames the folder) predicting it writes.
    """

    index: int
    path: Location
    base: Location
    targets: tuple[Location, ...]

    @property
    def is_video(self) -> bool:
        return is_video_path(self.path)


@dataclass(frozen=True)
class Refusal:
    """An input the plan leaves out, and why. ``index`` is -1 for a pattern or folder that matched nothing."""

    index: int
    input: str
    reason: str


@dataclass(frozen=True)
class PredictionPlan:
    """Everything a run will do, in input order.

    Attributes:
        out_dir: the output folder (a URL for a prefix in storage).
        outputs: what is written for each input.
        matched: input files found (images and videos, readable or not).
        jobs: inputs to predict.
        skipped: inputs whose outputs all exist already (planned with ``skip_existing``).
        refused: inputs that match nothing, whose outputs would overwrite an input or another input's
            outputs, or that have nothing to write.
        existing: outputs of ``jobs`` that exist already: running the plan replaces them.
    """

    out_dir: Location
    outputs: OutputOptions
    matched: int
    jobs: tuple[Job, ...]
    skipped: tuple[Job, ...]
    refused: tuple[Refusal, ...]
    existing: tuple[Location, ...]


def find_inputs(
    inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> tuple[list[FoundFile | FoundObject], list[tuple[str, str]]]:
    """Input files and their output names (files, folders, glob patterns; see :func:`clip2depth.io.inputs.find_files`).

    URLs (:func:`clip2depth.inference.storage.find_objects`) come after the local inputs, each group in
    the order given. When ``out_dir`` lies inside an input folder, the files under it are left out (with a
    warning): they are the outputs of an earlier run, not inputs.

    Returns:
        ``(files, problems)``: ``problems`` holds ``(input, reason)`` for inputs that match nothing.
    """
    local_inputs: list[str | os.PathLike[str]] = []
    remote: list[str] = []
    for item in inputs:
        loc = storage.location(item)
        if isinstance(loc, str):
            remote.append(loc)
        else:  # as given, so that messages keep the user's spelling; file:// URLs as their paths
            local_inputs.append(loc if str(item).lower().startswith("file://") else item)
    files: list[FoundFile | FoundObject] = []
    local, problems = find_files(local_inputs)
    files += local
    if remote:
        objects, remote_problems = storage.find_objects(remote)
        files += objects
        problems += remote_problems
    out_loc = storage.location(out_dir)
    out = storage.canonical(out_loc.expanduser() if isinstance(out_loc, Path) else out_loc)
    roots = {storage.canonical(f.root) for f in files if f.root is not None}
    if any(out != root and _inside(out, root) for root in roots):
        kept = [f for f in files if f.root is None or not _inside(storage.canonical(f.path), out)]
        if len(kept) < len(files):
            logger.warning("skipping %d files inside the output folder %s", len(files) - len(kept), out_dir)
        files = kept
    return files, problems


def _inside(key: str, folder: str) -> bool:
    """Whether the canonical location ``key`` lies in (or is) the canonical folder ``folder``."""
    return key == folder or key.startswith(folder.rstrip("/") + "/")


def plan_predictions(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    outputs: OutputOptions | None = None,
    *,
    skip_existing: bool = False,
) -> PredictionPlan:
    """Find ``inputs`` (files, folders searched recursively, glob patterns) and plan their outputs in ``out_dir``.

    An input is refused when its outputs would overwrite an input file or outputs of an input found
    before it (that one keeps the name), when an output's name is too long for a file, and a video when
    the formats write nothing for it. With ``skip_existing``, an input whose outputs all exist is skipped;
    otherwise its existing outputs are listed in :attr:`PredictionPlan.existing`. Nothing is written.
    """
    outputs = outputs or OutputOptions()
    out = storage.location(out_dir)
    if isinstance(out, Path):  # a file, or a folder that cannot be written, is refused before any model loads
        writable_folder(out, "output folder", create=False)
    files, problems = find_inputs(inputs, out_dir)
    refused = [Refusal(-1, raw, reason) for raw, reason in problems]
    jobs: list[Job] = []
    skipped: list[Job] = []
    input_keys = {storage.canonical(f.path) for f in files}
    listed = storage.list_existing(out) if isinstance(out, str) else None  # one listing, not one request a file

    def exists(target: Location) -> bool:
        return storage.canonical(target) in listed if listed is not None else Path(target).exists()

    claimed: dict[str, Location] = {}
    for index, found in enumerate(files):
        base = storage.join(out, found.name)
        job = Job(index, found.path, base, tuple(output_targets(found.path, base, outputs)))
        resolved = [storage.canonical(t) for t in job.targets]
        clash = next((t for t in resolved if t in input_keys or t in claimed), None)
        too_long = next((n for n in map(storage.name_of, job.targets) if len(n.encode()) > NAME_MAX), None)
        if too_long is not None and isinstance(out, Path):
            refused.append(Refusal(index, str(found.path), f"its output name {too_long} is longer than the "
                                   f"{NAME_MAX} bytes a file name may have; give the input a shorter name"))
        elif not job.targets:
            refused.append(Refusal(index, str(found.path), "nothing to write for a video: ask for 'color' (a depth "
                                                           "video) or for per-frame files"))  # fmt: skip
        elif clash in input_keys:
            refused.append(Refusal(index, str(found.path),
                                   f"its output {clash} would overwrite an input file; choose another output folder"))
        elif clash is not None:
            refused.append(Refusal(index, str(found.path), f"its output {clash} would also be that of "
                                   f"{claimed[clash]}; rename one of them or predict them into separate output "
                                   "folders"))  # fmt: skip
        else:
            claimed.update(dict.fromkeys(resolved, found.path))
            done = skip_existing and all(exists(t) for t in job.targets)
            (skipped if done else jobs).append(job)
    existing = tuple(t for job in jobs for t in job.targets if exists(t))
    return PredictionPlan(out, outputs, len(files), tuple(jobs), tuple(skipped), tuple(refused), existing)


STATUSES = ("done", "skipped", "failed", "out_of_memory")
"""What happened to an input: outputs written; outputs existed (``skip_existing``); refused or unreadable;
its batch ran out of memory (a smaller ``batch_size`` or ``size`` may succeed)."""


@dataclass(frozen=True)
class InputRecord:
    """What happened to one input: a row of the run's manifest.

    Attributes:
        index: position among the files found (-1: a pattern or folder that matched nothing).
        input: the input file (or pattern).
        status: one of :data:`STATUSES`.
        outputs: files written (URLs for outputs in storage).
        height, width: size of the image (video: of its frames) as displayed, pixels.
        depth_min, depth_median, depth_max: over the valid pixels, metres (video: min and max over all
            frames, median of the frames' medians); None when nothing was predicted.
        seconds: time spent on this input (a batch's inference is shared equally by its images).
        error: why it failed, else None.
    """

    index: int
    input: str
    status: str
    outputs: tuple[Location, ...] = ()
    height: int | None = None
    width: int | None = None
    depth_min: float | None = None
    depth_median: float | None = None
    depth_max: float | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class PredictReport:
    """What a run did: one :class:`InputRecord` per input, in input order, and the totals the command prints.

    Attributes:
        matched: input files found (images and videos, readable or not).
        records: one per input file, and one per pattern or folder that matched nothing (first).
    """

    matched: int
    records: list[InputRecord] = field(default_factory=list)

    def _with(self, *statuses: str) -> list[InputRecord]:
        return [r for r in self.records if r.status in statuses]

    @property
    def succeeded(self) -> list[Location]:
        """Inputs whose outputs were all written."""
        return [storage.location(r.input) for r in self._with("done")]

    @property
    def skipped(self) -> list[Location]:
        """Inputs left alone because their outputs existed (``skip_existing``)."""
        return [storage.location(r.input) for r in self._with("skipped")]

    @property
    def failed(self) -> list[tuple[str, str]]:
        """``(input, reason)`` for every input not done: refused, unreadable or out of memory."""
        return [(r.input, r.error or "") for r in self._with("failed", "out_of_memory")]

    @property
    def out_of_memory(self) -> list[str]:
        """Inputs whose batch ran out of memory (included in :attr:`failed`)."""
        return [r.input for r in self._with("out_of_memory")]

    @property
    def outputs(self) -> list[Location]:
        """Every file written."""
        return [p for r in self.records for p in r.outputs]

    @property
    def exit_code(self) -> int:
        """Command exit status: 0 if any input succeeded or was already done, else 1 (nothing usable)."""
        return 0 if self.succeeded or self.skipped else 1

    def summary(self, out_dir: str | os.PathLike[str]) -> str:
        """One line: ``12 of 14 inputs done (3 already done, skipped), 2 failed; 36 files written to depth``."""
        done = len(self.succeeded) + len(self.skipped)
        text = f"{done} of {self.matched} inputs done"
        if self.skipped:
            text += f" ({len(self.skipped)} already done, skipped)"
        if self.failed:
            text += f", {len(self.failed)} failed"
        if self.out_of_memory:
            text += f" ({len(self.out_of_memory)} out of memory)"
        return f"{text}; {len(self.outputs)} files written to {out_dir}"
