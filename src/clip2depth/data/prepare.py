"""From downloads to the folder layouts the datasets read (``clip2depth data get``).

Every download passes a row of gates before anything is recorded or moved into place: it is no web
page and its size and checksums check out (:mod:`clip2depth.data.download`); it unpacks (a zip) or
converts (the NYU ``.mat``) into a temporary folder inside the root; that folder holds every file the
split lists expect from it. Only then are the unpacked files moved into place (a whole top folder at a
time: ``sync/``, ``2011_09_26/2011_09_26_drive_0002_sync/``, ...), the file's SHA-256 recorded (where
``sources.py`` has none) and a marker ``<root>/.downloads/<name>.done`` written, so a re-run skips it.

A download that fails a gate is deleted with anything recorded for it, and the error says what was
wrong (:class:`~clip2depth.data.download.BadDownload`); running the command again fetches it anew. A
failure of the disk or Ctrl-C leaves the root as it was, the verified download kept for the next run.

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
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from clip2depth.data.check import KITTI_GT_DIR, NYU_TEST_DIR, SplitList, entry_paths, read_part_list
from clip2depth.data.download import (
    BadDownload,
    check_disk_space,
    check_timeout,
    done_marker,
    fetch,
    human_bytes,
    plan_sizes,
    record_done,
    reject,
    write_error,
)
from clip2depth.data.nyu import NYUMatDataset, load_nyu_splits
from clip2depth.data.sources import PARTS, Source, check_mirror, sources_for
from clip2depth.errors import DataError
from clip2depth.io.digest import file_digest
from clip2depth.io.outputs import writable_folder
from clip2depth.io.progress import progress

logger = logging.getLogger(__name__)

JPEG_QUALITY = 95  # OpenCV's default, which BTS's conversion script writes with
NYU_LABELED_FRAMES = 1449
"""Frames in ``nyu_depth_v2_labeled.mat``; the official split indices (1-based) lie in 1..1449."""
_MAT_ARRAYS = ("images", "rawDepths", "sceneTypes")


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
    """Extract every file of ``archive`` into ``dest`` (a staging folder); returns the number of files.

    Raises:
        BadDownload: the archive is truncated or corrupt (including a member whose CRC differs), or a
            member path leaves the archive's folder.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for m in members:
                if Path(m.filename).is_absolute() or ".." in Path(m.filename).parts:
                    raise BadDownload(f"{archive}: member {m.filename!r} points outside the archive folder")
            for m in progress(members, enabled=show_progress, desc=f"unpack {archive.name}", unit="file"):
                zf.extract(m, dest)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise BadDownload(f"{archive} cannot be unpacked ({exc}): the archive is truncated or corrupt") from None
    except NotImplementedError as exc:  # a compression Python's zipfile lacks: the archive may well be fine
        raise DataError(f"{archive} cannot be unpacked here ({exc}); unpack it by hand into the root") from None
    return len(members)


def nyu_test_indices(splits_file: str | Path | None = None) -> np.ndarray:
    """The 1-based frame indices of the official NYU test split (``splits_file`` or the packaged one).

    Raises:
        DataError: the splits file cannot be read, or names frames outside the labeled file's 1..1449.
    """
    indices = load_nyu_splits(splits_file)["test"]
    if indices.size == 0 or indices.min() < 1 or indices.max() > NYU_LABELED_FRAMES:
        source = splits_file if splits_file is not None else "the packaged splits file"
        raise DataError(f"{source}: the test split must name frames 1..{NYU_LABELED_FRAMES} of the labeled NYU "
                        f"file; it holds {indices.size} indices from {indices.min(initial=0)} to "
                        f"{indices.max(initial=0)}")
    return indices


