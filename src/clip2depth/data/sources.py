"""Where NYU Depth v2 and KITTI come from: every URL, size and checksum the downloader uses.

This is the one place to edit when a host moves: each file is a :class:`Source` whose URL is
``host + path``. ``--mirror BASE_URL`` replaces the host and keeps ``path``, so a mirror is a copy of
the same files under the same relative paths.

Checksums: a ``sha256`` (or ``md5``) given here is verified after every download. Where none is
recorded, the downloader stores the SHA-256 of the first download that passed every check (it opens,
unpacks, and holds the files the split list names) in ``<root>/.downloads/checksums.json`` (later
re-downloads into that root must match it) and logs the line to paste here.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from clip2depth.data.base import packaged_list, read_list
from clip2depth.errors import ConfigError

GB = 1_000_000_000

NYU_HOST = "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/"
"""NYU's own host of the labeled subset (the URL BTS's README downloads from)."""

GDRIVE_HOST = "https://drive.google.com/uc?export=download&id="
"""Google Drive's direct-download endpoint; large files answer with a confirmation page first."""

NYU_SYNC_GDRIVE_ID = "1AysroWpfISmm-yRFGBgFTrLy6FjQwvwP"
"""The BTS ``sync.zip`` (24,231 training pairs, BTS README / AdaBins README)."""

KITTI_HOST = "https://s3.eu-central-1.amazonaws.com/avg-kitti/"
"""KITTI's own S3 bucket: ``raw_data/<drive>/<drive>_sync.zip`` and ``data_depth_annotated.zip``."""

KITTI_DRIVES: dict[str, tuple[str, ...]] = {
    "2011_09_26": (
        "0001", "0002", "0005", "0009", "0011", "0013", "0014", "0015", "0017", "0018", "0019", "0020",
        "0022", "0023", "0027", "0028", "0029", "0032", "0035", "0036", "0039", "0046", "0048", "0051",
        "0052", "0056", "0057", "0059", "0060", "0061", "0064", "0070", "0079", "0084", "0086", "0087",
        "0091", "0093", "0095", "0096", "0101", "0104", "0106", "0113", "0117",
    ),
    "2011_09_28": ("0001", "0002"),
    "2011_09_29": ("0004", "0026", "0071"),
    "2011_09_30": ("0016", "0018", "0020", "0027", "0028", "0033", "0034"),
    "2011_10_03": ("0027", "0034", "0042", "0047"),
}
"""The 61 raw drives (plus one calibration archive per date: 66 archives) of BTS's
``utils/kitti_archives_to_download.txt``; the Eigen train and test splits use 33 and 28 of them."""

KITTI_DRIVE_APPROX_BYTES = int(2.9 * GB)
"""Mean size of a ``*_sync.zip`` (the 61 drives are about 175 GB together); the plan uses it before the
host reports exact sizes."""


@dataclass(frozen=True)
class Source:
    """One file to download.

    Attributes:
        dataset: ``nyu`` or ``kitti``.
        name: the file name on disk (in ``<root>/.downloads/``).
        host: URL prefix; ``host + path`` is the download URL.
        path: the file's path below the host, kept when ``--mirror`` replaces the host.
        direct_url: the URL when it does not follow ``host + path`` (Google Drive); a mirror still
            serves the file at ``path``.
        parts: the parts (``train``, ``test``) that need this file.
        approx_bytes: size for the plan and the disk-space check when the host gives none.
        size: exact size in bytes, where recorded.
        sha256 / md5: checksum, where recorded (hex).
        unpack: ``zip`` (extract) or ``nyu-mat`` (convert the official test split).
        dest: sub-folder of the root the archive is extracted into (``""``: the root itself).
        alternatives: what to do when the host is down (shown with every download error).
    """

    dataset: str
    name: str
    host: str
    path: str
    parts: frozenset[str]
    approx_bytes: int
    direct_url: str | None = None
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    unpack: str = "zip"
    dest: str = ""
    alternatives: str = ""

    def url(self, mirror: str | None = None) -> str:
        """The download URL; with ``mirror`` (checked by :func:`check_mirror`), ``mirror/path``."""
        if mirror is not None:
            return check_mirror(mirror).rstrip("/") + "/" + self.path
        return self.direct_url or self.host + self.path


