"""From verified archives to the folder layouts the datasets read (``clip2depth data get``).

Every archive is unpacked into a temporary folder inside the root and only then moved into place,
a whole top folder at a time (``sync/``, ``2011_09_26/2011_09_26_drive_0002_sync/``, ...): a failure
or Ctrl-C leaves no half-written folder behind. A marker ``<root>/.downloads/<name>.done`` records
each unpacked archive, so a re-run skips finished parts.

Layouts produced (what ``train``/``eval`` read):

- NYU: ``<root>/sync/<scene>/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` (BTS ``sync`` set, train) and
  ``<root>/official_splits/test/<scene>/...`` (654 images converted from the labeled ``.mat``).
- KITTI: ``<root>/<date>/<drive>_sync/...`` (raw drives and ``<date>/calib_*.txt``) and
  ``<root>/data_depth_annotated/{train,val}/<drive>_sync/proj_depth/groundtruth/...``.
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clip2depth.data.download import check_disk_space, downloads_dir, fetch, human_bytes, plan_sizes
from clip2depth.data.nyu import NYUMatDataset
from clip2depth.data.sources import Source, sources_for
from clip2depth.errors import DataError
from clip2depth.io.progress import progress

logger = logging.getLogger(__name__)

NYU_TEST_DIR = Path("official_splits") / "test"
KITTI_GT_DIR = "data_depth_annotated"
JPEG_QUALITY = 95  # OpenCV's default, which BTS's conversion script writes with


class CorruptArchive(DataError):
    """An archive that cannot be read (truncated or damaged): it must be downloaded again."""


def _merge_into(src: Path, dest: Path) -> None:
    """Move every entry of ``src`` into ``dest``: a folder missing there moves in whole (one rename),
    a folder present is merged entry by entry, a file replaces its namesake."""
    dest.mkdir(parents=True, exist_ok=True)
    for child in sorted(src.iterdir()):
        target = dest / child.name
        if child.is_dir() and target.is_dir():
            _merge_into(child, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(child, target)


def _staging(root: Path, name: str) -> Path:
    tmp = root / f".unpack-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def extract_zip(archive: str | Path, dest: str | Path, *, show_progress: bool = True) -> int:
    """Extract ``archive`` into ``dest`` through a temporary folder; returns the number of files.

    Member paths leaving the archive's folder are refused. A corrupt or truncated archive raises
    :class:`DataError` and leaves ``dest`` as it was.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = _staging(dest, archive.stem)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for m in members:
                if Path(m.filename).is_absolute() or ".." in Path(m.filename).parts:
                    raise DataError(f"{archive}: member {m.filename!r} points outside the archive folder")
            for m in progress(members, enabled=show_progress, desc=f"unpack {archive.name}", unit="file"):
                zf.extract(m, tmp)
        _merge_into(tmp, dest)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CorruptArchive(f"{archive}: cannot extract ({exc}); the archive is truncated or corrupt") from None
    except OSError as exc:
        raise DataError(f"{archive}: extracting into {dest} failed ({exc}); check the free space and "
                        "permissions there") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(members)