def _open_labeled_mat(mat_path: Path, indices: np.ndarray, splits_file: str | Path | None) -> NYUMatDataset:
    """The test split of ``mat_path``; :class:`BadDownload` when the file is not the labeled NYU file."""
    try:
        with h5py.File(mat_path, "r") as f:
            missing = [key for key in _MAT_ARRAYS if key not in f]
            frames = f["images"].shape[0] if "images" in f else 0
    except OSError as exc:
        raise BadDownload(f"{mat_path} does not open as HDF5 / MATLAB v7.3 ({exc}): the download is truncated "
                          "or not nyu_depth_v2_labeled.mat") from None
    if missing:
        raise BadDownload(f"{mat_path} holds no {', '.join(missing)} array: it is not nyu_depth_v2_labeled.mat")
    if frames < indices.max():
        raise BadDownload(f"{mat_path} holds {frames} frames, the test split needs frame {indices.max()}: it is not "
                          "the whole nyu_depth_v2_labeled.mat")
    try:
        return NYUMatDataset(mat_path, split="test", splits_file=splits_file)
    except (DataError, KeyError, ValueError, TypeError, IndexError) as exc:  # what h5py raises on odd contents
        raise BadDownload(f"{mat_path}: not the layout of nyu_depth_v2_labeled.mat ({exc})") from None