def check_mirror(mirror: str) -> str:
    """``mirror`` when it is an ``http://`` or ``https://`` base URL; :class:`ConfigError` naming it otherwise."""
    try:
        parsed = urllib.parse.urlsplit(mirror)
        parsed.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ConfigError(f"mirror {mirror!r} is not a valid URL ({exc}); give the base URL the files lie under, "
                          "e.g. https://example.org/datasets/nyu/") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not mirror.isprintable() or " " in mirror:
        raise ConfigError(f"mirror {mirror!r} is not an http:// or https:// URL; give the base URL the files lie "
                          "under, e.g. https://example.org/datasets/nyu/")
    return mirror


_MIRROR_HINT = "or pass --mirror BASE_URL pointing at a copy of the same files"


def _nyu_sources() -> list[Source]:
    manual = "download {name} by hand and put it in <root>/.downloads/ (the next run verifies and unpacks it)"
    return [
        Source(
            dataset="nyu", name="nyu_depth_v2_labeled.mat", host=NYU_HOST, path="nyu_depth_v2_labeled.mat",
            parts=frozenset({"test"}), approx_bytes=int(2.8 * GB), unpack="nyu-mat",
            alternatives="the NYU Depth v2 page (cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html) lists the "
                         f"file; {manual.format(name='nyu_depth_v2_labeled.mat')}, {_MIRROR_HINT}",
        ),
        Source(
            dataset="nyu", name="sync.zip", host=GDRIVE_HOST, path="sync.zip",
            direct_url=GDRIVE_HOST + NYU_SYNC_GDRIVE_ID, parts=frozenset({"train"}), approx_bytes=int(32 * GB),
            alternatives=f"fetch Google Drive file {NYU_SYNC_GDRIVE_ID} with a browser or `gdown "
                         f"{NYU_SYNC_GDRIVE_ID}`; {manual.format(name='sync.zip')}, {_MIRROR_HINT}",
        ),
    ]


def _kitti_sources(test_drives: set[str]) -> list[Source]:
    hint = ("KITTI's raw-data page (cvlibs.net/datasets/kitti/raw_data.php) links every archive; download it "
            f"by hand into <root>/.downloads/, {_MIRROR_HINT}")
    sources = [
        Source(
            dataset="kitti", name="data_depth_annotated.zip", host=KITTI_HOST, path="data_depth_annotated.zip",
            parts=frozenset({"train", "test"}), approx_bytes=int(14 * GB),
            # Recorded by torch-uncertainty's KITTIDepth dataset for the same URL.
            md5="7d1ce32633dc2f43d9d1656a1f875e47", dest="data_depth_annotated", alternatives=hint,
        ),
    ]
    for date, numbers in KITTI_DRIVES.items():
        drives = [f"{date}_drive_{n}" for n in numbers]
        date_parts = {"train"} | ({"test"} if any(d + "_sync" in test_drives for d in drives) else set())
        sources.append(Source(
            dataset="kitti", name=f"{date}_calib.zip", host=KITTI_HOST, path=f"raw_data/{date}_calib.zip",
            parts=frozenset(date_parts), approx_bytes=5_000, alternatives=hint,
        ))
        for drive in drives:
            parts = {"test"} if drive + "_sync" in test_drives else {"train"}
            sources.append(Source(
                dataset="kitti", name=f"{drive}_sync.zip", host=KITTI_HOST,
                path=f"raw_data/{drive}/{drive}_sync.zip", parts=frozenset(parts),
                approx_bytes=KITTI_DRIVE_APPROX_BYTES, alternatives=hint,
            ))
    return sources


def kitti_drives_in_list(lines: list[str]) -> set[str]:
    """The ``<date>_drive_<n>_sync`` folders the lines of a KITTI list read images from."""
    return {line.split()[0].split("/")[1] for line in lines if "/" in line.split()[0]}


DATASET_NAMES = ("nyu", "kitti")
PARTS = ("train", "test")


def sources_for(dataset: str, only: str | None = None, *, test_list: str | None = None) -> list[Source]:
    """The files ``dataset`` needs, all of them or only those of part ``only`` (``train``/``test``).

    For KITTI, the drives of the test part are those the test list reads (default: the packaged
    Eigen test list; ``test_list`` a list file to use instead).
    """
    if dataset not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    if only is not None and only not in PARTS:
        raise ConfigError(f"--only {only!r}: choose one of {', '.join(PARTS)}")
    if dataset == "nyu":
        sources = _nyu_sources()
    else:
        lines = read_list(test_list) if test_list else packaged_list("eigen_test_files_with_gt.txt")
        sources = _kitti_sources(kitti_drives_in_list(lines))
    return [s for s in sources if only is None or only in s.parts]
