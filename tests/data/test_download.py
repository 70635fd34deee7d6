"""``clip2depth data get|check`` against a real HTTP server on 127.0.0.1 serving small look-alike files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import zipfile
from collections import namedtuple

import numpy as np
import pytest
from PIL import Image

from clip2depth.data import download, prepare, sources
from clip2depth.data.download import BadDownload, fetch, gdrive_confirm_url
from clip2depth.data.prepare import extract_zip, install
from clip2depth.errors import DataError
from clirun import assert_user_error, run_cli
from fakedata import KITTI_DRIVE, NYU_SCENES, NYU_TEST_NDX, kitti_files, nyu_depth
from httpserver import FileServer

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every offset distinguishable


def _source(name: str = "blob.bin", **kw) -> sources.Source:
    return sources.Source(dataset="nyu", name=name, host="http://unused.invalid/", path=f"files/{name}",
                          parts=frozenset({"test"}), approx_bytes=len(PAYLOAD),
                          alternatives="try the other host", **kw)


@pytest.fixture
def server():
    with FileServer({"files/blob.bin": PAYLOAD}) as s:
        yield s


def test_dropped_connection_resumes_to_the_same_bytes(server, tmp_path):
    server.drop_after["files/blob.bin"] = 300_000
    path = fetch(_source(), tmp_path, mirror=server.url, timeout=10, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=300000-"]
    assert not (path.parent / "blob.bin.part").exists()


def test_connection_lost_on_every_attempt_keeps_the_part_file(server, tmp_path):
    server.drop_after["files/blob.bin"] = 200_000
    with pytest.raises(DataError) as info:
        fetch(_source(), tmp_path, mirror=server.url, timeout=10, attempts=1, show_progress=False)
    assert "blob.bin" in str(info.value) and "200.0 kB received are kept" in str(info.value)
    assert "run the same command again to continue" in str(info.value)
    assert "try the other host" in str(info.value)
    assert (download.downloads_dir(tmp_path) / "blob.bin.part").stat().st_size == 200_000
    assert fetch(_source(), tmp_path, mirror=server.url, show_progress=False).read_bytes() == PAYLOAD


def test_interrupted_part_file_continues_with_range(server, tmp_path):
    part = download.downloads_dir(tmp_path) / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:123_456])  # what an earlier run left after Ctrl-C
    path = fetch(_source(), tmp_path, mirror=server.url, timeout=10, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("files/blob.bin", "bytes=123456-")]


def test_server_without_range_restarts_from_zero(server, tmp_path):
    server.no_range = True
    part = download.downloads_dir(tmp_path) / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 5000)  # wrong bytes: appending to them would corrupt the file
    path = fetch(_source(), tmp_path, mirror=server.url, timeout=10, show_progress=False)
    assert path.read_bytes() == PAYLOAD


def test_part_longer_than_the_known_size_starts_again_without_asking_the_host(server, tmp_path):
    part = download.downloads_dir(tmp_path) / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD + b"junk")
    path = fetch(_source(size=len(PAYLOAD)), tmp_path, mirror=server.url, timeout=10, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("files/blob.bin", None)]


def test_404_names_the_file_and_the_alternatives(server, tmp_path):
    with pytest.raises(DataError) as info:
        fetch(_source("gone.zip"), tmp_path, mirror=server.url, timeout=10, show_progress=False)
    message = str(info.value)
    assert "gone.zip" in message and "404" in message and "try the other host" in message


def test_wrong_checksum_keeps_nothing(server, tmp_path):
    with pytest.raises(DataError, match="sha256 checksum differs"):
        fetch(_source(sha256="0" * 64), tmp_path, mirror=server.url, timeout=10, show_progress=False)
    assert list(download.downloads_dir(tmp_path).iterdir()) == []


def test_fetch_records_nothing_the_checks_after_it_decide(server, tmp_path):
    path = fetch(_source(), tmp_path, mirror=server.url, timeout=10, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert download.recorded_checksums(tmp_path) == {}
    assert not download.done_marker(tmp_path, "blob.bin").exists()


def test_recorded_checksum_is_enforced_only_once_confirmed_by_a_done_marker(server, tmp_path):
    folder = download.downloads_dir(tmp_path)
    other = hashlib.sha256(PAYLOAD[::-1]).hexdigest()
    # clip2depth 0.1.0 recorded a checksum right after the download and marked the file "unpacked": not trusted.
    folder.mkdir(parents=True)
    (folder / "checksums.json").write_text(json.dumps({"blob.bin": other}))
    download.done_marker(tmp_path, "blob.bin").write_text("unpacked\n")
    assert download.confirmed_checksum(tmp_path, "blob.bin") is None
    assert fetch(_source(), tmp_path, mirror=server.url, timeout=10, show_progress=False).read_bytes() == PAYLOAD
    (folder / "blob.bin").unlink()
    download.record_done(tmp_path, "blob.bin", other)  # what passed every gate
    assert download.confirmed_checksum(tmp_path, "blob.bin") == other
    with pytest.raises(DataError, match="checksum differs from the recorded .* unpacked into this root before"):
        fetch(_source(), tmp_path, mirror=server.url, timeout=10, show_progress=False)
    assert download.recorded_checksums(tmp_path) == {"blob.bin": other}
    assert not (folder / "blob.bin").exists()


def test_file_placed_by_hand_is_verified_not_fetched(server, tmp_path):
    folder = download.downloads_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "blob.bin").write_bytes(PAYLOAD)
    placed = fetch(_source(sha256=hashlib.sha256(PAYLOAD).hexdigest()), tmp_path, mirror=server.url)
    assert placed.read_bytes() == PAYLOAD
    assert server.requests == []
    (folder / "blob.bin").write_bytes(PAYLOAD[:-1])
    with pytest.raises(DataError, match="checksum differs.*was deleted"):
        fetch(_source(sha256=hashlib.sha256(PAYLOAD).hexdigest()), tmp_path, mirror=server.url)
    assert not (folder / "blob.bin").exists()


def test_recorded_md5_of_the_annotated_depth_is_checked(tmp_path):
    files, _ = kitti_files(tmp_path)
    annotated = next(s for s in sources.sources_for("kitti", "test") if s.name == "data_depth_annotated.zip")
    look_alike = files["data_depth_annotated.zip"]
    with FileServer(files) as server:
        with pytest.raises(DataError, match=f"md5 checksum differs from the recorded {annotated.md5}"):
            fetch(annotated, tmp_path / "real", mirror=server.url, timeout=10, show_progress=False)
        own = dataclasses.replace(annotated, md5=hashlib.md5(look_alike).hexdigest(), size=len(look_alike))
        fetched = fetch(own, tmp_path / "own", mirror=server.url, timeout=10, show_progress=False)
    assert fetched.read_bytes() == look_alike  # the md5 is what told the two apart


def test_gdrive_confirmation_page_is_followed():
    page = ('<html><form id="download-form" action="https://drive.usercontent.google.com/download" '
            'method="get"><input type="hidden" name="id" value="ABC"><input type="hidden" name="confirm" '
            'value="t"><input type="hidden" name="uuid" value="u-1"></form></html>')
    url = gdrive_confirm_url(page, "https://drive.google.com/uc?export=download&id=ABC")
    assert url == "https://drive.usercontent.google.com/download?id=ABC&confirm=t&uuid=u-1"
    old = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=XyZ&amp;id=ABC">Download</a>'
    assert gdrive_confirm_url(old, "https://drive.google.com/uc?id=ABC") == \
        "https://drive.google.com/uc?export=download&confirm=XyZ&id=ABC"
    assert gdrive_confirm_url("<html>quota exceeded</html>", "https://drive.google.com/") is None


# --------------------------------------------------------------------------------------------------
# Extraction.


def _zip_file(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _drive_source(name: str = "d.zip") -> sources.Source:
    return sources.Source(dataset="kitti", name=name, host="http://unused.invalid/", path=name,
                          parts=frozenset({"test"}), approx_bytes=1000)


def test_truncated_archive_unpacks_nothing(tmp_path):
    archive = _zip_file(tmp_path / "a.zip", {f"sync/s/{i}.txt": b"x" * 1000 for i in range(5)})
    archive.write_bytes(archive.read_bytes()[:-200])  # the central directory is cut off
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(BadDownload, match="truncated or corrupt"):
        install(_drive_source(), archive, root, {}, show_progress=False)
    assert list(root.iterdir()) == []


def test_member_whose_bytes_differ_from_its_crc_is_a_bad_download(tmp_path):
    archive = _zip_file(tmp_path / "a.zip", {"2011_09_26/a.txt": b"abcdefgh" * 100})
    data = bytearray(archive.read_bytes())
    data[data.index(b"abcdefgh") + 3] ^= 0xFF  # stored, not deflated: flip one byte of the member
    archive.write_bytes(bytes(data))
    with pytest.raises(BadDownload, match="Bad CRC-32"):
        extract_zip(archive, tmp_path / "out", show_progress=False)


def test_ctrl_c_during_extraction_leaves_no_half_folder(tmp_path, monkeypatch):
    archive = _zip_file(tmp_path / "d.zip", {f"2011_09_26/drive_sync/{i}.png": b"p" for i in range(6)})
    dest = tmp_path / "root"
    (dest / "2011_09_26" / "other_sync").mkdir(parents=True)  # an earlier drive stays as it is
    real_extract, calls = zipfile.ZipFile.extract, []

    def interrupted(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        install(_drive_source(), archive, dest, {}, show_progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["2011_09_26"]
    assert [p.name for p in (dest / "2011_09_26").iterdir()] == ["other_sync"]
    monkeypatch.setattr(zipfile.ZipFile, "extract", real_extract)
    install(_drive_source(), archive, dest, {}, show_progress=False)  # the re-run completes it
    assert sorted(p.name for p in (dest / "2011_09_26" / "drive_sync").iterdir()) == [f"{i}.png" for i in range(6)]


def test_archive_member_outside_the_folder_is_refused(tmp_path):
    archive = _zip_file(tmp_path / "evil.zip", {"../escape.txt": b"x"})
    with pytest.raises(BadDownload, match="outside"):
        extract_zip(archive, tmp_path / "root", show_progress=False)
    assert not (tmp_path / "escape.txt").exists()


# --------------------------------------------------------------------------------------------------
# The commands.


def test_nyu_get_then_check(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    result = run_cli("-q", "data", "get", "nyu", "--root", root, "--mirror", server.url, *lists)
    assert result.code == 0, result.err
    assert "2 files to fetch" in result.out and "nyu train: complete" in result.out
    assert "nyu test: complete" in result.out
    # The official test frames, converted: 0-based frame index in the name, raw depth in millimetres.
    for ndx in NYU_TEST_NDX:
        folder = root / "official_splits" / "test" / NYU_SCENES[ndx - 1]
        depth = np.asarray(Image.open(folder / f"sync_depth_{ndx - 1:05d}.png"))
        assert depth.dtype == np.uint16 and depth.shape == (480, 640)
        np.testing.assert_array_equal(depth, (nyu_depth(ndx - 1) * np.float32(1000)).astype(np.uint16))
        rgb = np.asarray(Image.open(folder / f"rgb_{ndx - 1:05d}.jpg"))
        assert rgb.shape == (480, 640, 3)
        assert rgb[:5].mean() < 5 and rgb[100, 100].mean() > 200 and rgb[400, 500, 0] > rgb[400, 500, 2]
    assert len(list((root / "sync").rglob("*.jpg"))) == 8
    assert not list((root / ".downloads").glob("*.zip")) and not list(root.glob(".unpack-*"))

    again = run_cli("-q", "data", "get", "nyu", "--root", root, "--mirror", server.url, *lists)
    assert again.code == 0 and "0 files to fetch" in again.out
    gets = [p for p, _ in server.requests]
    assert gets.count("sync.zip") == 2  # HEAD + GET once: the re-run fetched nothing

    check = run_cli("data", "check", "nyu", "--root", root, *lists[2:])
    assert check.code == 0 and "complete" in check.out


def test_check_reports_missing_unreadable_and_wrong_size(nyu_host, tmp_path):
    server, lists = nyu_host
    root = tmp_path / "nyu"
    assert run_cli("-q", "data", "get", "nyu", "--root", root, "--mirror", server.url, *lists).code == 0
    scene = root / "sync" / "living_room_0000"
    (scene / "rgb_00000.jpg").unlink()
    (scene / "sync_depth_00001.png").write_bytes(b"not a png")
    Image.new("RGB", (320, 240)).save(scene / "rgb_00002.jpg")
    result = run_cli("data", "check", "nyu", "--root", root, "--only", "train", *lists[2:])
    assert_user_error(result, "incomplete", "delete the unreadable and wrong-size files",
                      f"data get nyu --root {root} --only train --train-list {lists[3]}")
    assert "1 files missing, 1 unreadable, 1 of the wrong size" in result.out
    assert "rgb_00000.jpg" in result.out and "sync_depth_00001.png" in result.out and "320×240" in result.out


def test_check_of_an_empty_folder_fails(tmp_path):
    result = run_cli("data", "check", "kitti", "--root", tmp_path, "--only", "test")
    assert_user_error(result, "incomplete", "fetch the missing files with: clip2depth data get kitti")
    assert "697 list lines" in result.out


def test_kitti_get_only_test(tmp_path, monkeypatch):
    files, test_list = kitti_files(tmp_path)
    real = prepare.sources_for
    # The look-alike annotated-depth archive cannot match the real file's recorded md5.
    monkeypatch.setattr(prepare, "sources_for",
                        lambda *a, **k: [dataclasses.replace(s, md5=None) for s in real(*a, **k)])
    root = tmp_path / "kitti"
    with FileServer(files) as server:
        result = run_cli("-q", "data", "get", "kitti", "--root", root, "--only", "test", "--mirror", server.url,
                         "--test-list", test_list)
    assert result.code == 0, result.err
    assert "3 files to fetch" in result.out and "kitti test: complete" in result.out
    with Image.open(root / "2011_09_26" / f"{KITTI_DRIVE}_sync" / "image_02" / "data" / "0000000001.png") as frame:
        assert (np.asarray(frame) == 90).all() and frame.size == (1242, 375)  # the served frame, unpacked intact
    assert (root / "2011_09_26" / "calib_cam_to_cam.txt").read_bytes() == b"calib\n"
    assert (root / "data_depth_annotated" / "val" / f"{KITTI_DRIVE}_sync").is_dir()


def test_disk_space_too_small_stops_before_downloading(nyu_host, tmp_path, monkeypatch):
    server, lists = nyu_host
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    result = run_cli("-q", "data", "get", "nyu", "--root", tmp_path / "nyu", "--mirror", server.url, *lists)
    assert_user_error(result, "not enough free disk space", "--only test")
    downloads = tmp_path / "nyu" / ".downloads"
    assert not downloads.exists() or not any(downloads.iterdir())  # not one byte fetched


def test_404_from_the_command_is_one_error_line(tmp_path):
    with FileServer({}) as server:
        result = run_cli("-q", "data", "get", "nyu", "--root", tmp_path, "--only", "test", "--mirror", server.url)
    assert_user_error(result, "nyu_depth_v2_labeled.mat", "HTTP 404", "--mirror")


def test_dry_run_lists_sizes_and_fetches_nothing(tmp_path):
    result = run_cli("data", "get", "kitti", "--root", tmp_path, "--only", "test", "--dry-run")
    assert result.code == 0, result.err
    assert "34 files to fetch" in result.out and "data_depth_annotated.zip" in result.out
    assert "s3.eu-central-1.amazonaws.com/avg-kitti/raw_data/2011_09_26_drive_0002/" in result.out
    assert not (tmp_path / ".downloads").exists()


def test_sources_cover_the_packaged_splits():
    every = {s.name for s in sources.sources_for("kitti")}
    assert len(every) == 67  # 61 drives + 5 calibration archives (BTS's 66) + the annotated depth
    for lst in ("eigen_test_files_with_gt.txt", "eigen_train_files_with_gt.txt.gz"):
        drives = sources.kitti_drives_in_list(sources.packaged_list(lst))
        assert {f"{d}.zip" for d in drives} <= every
    test_names = {s.name for s in sources.sources_for("kitti", "test")}
    assert len([n for n in test_names if "_drive_" in n]) == 28
    assert [s.name for s in sources.sources_for("nyu", "test")] == ["nyu_depth_v2_labeled.mat"]


def test_check_reads_list_files_as_eval_does_comments_blank_lines_and_tabs(tmp_path):
    listing = tmp_path / "test.txt"
    listing.write_text("# my test split\n\nscene a/rgb 1.jpg\tscene a/depth 1.png\t518.8579\n")
    result = run_cli("data", "check", "nyu", "--root", tmp_path, "--only", "test", "--test-list", listing)
    assert_user_error(result, "incomplete")
    assert "1 list lines" in result.out and "scene a/rgb 1.jpg" in result.out