def convert_nyu_mat(mat_path: str | Path, dest: str | Path, *, splits_file: str | Path | None = None,
                    show_progress: bool = True) -> int:
    """Write the official NYU test split of ``nyu_depth_v2_labeled.mat`` as BTS's ``official_splits/test``.

    ``<dest>/official_splits/test/<scene>/rgb_XXXXX.jpg`` (480×640, border outside rows 7:474 and
    cols 7:632 black) and ``sync_depth_XXXXX.png`` (uint16 millimetres of the raw Kinect depth,
    0 = missing), XXXXX the 0-based frame index in the file, as BTS's extraction script names them.
    The frames are read by :class:`~clip2depth.data.nyu.NYUMatDataset`. Returns the image count.

    Raises:
        DataError: the splits file is unusable (:func:`nyu_test_indices`).
        BadDownload: ``mat_path`` does not open as the labeled file or a frame cannot be read.
    """
    mat_path, out = Path(mat_path), Path(dest) / NYU_TEST_DIR
    dataset = _open_labeled_mat(mat_path, nyu_test_indices(splits_file), splits_file)
    for i in progress(range(len(dataset)), enabled=show_progress, desc="convert NYU test", unit="img"):
        try:
            sample = dataset.load(i)
        except DataError as exc:
            raise BadDownload(f"{exc}: the download is damaged") from None
        scene, _, stem = sample["name"].partition("_rgb_")
        folder = out / scene
        folder.mkdir(parents=True, exist_ok=True)
        rgb = (sample["image"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"rgb_{stem}.jpg", quality=JPEG_QUALITY)
        # Truncation to whole millimetres, as the reference conversion does.
        depth_mm = (sample["depth"][0].numpy() * np.float32(1000.0)).astype(np.uint16)
        Image.fromarray(depth_mm).save(folder / f"sync_depth_{stem}.png")
    return len(dataset)


def expected_files(source: Source, root: Path, lists: dict[str, SplitList]) -> list[list[Path]]:
    """The files ``source`` provides under ``root`` as the split ``lists`` name them, each as the places
    it may lie (any one will do): NYU ``sync.zip`` the train images and depth maps, the ``.mat`` the test
    ones; a KITTI drive archive the listed images of that drive, the annotated depth every listed depth
    map, a calibration archive its ``calib_cam_to_cam.txt``."""
    items: list[list[Path]] = []
    drive_folder = source.name.removesuffix(".zip")
    for part, split in lists.items():
        if source.dataset == "nyu" and part not in source.parts:
            continue
        for rgb, depth, _ in split.parsed.entries:
            rgb_path, depth_places = entry_paths(source.dataset, part, root, rgb, depth)
            if source.dataset == "nyu":
                items += [[rgb_path], depth_places]
            elif source.dest == KITTI_GT_DIR:
                items.append(depth_places)
            elif Path(rgb).parts[1:2] == (drive_folder,):
                items.append([rgb_path])
    if source.dataset == "kitti" and source.name.endswith("_calib.zip"):
        items.append([root / source.name.removesuffix("_calib.zip") / "calib_cam_to_cam.txt"])
    return items


def missing_files(source: Source, root: Path, lists: dict[str, SplitList]) -> tuple[list[Path], int]:
    """``(files source provides that are not under root, how many it provides)`` (see :func:`expected_files`)."""
    expected = expected_files(source, root, lists)
    return [places[0] for places in expected if not any(os.path.isfile(p) for p in places)], len(expected)


def _check_contents(source: Source, archive: Path, staging: Path, lists: dict[str, SplitList]) -> None:
    """The list gate: the unpacked ``staging`` folder holds every file the lists expect of ``source``.

    An archive holding none of them, or missing some the packaged lists name, is the wrong file
    (:class:`BadDownload`). When a list of the user's names files the archive lacks while it holds
    others, the list may be the one at fault: :class:`DataError`, and the archive is kept.
    """
    missing, expected = missing_files(source, staging, lists)
    if not missing:
        return
    what = (f"{archive} unpacks without {len(missing)} of the {expected} files the split lists name (e.g. "
            f"{missing[0].relative_to(staging)})")
    given = [split.file for part, split in lists.items() if split.file and part in source.parts]
    if len(missing) == expected or not given:
        raise BadDownload(f"{what}: it is not the {source.name} the lists were made from")
    raise DataError(f"{what}; nothing was moved into place and the archive is kept. If {', '.join(given)} "
                    f"is right, delete {archive} and run the same command again to download it anew; otherwise "
                    "correct the list")


def install(source: Source, archive: Path, root: Path, lists: dict[str, SplitList], *,
            splits_file: str | Path | None = None, show_progress: bool = True) -> None:
    """Unpack (or convert) ``archive`` into a staging folder inside ``root``, check it against ``lists``,
    then move it into place. Nothing under ``root`` changes unless every step succeeds."""
    staging = _staging(root, source.name)
    try:
        if source.unpack == "zip":
            extract_zip(archive, staging / source.dest, show_progress=show_progress)
        elif source.unpack == "nyu-mat":
            convert_nyu_mat(archive, staging, splits_file=splits_file, show_progress=show_progress)
        else:
            raise DataError(f"{source.name}: unknown unpack step {source.unpack!r} in clip2depth.data.sources")
        _check_contents(source, archive, staging, lists)
        _merge_into(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class GetResult:
    """What :func:`get_dataset` did: file names fetched and unpacked, and those already done."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    total_bytes: int = 0


def split_lists(dataset: str, only: str | None = None, *, train_list: str | Path | None = None,
                test_list: str | Path | None = None) -> dict[str, SplitList]:
    """The split list of each part to fetch (``only``, or both): the given file or the packaged one."""
    given = {"train": train_list, "test": test_list}
    return {part: read_part_list(dataset, part, given[part]) for part in PARTS if only in (None, part)}


def download_plan(dataset: str, root: str | Path, *, only: str | None = None, mirror: str | None = None,
                  train_list: str | Path | None = None, test_list: str | Path | None = None, online: bool = True,
                  timeout: float = 30.0) -> list[tuple[Source, int, bool]]:
    """``(source, bytes still to download, exact)`` for each file of ``dataset`` still to fetch.

    A file marked done is fetched again when files it provides (as the split lists name them) are gone
    from ``root``. Checks ``root``, ``mirror``, ``timeout`` and the lists before any request.
    """
    check_timeout(timeout)
    if mirror is not None:
        check_mirror(mirror)
    root = writable_folder(root, "dataset root", create=False)
    lists = split_lists(dataset, only, train_list=train_list, test_list=test_list)
    todo = []
    for source in sources_for(dataset, only, test_list=str(test_list) if test_list else None):
        if done_marker(root, source.name).exists():
            missing, _ = missing_files(source, root, lists)
            if not missing:
                continue
            logger.warning("%s was unpacked before, but %d of its files are gone from %s (e.g. %s): fetching it "
                           "again", source.name, len(missing), root, missing[0])
        todo.append(source)
    return plan_sizes(todo, root, mirror=mirror, online=online, timeout=timeout)


def disk_needed(plan: list[tuple[Source, int, bool]], *, keep_archives: bool = False) -> int:
    """Bytes needed on disk for ``plan``: every download once unpacked (images compress little, so
    about the archive's size) plus room for the largest archive while it is unpacked, or for every
    archive when they are kept."""
    sizes = [size for _, size, _ in plan]
    return sum(sizes) + (sum(sizes) if keep_archives else max(sizes, default=0))


def _finish(source: Source, archive: Path, root: Path, *, keep_archive: bool) -> None:
    """Record what passed every gate (its SHA-256 where sources.py has none, and its done marker)."""
    digest = None
    if not source.sha256:
        digest = file_digest(archive, "sha256")
        logger.info("%s: sha256 %s (%d bytes) recorded", source.name, digest, archive.stat().st_size)
    record_done(root, source.name, digest)
    if not keep_archive:
        archive.unlink()


def get_dataset(
    dataset: str,
    root: str | Path,
    *,
    only: str | None = None,
    mirror: str | None = None,
    keep_archives: bool = False,
    train_list: str | Path | None = None,
    test_list: str | Path | None = None,
    splits_file: str | Path | None = None,
    timeout: float = 60.0,
    show_progress: bool = True,
    plan: list[tuple[Source, int, bool]] | None = None,
) -> GetResult:
    """Download, verify and unpack ``dataset`` (``nyu`` or ``kitti``) into ``root``; resumable.

    Checks the timeout, root, lists and splits file, then the free disk space for the whole plan, before
    the first request. Archives are deleted once unpacked unless ``keep_archives``. ``train_list`` /
    ``test_list`` are the split lists the archives must match (default: the packaged ones; for KITTI the
    test list also picks the test drives); ``splits_file`` (NYU) a ``splits.mat`` other than the packaged
    official one. A download that fails a gate is deleted and :class:`DataError` says what was wrong.
    """
    check_timeout(timeout)
    if mirror is not None:
        check_mirror(mirror)
    root = writable_folder(root, "dataset root")
    lists = split_lists(dataset, only, train_list=train_list, test_list=test_list)
    if dataset == "nyu" and "test" in lists:
        nyu_test_indices(splits_file)
    if plan is None:
        plan = download_plan(dataset, root, only=only, mirror=mirror, train_list=train_list, test_list=test_list)
    planned = {source.name for source, _, _ in plan}
    result = GetResult(total_bytes=sum(size for _, size, _ in plan))
    result.skipped = [s.name for s in sources_for(dataset, only, test_list=str(test_list) if test_list else None)
                      if s.name not in planned]
    check_disk_space(root, disk_needed(plan, keep_archives=keep_archives))
    logger.info("%s: %d files to fetch, %s", dataset, len(plan), human_bytes(result.total_bytes))
    for source, _, _ in plan:
        try:
            archive = fetch(source, root, mirror=mirror, timeout=timeout, show_progress=show_progress)
        except OSError as exc:
            raise write_error(exc, root, f"downloading {source.name}",
                              "what was received is kept and the download continues where it stopped") from None
        try:
            install(source, archive, root, lists, splits_file=splits_file, show_progress=show_progress)
        except BadDownload as exc:
            raise reject(source, archive, root, str(exc)) from None
        except OSError as exc:
            raise write_error(exc, root, f"unpacking {archive}",
                              "nothing was moved into place, and the downloaded file is kept and unpacked "
                              "again by the next run") from None
        try:
            _finish(source, archive, root, keep_archive=keep_archives)
        except OSError as exc:
            raise write_error(exc, root, f"recording {source.name} as done",
                              "its files are in place, and the downloaded file is kept and unpacked again by the "
                              "next run") from None
        result.done.append(source.name)
    return result
