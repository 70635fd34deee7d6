"""Layout check (``clip2depth data check``): is every file the split lists name there, readable, the right size?

For data obtained elsewhere as well as for what ``data get`` produced. Each list line names an RGB
image and (unless ``None``) a depth map; a file is *missing* when absent, *unreadable* when it is not
an image the readers accept (corrupt, truncated: every file is decoded to its last pixel; a depth map
that is not a single-channel 16-bit image), *not readable* for this user (permissions), and of *wrong
size* when NYU frames are not 640×480 or a depth map's size differs from its image's.

The same list-to-path rules tell ``data get`` which files each archive must hold
(:func:`entry_paths`), so both agree on the layout:

- NYU: ``<root>/sync/<list path>`` (train) and ``<root>/official_splits/test/<list path>`` (test);
- KITTI: ``<root>/<list RGB path>`` and the ground truth under ``<root>/data_depth_annotated``, in it or
  its ``train/`` or ``val/`` folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from clip2depth.data.base import LIST_FORMAT, ParsedList, packaged_list, parse_list, read_list
from clip2depth.data.sources import DATASET_NAMES, PARTS
from clip2depth.errors import ConfigError, DataError
from clip2depth.io.progress import progress

logger = logging.getLogger(__name__)

NYU_SIZE = (640, 480)
"""(width, height) of every NYU Depth v2 frame."""

NYU_SPLIT_DIRS = {"train": Path("sync"), "test": Path("official_splits") / "test"}
"""The folder of each NYU part under the root (BTS's layout); list paths are relative to it."""

NYU_TEST_DIR = NYU_SPLIT_DIRS["test"]
KITTI_GT_DIR = "data_depth_annotated"
_KITTI_GT_SUBDIRS = ("train", "val", "")

DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I")
"""Pillow modes of a 16-bit single-channel PNG, the only depth-map format NYU and KITTI ship."""

LIST_FILES = {
    "nyu": {"train": "nyudepthv2_train_files_with_gt.txt.gz", "test": "nyudepthv2_test_files_with_gt.txt"},
    "kitti": {"train": "eigen_train_files_with_gt.txt.gz", "test": "eigen_test_files_with_gt.txt"},
}
"""The packaged split lists each part is checked against."""


class SplitList(NamedTuple):
    """The split list of one part: its parsed lines and the user's list file (None: the packaged list)."""

    part: str
    parsed: ParsedList
    file: str | None


def read_part_list(dataset: str, part: str, list_file: str | Path | None = None) -> SplitList:
    """The split list of ``part`` of ``dataset``: ``list_file``, or the packaged one.

    Raises:
        ConfigError: unknown dataset or part.
        DataError: the list cannot be read, or names no file (empty, only comments or malformed lines).
    """
    if dataset not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    if part not in PARTS:
        raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    source = str(list_file) if list_file else LIST_FILES[dataset][part]
    parsed = parse_list(read_list(list_file) if list_file else packaged_list(source), source)
    if not parsed.entries and not parsed.skipped_no_gt:
        raise DataError(f"{source}: the {part} list names no files (it is empty or holds only blank and # lines); "
                        f"expected {LIST_FORMAT}")
    return SplitList(part, parsed, str(list_file) if list_file else None)


def entry_paths(dataset: str, part: str, root: Path, rgb: str, depth: str, *,
                gt_root: Path | None = None) -> tuple[Path, list[Path]]:
    """The RGB file of one list entry under ``root`` and the places its depth map may lie (any one will do).

    KITTI ground truth lies under ``gt_root`` (default ``<root>/data_depth_annotated``), in its ``train/``
    or ``val/`` folder (as the annotated-depth archive unpacks) or in it directly.
    """
    if dataset == "nyu":
        base = root / NYU_SPLIT_DIRS[part]
        return base / rgb.lstrip("/"), [base / depth.lstrip("/")]
    gt = gt_root if gt_root is not None else root / KITTI_GT_DIR
    return root / rgb, [gt / sub / depth for sub in _KITTI_GT_SUBDIRS]


def require_root(dataset: str, root: str | Path) -> Path:
    """``root`` when it is a folder this user may read; :class:`DataError` saying what it is otherwise."""
    root = Path(root)
    get = f"clip2depth data get {dataset} --root {root}"
    if not os.path.lexists(root):
        raise DataError(f"dataset folder {root} does not exist; check the path, or download the dataset into it "
                        f"with: {get}")
    if not root.is_dir():
        raise DataError(f"dataset folder {root} is a file, not a folder; pass the folder holding the dataset")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"dataset folder {root} cannot be read (permission denied); fix its permissions or run "
                        "the check as a user who may read it")
    return root


@dataclass
class PartReport:
    """The check of one part (``train`` or ``test``); each problem list holds ``path: reason`` strings
    (``missing``: paths)."""

    part: str
    listed: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.listed > 0 and not (self.missing or self.unreadable or self.wrong_size or self.denied)


