"""Layout check (``clip2depth data check``): is every file the split lists name there, readable, the right size?

For data obtained elsewhere as well as for what ``data get`` produced. Each list line names an RGB
image and (unless ``None``) a depth map; a file is *missing* when absent, *unreadable* when it is not
an image the readers accept (corrupt, truncated, a depth map that is not single-channel), and of
*wrong size* when NYU frames are not 640×480 or a depth map's size differs from its image's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from clip2depth.data.base import packaged_list, parse_list, read_list
from clip2depth.data.prepare import KITTI_GT_DIR, NYU_TEST_DIR
from clip2depth.data.sources import DATASET_NAMES, PARTS
from clip2depth.errors import ConfigError
from clip2depth.io.progress import progress

logger = logging.getLogger(__name__)

NYU_SIZE = (640, 480)
"""(width, height) of every NYU Depth v2 frame."""

LIST_FILES = {
    "nyu": {"train": "nyudepthv2_train_files_with_gt.txt.gz", "test": "nyudepthv2_test_files_with_gt.txt"},
    "kitti": {"train": "eigen_train_files_with_gt.txt.gz", "test": "eigen_test_files_with_gt.txt"},
}
"""The packaged split lists each part is checked against."""

_NYU_DIRS = {"train": Path("sync"), "test": NYU_TEST_DIR}
_KITTI_GT_SUBDIRS = ("", "train", "val")


@dataclass
class PartReport:
    """The check of one part (``train`` or ``test``); each problem list holds ``path: reason`` strings."""

    part: str
    listed: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.listed > 0 and not (self.missing or self.unreadable or self.wrong_size)


def _probe(path: Path, *, depth: bool) -> tuple[tuple[int, int] | None, str | None, bool]:
    """``(size, problem, missing)`` of one image file: its (width, height) or what is wrong with it."""
    if not path.is_file():
        return None, "missing", True
    try:
        with Image.open(path) as img:
            size, bands = img.size, len(img.getbands())
            img.verify()
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"unreadable ({exc})", False
    if depth and bands != 1:
        return None, f"unreadable (a depth map must be single-channel, this has {bands} channels)", False
    return size, None, False


def _kitti_gt(gt_root: Path, rel: str) -> Path:
    for sub in _KITTI_GT_SUBDIRS:
        candidate = gt_root / sub / rel
        if candidate.is_file():
            return candidate
    return gt_root / "train" / rel


def check_part(dataset: str, root: str | Path, part: str, *, list_file: str | Path | None = None,
               gt_root: str | Path | None = None, show_progress: bool = True) -> PartReport:
    """Check ``part`` of ``dataset`` under ``root`` against its split list (``list_file`` or the packaged one).

    KITTI ground truth is looked up under ``gt_root`` (default ``<root>/data_depth_annotated``), in it or
    its ``train/`` / ``val/`` folder, as the annotated-depth archive unpacks.
    """
    if dataset not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    if part not in PARTS:
        raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    root = Path(root)
    source = list_file or LIST_FILES[dataset][part]
    parsed = parse_list(read_list(list_file) if list_file else packaged_list(source), str(source))
    report = PartReport(part=part, listed=len(parsed.entries) + parsed.skipped_no_gt)
    gt = Path(gt_root) if gt_root else root / KITTI_GT_DIR
    for fields in progress(parsed.entries, enabled=show_progress, desc=f"check {dataset} {part}", unit="item"):
        if dataset == "nyu":
            base = root / _NYU_DIRS[part]
            rgb_path = base / fields[0].lstrip("/")
            depth_path = base / fields[1].lstrip("/")
        else:
            rgb_path = root / fields[0]
            depth_path = _kitti_gt(gt, fields[1])
        sizes = []
        for path, is_depth in ((rgb_path, False), (depth_path, True)):
            if path is None:
                continue
            size, problem, missing = _probe(path, depth=is_depth)
            if missing:
                report.missing.append(str(path))
            elif problem:
                report.unreadable.append(f"{path}: {problem}")
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
    lines = [f"{dataset} {report.part}: INCOMPLETE ({report.listed} list lines): {len(report.missing)} files "
             f"missing, {len(report.unreadable)} unreadable, {len(report.wrong_size)} of the wrong size"]
    for label, items in (("missing", report.missing), ("unreadable", report.unreadable),
                         ("wrong size", report.wrong_size)):
        for item in items[:examples]:
            lines.append(f"  {label}: {item}")
        if len(items) > examples:
            lines.append(f"  ... and {len(items) - examples} more {label}")
    return "\n".join(lines)