def convert_nyu_mat(mat_path: str | Path, root: str | Path, *, splits_file: str | Path | None = None,
                    show_progress: bool = True) -> int:
    """Write the official NYU test split of ``nyu_depth_v2_labeled.mat`` as BTS's ``official_splits/test``.

    ``<root>/official_splits/test/<scene>/rgb_XXXXX.jpg`` (480×640, border outside rows 7:474 and
    cols 7:632 black) and ``sync_depth_XXXXX.png`` (uint16 millimetres of the raw Kinect depth,
    0 = missing), XXXXX the 0-based frame index in the file, as BTS's extraction script names them.
    The frames are read by :class:`~clip2depth.data.nyu.NYUMatDataset`. Returns the image count.
    """
    root = Path(root)
    dataset = NYUMatDataset(mat_path, split="test", splits_file=splits_file)
    tmp = _staging(root, "official_splits")
    try:
        out = tmp / NYU_TEST_DIR
        for i in progress(range(len(dataset)), enabled=show_progress, desc="convert NYU test", unit="img"):
            sample = dataset.load(i)
            scene, _, stem = sample["name"].partition("_rgb_")
            folder = out / scene
            folder.mkdir(parents=True, exist_ok=True)
            rgb = (sample["image"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            Image.fromarray(rgb).save(folder / f"rgb_{stem}.jpg", quality=JPEG_QUALITY)
            # Truncation to whole millimetres, as the reference conversion does.
            depth_mm = (sample["depth"][0].numpy() * np.float32(1000.0)).astype(np.uint16)
            Image.fromarray(depth_mm).save(folder / f"sync_depth_{stem}.png")
        final = root / NYU_TEST_DIR
        if final.exists():
            shutil.rmtree(final)
        _merge_into(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(dataset)


def unpack(source: Source, archive: Path, root: Path, *, splits_file: str | Path | None = None,
           show_progress: bool = True) -> None:
    """Turn the verified ``archive`` of ``source`` into its part of the layout under ``root``."""
    if source.unpack == "zip":
        try:
            extract_zip(archive, root / source.dest, show_progress=show_progress)
        except CorruptArchive as exc:
            # Verified yet unreadable (no checksum recorded for it): fetch it anew next time.
            archive.unlink(missing_ok=True)
            raise DataError(f"{exc}. It was deleted; run the command again to download it anew, or see: "
                            f"{source.alternatives}") from None
    elif source.unpack == "nyu-mat":
        convert_nyu_mat(archive, root, splits_file=splits_file, show_progress=show_progress)
    elif source.unpack != "none":
        raise DataError(f"{source.name}: unknown unpack step {source.unpack!r} in clip2depth.data.sources")


@dataclass
class GetResult:
    """What :func:`get_dataset` did: file names fetched and unpacked, and those already done."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    total_bytes: int = 0


def _marker(root: Path, source: Source) -> Path:
    return downloads_dir(root) / f"{source.name}.done"


def download_plan(dataset: str, root: str | Path, *, only: str | None = None, mirror: str | None = None,
                  test_list: str | None = None, online: bool = True) -> list[tuple[Source, int, bool]]:
    """``(source, bytes still to download, exact)`` for each file of ``dataset`` not unpacked yet."""
    root = Path(root)
    todo = [s for s in sources_for(dataset, only, test_list=test_list) if not _marker(root, s).exists()]
    return plan_sizes(todo, root, mirror=mirror, online=online)


def disk_needed(plan: list[tuple[Source, int, bool]], *, keep_archives: bool = False) -> int:
    """Bytes needed on disk for ``plan``: every download once unpacked (images compress little, so
    about the archive's size) plus room for the largest archive while it is unpacked, or for every
    archive when they are kept."""
    sizes = [size for _, size, _ in plan]
    return sum(sizes) + (sum(sizes) if keep_archives else max(sizes, default=0))


def get_dataset(
    dataset: str,
    root: str | Path,
    *,
    only: str | None = None,
    mirror: str | None = None,
    keep_archives: bool = False,
    test_list: str | None = None,
    splits_file: str | Path | None = None,
    timeout: float = 60.0,
    show_progress: bool = True,
    plan: list[tuple[Source, int, bool]] | None = None,
) -> GetResult:
    """Download, verify and unpack ``dataset`` (``nyu`` or ``kitti``) into ``root``; resumable.

    Checks the free disk space for the whole plan first. Archives are deleted once unpacked unless
    ``keep_archives``. ``test_list`` (KITTI) picks the test drives from a list other than the packaged
    Eigen list; ``splits_file`` (NYU) a ``splits.mat`` other than the packaged official one.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if plan is None:
        plan = download_plan(dataset, root, only=only, mirror=mirror, test_list=test_list)
    result = GetResult(total_bytes=sum(size for _, size, _ in plan))
    result.skipped = [s.name for s in sources_for(dataset, only, test_list=test_list) if _marker(root, s).exists()]
    check_disk_space(root, disk_needed(plan, keep_archives=keep_archives))
    logger.info("%s: %d files to fetch, %s", dataset, len(plan), human_bytes(result.total_bytes))
    for source, _, _ in plan:
        archive = fetch(source, root, mirror=mirror, timeout=timeout, show_progress=show_progress)
        unpack(source, archive, root, splits_file=splits_file, show_progress=show_progress)
        _marker(root, source).write_text("unpacked\n")
        if not keep_archives:
            archive.unlink()
        result.done.append(source.name)
    return result