def _probe(path: Path, *, depth: bool) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """``(size, kind, reason)`` of one image file: its (width, height), or the kind of problem
    (``missing``, ``denied``, ``unreadable``) and why."""
    try:
        if not path.is_file():
            return None, "missing", None
        with Image.open(path) as img:
            size, mode, bands, fmt = img.size, img.mode, len(img.getbands()), img.format
            if fmt == "PNG":
                img.verify()  # every chunk's CRC, up to IEND: a PNG cut inside its last chunk still decodes
        with Image.open(path) as img:
            img.load()  # decodes every pixel: a JPEG cut short opens and verifies, and fails only here
    except PermissionError as exc:
        return None, "denied", f"cannot be read ({exc.strerror}); fix its permissions"
    except Exception as exc:  # whatever a damaged file makes a decoder raise (OSError, SyntaxError, struct.error...)
        return None, "unreadable", f"unreadable ({exc or type(exc).__name__})"
    if depth and bands != 1:
        return None, "unreadable", f"unreadable (a depth map must be single-channel, this has {bands} channels)"
    if depth and mode not in DEPTH_MODES:
        return None, "unreadable", f"unreadable (a depth map must be a 16-bit image, this is {fmt} mode {mode})"
    return size, None, None


def check_part(dataset: str, root: str | Path, part: str, *, list_file: str | Path | None = None,
               gt_root: str | Path | None = None, show_progress: bool = True) -> PartReport:
    """Check ``part`` of ``dataset`` under ``root`` against its split list (``list_file`` or the packaged one).

    Every listed file is decoded completely. KITTI ground truth is looked up under ``gt_root`` (default
    ``<root>/data_depth_annotated``) as :func:`entry_paths` says.
    """
    root = Path(root)
    split = read_part_list(dataset, part, list_file)
    if gt_root is not None and not Path(gt_root).is_dir():
        what = "is a file, not a folder" if os.path.lexists(gt_root) else "does not exist"
        raise DataError(f"ground-truth folder {gt_root} {what}; pass the folder holding the annotated depth maps")
    report = PartReport(part=part, listed=len(split.parsed.entries) + split.parsed.skipped_no_gt)
    gt = Path(gt_root) if gt_root else None
    for rgb, depth, _ in progress(split.parsed.entries, enabled=show_progress, desc=f"check {dataset} {part}",
                                  unit="item"):
        rgb_path, depth_places = entry_paths(dataset, part, root, rgb, depth, gt_root=gt)
        depth_path = next((p for p in depth_places if os.path.isfile(p)), depth_places[0])
        sizes = []
        for path, is_depth in ((rgb_path, False), (depth_path, True)):
            size, kind, reason = _probe(path, depth=is_depth)
            if kind == "missing":
                report.missing.append(str(path))
            elif kind == "denied":
                report.denied.append(f"{path}: {reason}")
            elif kind == "unreadable":
                report.unreadable.append(f"{path}: {reason}")
            else:
                sizes.append((path, size))
        if dataset == "nyu":
            for path, size in sizes:
                if size != NYU_SIZE:
                    report.wrong_size.append(f"{path}: {size[0]}×{size[1]}, expected 640×480")
        elif len(sizes) == 2 and sizes[0][1] != sizes[1][1]:
            (_, (w0, h0)), (path, (w1, h1)) = sizes
            report.wrong_size.append(f"{path}: {w1}×{h1}, its image is {w0}×{h0}")
    return report


def format_report(dataset: str, report: PartReport, *, examples: int = 3) -> str:
    """A few lines for the terminal: counts and the first ``examples`` of each problem."""
    if report.complete:
        return f"{dataset} {report.part}: complete ({report.listed} list lines)"
    denied = f", {len(report.denied)} without read permission" if report.denied else ""
    lines = [f"{dataset} {report.part}: INCOMPLETE ({report.listed} list lines): {len(report.missing)} files "
             f"missing, {len(report.unreadable)} unreadable, {len(report.wrong_size)} of the wrong size{denied}"]
    for label, items in (("missing", report.missing), ("unreadable", report.unreadable),
                         ("wrong size", report.wrong_size), ("no permission", report.denied)):
        for item in items[:examples]:
            lines.append(f"  {label}: {item}")
        if len(items) > examples:
            lines.append(f"  ... and {len(items) - examples} more {label}")
    return "\n".join(lines)


def what_to_do(reports: list[PartReport], get_command: str) -> str:
    """The next step for the problems in ``reports``: fix permissions, delete damaged files, fetch
    (``get_command``, the ``data get`` command line that fetches what is missing)."""
    steps = []
    if any(r.denied for r in reports):
        steps.append("make the files without read permission readable (fix their permissions)")
    if any(r.unreadable or r.wrong_size for r in reports):
        steps.append("delete the unreadable and wrong-size files listed above")
    if any(r.missing or r.unreadable or r.wrong_size for r in reports):
        steps.append(f"fetch the missing files with: {get_command}")
    else:
        steps.append("run the check again")
    return ", then ".join(steps)
