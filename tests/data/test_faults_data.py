"""Faults in ``data get`` and ``data check``, through the real CLI against a local HTTP host: each is one
``error:`` line (exit 1, no traceback) that says what was wrong and what to run next, nothing bad is
recorded or moved into place, what was there before is kept, and a re-run against a good mirror completes."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy import io as scipy_io

from clip2depth.data import download, prepare
from clirun import assert_user_error, run_cli
from fakedata import HTML_PAGE, KITTI_DRIVE, kitti_files, nyu_labeled_mat, zip_bytes
from httpserver import FileServer

MAT, SYNC = "nyu_depth_v2_labeled.mat", "sync.zip"
S3_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied'
            b'</Message></Error>')


def _get(root, url, lists, *extra):
    return run_cli("-q", "data", "get", "nyu", "--root", root, "--mirror", url, *lists, *extra)


def _tree(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _dataset_files(root):
    """Every file under ``root`` except the downloads bookkeeping."""
    return {k: v for k, v in _tree(root).items() if not k.startswith(".downloads")}


def _assert_nothing_recorded(root, name):
    folder = root / ".downloads"
    assert name not in download.recorded_checksums(root)
    assert not (folder / name).exists() and not (folder / f"{name}.part").exists()
    assert not download.done_marker(root, name).exists()
    assert not list(root.glob(".unpack-*"))


def _legacy_record(root, name, sha256):
    """The checksum clip2depth 0.1.0 recorded right after a download, before checking anything."""
    (root / ".downloads").mkdir(parents=True, exist_ok=True)
    (root / ".downloads" / "checksums.json").write_text(json.dumps({name: sha256}))


def _assert_completes(root, server, lists, only):
    """A re-run against the good host finishes, checks complete, and records the genuine file's SHA-256."""
    name = SYNC if only == "train" else MAT
    result = _get(root, server.url, lists, "--only", only)
    assert result.code == 0, result.err
    assert f"nyu {only}: complete" in result.out
    assert download.recorded_checksums(root)[name] == hashlib.sha256(server.files[name]).hexdigest()
    assert download.done_marker(root, name).exists()


@pytest.fixture
def installed_test_part(nyu_host, tmp_path):
    """A root whose test part is already fetched (what a fault in the train part must leave alone)."""
    server, lists = nyu_host
    root = tmp_path / "nyu"
    assert _get(root, server.url, lists, "--only", "test").code == 0
    return root, _dataset_files(root)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _crc_flipped(data: bytes) -> bytes:
    """A zip whose first member's deflated bytes have one bit changed (its CRC no longer matches)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        first = zf.infolist()[0]
    offset = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra) + first.compress_size // 2
    out = bytearray(data)
    out[offset] ^= 0x10
    return bytes(out)


def _other_zip(_: bytes) -> bytes:
    return zip_bytes({"sync/readme.txt": b"not the NYU training set\n", "other/0001.png": b"x"})


def _empty_zip(_: bytes) -> bytes:
    return zip_bytes({})


SYNC_FAULTS = {
    "truncated": (_truncated, None, "truncated or corrupt"),
    "member-crc-differs": (_crc_flipped, None, "truncated or corrupt"),
    "html-as-octet-stream": (lambda _: HTML_PAGE, None, "or an error document (XML), not sync.zip"),
    "html-content-type": (lambda _: HTML_PAGE, "text/html", "web page (Content-Type text/html)"),
    "s3-xml-error": (lambda _: S3_ERROR, "application/xml", "is a web page (HTML) or an error document (XML)"),
    "wrong-contents": (_other_zip, None, "unpacks without 16 of the 16 files"),
    "empty-zip": (_empty_zip, None, "unpacks without 16 of the 16 files"),
}


@pytest.mark.parametrize("fault", list(SYNC_FAULTS))
def test_bad_sync_zip_is_removed_and_a_rerun_with_a_good_mirror_completes(nyu_host, installed_test_part, fault):
    server, lists = nyu_host
    root, before = installed_test_part
    make, content_type, fragment = SYNC_FAULTS[fault]
    with FileServer({**server.files, SYNC: make(server.files[SYNC])}) as bad:
        if content_type:
            bad.content_types[SYNC] = content_type
        result = _get(root, bad.url, lists, "--only", "train")
    line = assert_user_error(result, "sync.zip", fragment)
    assert "run the same command again" in line or "alternatives" in line
    _assert_nothing_recorded(root, SYNC)
    assert not (root / "sync").exists()
    assert _dataset_files(root) == before  # the test part stays as it was
    _assert_completes(root, server, lists, "train")


def _mat_wrong_hdf5(tmp_path) -> bytes:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("accelData", data=np.zeros((4, 4)))
    return path.read_bytes()


def _mat_too_short(tmp_path) -> bytes:
    (tmp_path / "short").mkdir()
    return nyu_labeled_mat(tmp_path / "short", frames=2)[0]


MAT_FAULTS = {
    "truncated": (lambda data, _: _truncated(data), None, "does not open as HDF5"),
    "html-as-octet-stream": (lambda *_: HTML_PAGE, None, "is a web page (HTML)"),
    "html-content-type": (lambda *_: HTML_PAGE, "text/html", "web page (Content-Type text/html)"),
    "a-zip-instead": (lambda *_: zip_bytes({"a.txt": b"x"}), None, "does not open as HDF5"),
    "other-hdf5": (lambda _, tmp: _mat_wrong_hdf5(tmp), None, "holds no images, rawDepths, sceneTypes array"),
    "too-few-frames": (lambda _, tmp: _mat_too_short(tmp), None, "holds 2 frames, the test split needs frame 4"),
}


@pytest.mark.parametrize("fault", list(MAT_FAULTS))
def test_bad_labeled_mat_is_removed_and_a_rerun_with_a_good_mirror_completes(nyu_host, tmp_path, fault):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    make, content_type, fragment = MAT_FAULTS[fault]
    with FileServer({MAT: make(server.files[MAT], tmp_path)}) as bad:
        if content_type:
            bad.content_types[MAT] = content_type
        result = _get(root, bad.url, lists, "--only", "test")
    assert_user_error(result, MAT, fragment)
    _assert_nothing_recorded(root, MAT)
    assert not (root / "official_splits").exists()
    _assert_completes(root, server, lists, "test")


def test_archive_lacking_files_a_users_list_names_is_kept_until_the_user_decides(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    with zipfile.ZipFile(io.BytesIO(server.files[SYNC])) as zf:
        partial = zip_bytes({n: zf.read(n) for n in zf.namelist() if "rgb_00003" not in n})
    with FileServer({SYNC: partial}) as bad:
        result = _get(root, bad.url, lists, "--only", "train")
    train_list = str(lists[3])
    assert_user_error(result, "unpacks without 2 of the 16 files", "rgb_00003.jpg", f"If {train_list} is right",
                      "delete")
    archive = root / ".downloads" / SYNC
    assert archive.read_bytes() == partial  # the list may be the one at fault: the archive is kept
    assert not (root / "sync").exists() and SYNC not in download.recorded_checksums(root)
    archive.unlink()  # as the message says, when the list is right
    _assert_completes(root, server, lists, "train")


# --------------------------------------------------------------------------------------------------
# Partial files and hosts.


def _part(root, name):
    folder = root / ".downloads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.part"


def test_part_longer_than_the_hosts_file_starts_again(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    _part(root, SYNC).write_bytes(server.files[SYNC] + b"\0" * 5000)  # junk past the end: the host answers 416
    _assert_completes(root, server, lists, "train")
    gets = [r for p, r in server.requests if p == SYNC]
    assert gets[-2:] == [f"bytes={len(server.files[SYNC]) + 5000}-", None]


def test_part_of_exactly_the_hosts_size_is_complete(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    _part(root, SYNC).write_bytes(server.files[SYNC])
    _assert_completes(root, server, lists, "train")
    assert [r for p, r in server.requests if p == SYNC][-1] == f"bytes={len(server.files[SYNC])}-"


def test_part_of_the_hosts_size_but_other_bytes_is_removed_then_fetched_anew(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    _part(root, SYNC).write_bytes(bytes(len(server.files[SYNC])))  # host says 416 "complete": the gates decide
    assert_user_error(_get(root, server.url, lists, "--only", "train"), "sync.zip", "truncated or corrupt",
                      "was deleted")
    _assert_nothing_recorded(root, SYNC)
    _assert_completes(root, server, lists, "train")


def test_host_answering_a_range_request_with_the_whole_file_starts_again(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    _part(root, SYNC).write_bytes(b"\xff" * 3000)
    server.no_range = True
    _assert_completes(root, server, lists, "train")


def test_part_holding_a_web_page_starts_again(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    _part(root, MAT).write_bytes(HTML_PAGE)  # left by an earlier version that kept such pages
    _assert_completes(root, server, lists, "test")
    assert [r for p, r in server.requests if p == MAT][-1] is None  # no Range: appending would keep the page


def test_connection_dropped_mid_file_resumes(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    server.drop_after[SYNC] = 100_000
    _assert_completes(root, server, lists, "train")
    assert [r for p, r in server.requests if p == SYNC][-2:] == [None, "bytes=100000-"]


def test_connection_dropped_on_every_attempt_keeps_the_part_for_the_next_run(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    with FileServer(dict(server.files)) as flaky:
        flaky.drop_always[SYNC] = 50_000
        result = _get(root, flaky.url, lists, "--only", "train")
    assert_user_error(result, "cannot download sync.zip", "connection", "run the same command again to continue")
    part = _part(root, SYNC)
    assert part.read_bytes() == server.files[SYNC][: part.stat().st_size] and part.stat().st_size >= 50_000
    size = part.stat().st_size
    _assert_completes(root, server, lists, "train")
    assert [r for p, r in server.requests if p == SYNC][-1] == f"bytes={size}-"


# --------------------------------------------------------------------------------------------------
# Values and folders.


def test_host_that_refuses_every_attempt_says_nothing_was_received(tmp_path):
    with FileServer({}) as server:
        url = server.url
    result = run_cli("-q", "data", "get", "nyu", "--root", tmp_path / "nyu", "--only", "test", "--mirror", url,
                     "--timeout", "2")
    line = assert_user_error(result, "cannot download nyu_depth_v2_labeled.mat", "(5 attempts)",
                             "nothing was received: run the same command again later", "alternatives")
    assert "kept" not in line


def test_check_with_a_ground_truth_folder_that_is_not_one(tmp_path):
    (tmp_path / "gt").write_text("")
    for gt in (tmp_path / "gt", tmp_path / "missing"):
        line = assert_user_error(run_cli("data", "check", "kitti", "--root", tmp_path, "--only", "test",
                                         "--gt-root", gt), f"ground-truth folder {gt}")
        assert "data get" not in line


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--timeout", "0"], "argument --timeout: '0' is not a finite number above 0"),
    (["--timeout", "-1"], "argument --timeout: '-1' is not a finite number above 0"),
    (["--timeout", "nan"], "argument --timeout: 'nan' is not a finite number above 0"),
    (["--timeout", "inf"], "argument --timeout: 'inf' is not a finite number above 0"),
    (["--mirror", "not-a-url"], "mirror 'not-a-url' is not an http:// or https:// URL"),
    (["--mirror", "ftp://example.org/nyu/"], "mirror 'ftp://example.org/nyu/'"),
    (["--mirror", ""], "mirror ''"),
    (["--mirror", "http://example.org:port/"], "mirror 'http://example.org:port/' is not a valid URL"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_bad_values_are_refused_before_any_request(tmp_path, flags, fragment, dry_run):
    with FileServer({}) as server:
        args = ["--mirror", server.url, *flags] if flags[0] == "--timeout" else flags
        result = run_cli("-q", "data", "get", "nyu", "--root", tmp_path / "nyu", "--only", "test", *args,
                         *(["--dry-run"] if dry_run else []))
        assert_user_error(result, fragment)
        assert server.requests == []
    assert not (tmp_path / "nyu").exists()


def test_root_that_is_a_file(tmp_path):
    (tmp_path / "nyu").write_text("notes\n")
    for extra in ([], ["--dry-run"]):
        result = run_cli("-q", "data", "get", "nyu", "--root", tmp_path / "nyu", "--only", "test", *extra)
        assert_user_error(result, f"dataset root {tmp_path / 'nyu'} is an existing file, not a folder")
    assert (tmp_path / "nyu").read_text() == "notes\n"
    check = run_cli("data", "check", "nyu", "--root", tmp_path / "nyu")
    assert_user_error(check, f"dataset folder {tmp_path / 'nyu'} is a file")


def test_root_below_a_file(tmp_path):
    (tmp_path / "disk").write_text("")
    result = run_cli("-q", "data", "get", "nyu", "--root", tmp_path / "disk" / "nyu", "--only", "test")
    assert_user_error(result, f"{tmp_path / 'disk'} is a file, not a folder")


def test_output_folder_below_a_file(tmp_path):
    (tmp_path / "runs").write_text("")
    result = run_cli("-q", "eval", "--model", "tiny", "--dataset", "synthetic", "--synthetic", "1",
                     "--out", tmp_path / "runs" / "eval", "--device", "cpu")
    assert_user_error(result, "output folder", f"{tmp_path / 'runs'} is a file, not a folder")


def test_unwritable_root(tmp_path, monkeypatch):
    root = tmp_path / "shared"
    root.mkdir()
    real_access = os.access
    # Tests run as root, for whom permission bits do not apply: the check itself is what is faked.
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(root) else real_access(p, mode))
    result = run_cli("-q", "data", "get", "nyu", "--root", root / "nyu", "--only", "test")
    line = assert_user_error(result, f"no permission to write in {root}", "choose a folder you can write to")
    assert "File exists" not in line
    assert list(root.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Full disks.


class _FullDisk:
    """A binary file that takes ``room`` more bytes, then fails as a full disk does (errno ENOSPC, no file
    name: write(2) does not say which file)."""

    def __init__(self, f, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data: bytes) -> int:
        n = min(len(data), self._room)
        self._f.write(data[:n])
        self._room -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def tell(self) -> int:
        return self._f.tell()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def test_full_disk_while_downloading_names_the_file_and_root_and_keeps_the_part(nyu_host, tmp_path, monkeypatch):
    server, lists = nyu_host
    root = tmp_path / "nyu"

    def full_disk_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FullDisk(f, 70_000) if str(path).endswith(".part") and "r" not in mode else f

    monkeypatch.setattr(download, "open", full_disk_open, raising=False)
    result = _get(root, server.url, lists, "--only", "train")
    part = _part(root, SYNC)
    assert_user_error(result, f"writing {part} failed: the disk is full", f"the disk holding {root}",
                      "continues where it stopped")
    assert part.read_bytes() == server.files[SYNC][:70_000]  # what was received is kept, and it is right
    monkeypatch.undo()
    _assert_completes(root, server, lists, "train")
    assert [r for p, r in server.requests if p == SYNC][-1] == "bytes=70000-"


def test_full_disk_while_unpacking_keeps_the_download_and_moves_nothing(nyu_host, installed_test_part, monkeypatch):
    server, lists = nyu_host
    root, before = installed_test_part
    real_extract, calls = zipfile.ZipFile.extract, []

    def extract(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", extract)
    result = _get(root, server.url, lists, "--only", "train")
    assert_user_error(result, f"unpacking {root / '.downloads' / SYNC} failed: the disk is full",
                      f"the disk holding {root}", "unpacked again by the next run")
    assert (root / ".downloads" / SYNC).read_bytes() == server.files[SYNC]
    assert _dataset_files(root) == before and not list(root.glob(".unpack-*"))
    monkeypatch.undo()
    gets = len(server.requests)
    _assert_completes(root, server, lists, "train")
    assert [p for p, r in server.requests[gets:] if p == SYNC] == []  # not downloaded again


def test_full_disk_while_converting_the_mat(nyu_host, tmp_path, monkeypatch):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if str(fp).endswith(".png"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fp))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    result = _get(root, server.url, lists, "--only", "test")
    assert_user_error(result, f"unpacking {root / '.downloads' / MAT} failed: the disk is full", "sync_depth_")
    assert not (root / "official_splits").exists() and (root / ".downloads" / MAT).is_file()
    monkeypatch.undo()
    _assert_completes(root, server, lists, "test")


def test_full_disk_while_recording(nyu_host, tmp_path, monkeypatch):
    server, lists = nyu_host
    root = tmp_path / "nyu"

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(download, "atomic_write_json", no_room)
    result = _get(root, server.url, lists, "--only", "test")
    assert_user_error(result, f"recording {MAT} as done failed: the disk is full", "unpacked again by the next run")
    assert not download.done_marker(root, MAT).exists()
    monkeypatch.undo()
    _assert_completes(root, server, lists, "test")


@contextlib.contextmanager
def _tmpfs(path, size: int):
    """A tmpfs of ``size`` bytes mounted at ``path`` (root and mount(8) needed; the test is skipped otherwise)."""
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield lambda new_size: subprocess.run(["mount", "-o", f"remount,size={new_size}", str(path)], check=True)
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_really_full_disk_then_freed(nyu_host, tmp_path):
    server, lists = nyu_host  # its ample_disk: the space check passes (another program filled the disk after it)
    with _tmpfs(tmp_path / "disk", 64 * 1024) as resize:
        root = tmp_path / "disk" / "nyu"
        result = _get(root, server.url, lists, "--only", "train")
        line = assert_user_error(result, "the disk is full", f"the disk holding {root}", "sync.zip.part")
        assert "Traceback" not in line
        part = _part(root, SYNC)
        assert part.read_bytes() == server.files[SYNC][: part.stat().st_size]
        resize(16 * 1024 * 1024)
        _assert_completes(root, server, lists, "train")


# --------------------------------------------------------------------------------------------------
# Roots an earlier run (or an earlier version) left behind.


def test_unconfirmed_checksum_of_an_earlier_version_does_not_block_the_genuine_file(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    # What clip2depth 0.1.0 recorded after downloading a quota page as sync.zip, before any check.
    _legacy_record(root, SYNC, hashlib.sha256(HTML_PAGE).hexdigest())
    _assert_completes(root, server, lists, "train")


def test_files_gone_from_a_finished_part_are_fetched_again(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    _assert_completes(root, server, lists, "train")
    before = _dataset_files(root)
    (root / "sync" / "living_room_0001" / "rgb_00002.jpg").unlink()
    check = run_cli("data", "check", "nyu", "--root", root, "--only", "train", *lists[2:4])
    assert_user_error(check, "fetch the missing files with: clip2depth data get nyu")
    _assert_completes(root, server, lists, "train")
    assert _dataset_files(root) == before


def test_wrong_archive_an_earlier_version_marked_done_is_fetched_again(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    # What clip2depth 0.1.0 left after unpacking a wrong archive: its files, its checksum, a done marker.
    (root / "sync").mkdir(parents=True)
    (root / "sync" / "readme.txt").write_text("not the training set\n")
    _legacy_record(root, SYNC, hashlib.sha256(b"the wrong archive").hexdigest())
    download.done_marker(root, SYNC).write_text("unpacked\n")
    result = _get(root, server.url, lists, "--only", "train")
    assert "1 files to fetch" in result.out
    _assert_completes(root, server, lists, "train")


def test_host_file_changed_since_the_part_was_unpacked(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    _assert_completes(root, server, lists, "train")
    recorded = download.recorded_checksums(root)
    (root / "sync" / "living_room_0000" / "rgb_00000.jpg").unlink()
    kept = _dataset_files(root)
    with zipfile.ZipFile(io.BytesIO(server.files[SYNC])) as zf:
        changed = zip_bytes({n: zf.read(n) for n in zf.namelist()} | {"sync/extra.txt": b"new"})
    with FileServer({SYNC: changed}) as other:
        result = _get(root, other.url, lists, "--only", "train")
    assert_user_error(result, "checksum differs from the recorded", "delete the 'sync.zip' entry")
    assert download.recorded_checksums(root) == recorded and _dataset_files(root) == kept


# --------------------------------------------------------------------------------------------------
# data check.


@pytest.fixture
def nyu_root(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    assert _get(root, server.url, lists, "--only", "train").code == 0
    return root, lists[2:4]


def _check(root, train_list):
    return run_cli("data", "check", "nyu", "--root", root, "--only", "train", *train_list)


def _cut(path, keep: float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(("damage", "fragment"), [
    (lambda scene: _cut(scene / "rgb_00001.jpg", 1 / 3), "rgb_00001.jpg: unreadable (image file is truncated"),
    (lambda scene: _cut(scene / "rgb_00001.jpg", 0.999), "rgb_00001.jpg: unreadable (image file is truncated"),
    (lambda scene: _cut(scene / "sync_depth_00001.png", 0.5), "sync_depth_00001.png: unreadable"),
    (lambda scene: _cut(scene / "sync_depth_00001.png", 0.99), "sync_depth_00001.png: unreadable"),
    (lambda scene: Image.fromarray(np.full((480, 640), 9, np.uint8)).save(scene / "sync_depth_00001.png"),
     "a depth map must be a 16-bit image, this is PNG mode L"),
    (lambda scene: Image.new("RGB", (640, 480)).save(scene / "sync_depth_00001.png"),
     "a depth map must be single-channel"),
])
def test_check_decodes_every_file(nyu_root, damage, fragment):
    root, train_list = nyu_root
    damage(root / "sync" / "living_room_0001")
    result = _check(root, train_list)
    assert_user_error(result, "incomplete", "delete the unreadable and wrong-size files")
    assert fragment in result.out


def test_check_of_a_depth_map_of_the_wrong_size_names_both_sizes(nyu_root):
    root, train_list = nyu_root
    Image.fromarray(np.full((240, 320), 900, np.uint16)).save(root / "sync" / "living_room_0001" /
                                                              "sync_depth_00001.png")
    result = _check(root, train_list)
    assert_user_error(result, "incomplete")
    assert "sync_depth_00001.png: 320×240, expected 640×480" in result.out


def test_check_of_a_file_without_read_permission(nyu_root, monkeypatch):
    root, train_list = nyu_root
    locked = root / "sync" / "living_room_0000" / "rgb_00003.jpg"
    real_open = builtins.open

    def denying_open(file, *args, **kwargs):
        if str(file) == str(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denying_open)  # as root, chmod would not stop the read
    result = _check(root, train_list)
    line = assert_user_error(result, "incomplete", "make the files without read permission readable")
    assert "write to" not in line and "data get" not in line
    assert f"no permission: {locked}: cannot be read (Permission denied)" in result.out


def test_check_of_a_root_without_read_permission(nyu_root, monkeypatch):
    root, train_list = nyu_root
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(root) else real_access(p, mode))
    line = assert_user_error(_check(root, train_list), f"dataset folder {root} cannot be read (permission denied)")
    assert "write to" not in line


def test_check_of_a_missing_root_says_so(tmp_path):
    line = assert_user_error(run_cli("data", "check", "nyu", "--root", tmp_path / "typo"),
                             f"dataset folder {tmp_path / 'typo'} does not exist", "check the path")
    assert "incomplete" not in line


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "the train list names no files"),
    ("# only a comment\n\n", "the train list names no files"),
    ("one_field_only\nthree fields here too_many extra\n", "no usable line"),
])
def test_check_with_an_empty_or_malformed_list(tmp_path, text, fragment):
    listing = tmp_path / "train.txt"
    listing.write_text(text)
    line = assert_user_error(run_cli("data", "check", "nyu", "--root", tmp_path, "--only", "train",
                                     "--train-list", listing), str(listing), fragment)
    assert "incomplete" not in line and "data get" not in line


def test_get_with_an_empty_list_fetches_nothing(nyu_host, tmp_path):
    server, lists = nyu_host
    listing = tmp_path / "empty.txt"
    listing.write_text("")
    result = run_cli("-q", "data", "get", "nyu", "--root", tmp_path / "nyu", "--only", "train", "--mirror",
                     server.url, "--train-list", listing)
    assert_user_error(result, str(listing), "names no files")
    assert server.requests == []


def test_checksums_file_damaged_is_rewritten(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    (root / ".downloads").mkdir(parents=True)
    (root / ".downloads" / "checksums.json").write_text('{"sync.zip": "ab')  # cut mid-write by an older version
    _assert_completes(root, server, lists, "train")
    assert set(json.loads((root / ".downloads" / "checksums.json").read_text())) == {SYNC}


@pytest.mark.parametrize(("content", "fragment"), [
    (HTML_PAGE, "cannot read NYU splits file"),
    (b"MATLAB 5.0 MAT-file", "cannot read NYU splits file"),
    (None, "the test split must name frames 1..1449"),
])
def test_get_with_a_bad_splits_file_fetches_nothing(nyu_host, tmp_path, content, fragment):
    server, lists = nyu_host
    splits = tmp_path / "my_splits.mat"
    if content is None:
        scipy_io.savemat(splits, {"trainNdxs": np.array([[1]]), "testNdxs": np.array([[1], [1450]])})
    else:
        splits.write_bytes(content)
    result = _get(tmp_path / "nyu", server.url, [*lists[2:], "--nyu-splits", splits], "--only", "test")
    assert_user_error(result, str(splits), fragment)
    downloads = tmp_path / "nyu" / ".downloads"
    assert not (downloads / MAT).exists() and not (downloads / f"{MAT}.part").exists()


KITTI_DRIVE_ZIP = f"raw_data/{KITTI_DRIVE}/{KITTI_DRIVE}_sync.zip"
KITTI_FAULTS = {
    "drive-truncated": (KITTI_DRIVE_ZIP, _truncated, f"{KITTI_DRIVE}_sync.zip", "truncated or corrupt"),
    "annotated-wrong-contents": ("data_depth_annotated.zip", _other_zip, "data_depth_annotated.zip",
                                 "unpacks without 1 of the 1 files"),
    "calib-web-page": ("raw_data/2011_09_26_calib.zip", lambda _: HTML_PAGE, "2011_09_26_calib.zip",
                       "is a web page"),
}


@pytest.mark.parametrize("fault", list(KITTI_FAULTS))
def test_bad_kitti_archive_is_removed_and_a_rerun_with_a_good_mirror_completes(tmp_path, monkeypatch, fault):
    files, test_list = kitti_files(tmp_path)
    real = prepare.sources_for
    # The look-alike annotated-depth archive cannot match the real file's recorded md5.
    monkeypatch.setattr(prepare, "sources_for",
                        lambda *a, **k: [dataclasses.replace(s, md5=None) for s in real(*a, **k)])
    path, make, name, fragment = KITTI_FAULTS[fault]
    root = tmp_path / "kitti"
    args = ["-q", "data", "get", "kitti", "--root", root, "--only", "test", "--test-list", test_list, "--mirror"]
    with FileServer({**files, path: make(files[path])}) as bad:
        result = run_cli(*args, bad.url)
    assert_user_error(result, name, fragment, "run the same command again")
    _assert_nothing_recorded(root, name)
    with FileServer(files) as good:
        again = run_cli(*args, good.url)
    assert again.code == 0, again.err
    assert "kitti test: complete" in again.out
    assert download.recorded_checksums(root)[name] == hashlib.sha256(files[path]).hexdigest()


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "60", True])
def test_library_refuses_a_timeout_that_is_not_a_positive_number_of_seconds(timeout):
    from clip2depth.data.download import check_timeout
    from clip2depth.errors import ConfigError

    with pytest.raises(ConfigError, match="timeout="):
        check_timeout(timeout)
    assert check_timeout(2) == 2.0
