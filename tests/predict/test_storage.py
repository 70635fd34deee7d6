"""Object storage as ``predict`` input and output, on a real S3-compatible server (moto's server mode).

The same names, bytes and records as local files; ``--skip-existing`` reads one listing of the output
prefix, not one request per file; an output is visible under its final key only once it is complete; a
missing bucket or missing credentials is one ``error:`` line.
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

import clip2depth.inference.outputs as outputs_module
from clip2depth.inference import storage
from clip2depth.inference.storage import FoundObject, find_objects, upload
from clip2depth.io.inputs import find_files
from clirun import assert_user_error, run_cli
from s3server import CuttingProxy, S3Server
from scalefixtures import FORMATS, STEMS, assert_same_outputs, read_folder, single_thread

s3fs = pytest.importorskip("s3fs", reason="s3:// needs s3fs (pip install 'clip2depth[storage]')")


@pytest.fixture(autouse=True)
def _fresh_filesystems():
    """Each test makes its own S3 filesystems (fsspec caches them with the endpoint and credentials)."""
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def _bucket(s3: S3Server, name: str) -> str:
    client = s3.client()
    if name not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=name)
    return name


def _s3_outputs(s3: S3Server, bucket: str, prefix: str) -> dict[str, bytes]:
    return {key[len(prefix) :]: s3.get(bucket, key) for key in s3.keys(bucket, prefix)}


def _predict(*argv: object):
    with single_thread():
        return run_cli("-q", "predict", *argv, "--format", FORMATS, "--batch-size", "1", "--device", "cpu")


def test_objects_are_found_and_named_by_the_rules_of_local_files(s3: S3Server, tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    for name in ("a/b/img.jpg", "a/c.png", "top.png", "clip.mp4", "notes.txt", ".hidden.png", ".cache/x.png"):
        (shots / name).parent.mkdir(parents=True, exist_ok=True)
        (shots / name).write_bytes(b"x")
    bucket = _bucket(s3, "naming")
    s3.upload_folder(shots, bucket, "shots/")

    for local, remote in [(str(shots), f"s3://{bucket}/shots/"), (str(shots), f"s3://{bucket}/shots"),
                          (f"{shots}/**/*.png", f"s3://{bucket}/shots/**/*.png"),
                          (f"{shots}/a/*", f"s3://{bucket}/shots/a/*"),
                          (str(shots / "a" / "b" / "img.jpg"), f"s3://{bucket}/shots/a/b/img.jpg")]:  # fmt: skip
        files, _ = find_files([local])
        objects, problems = find_objects([remote])
        assert [o.name for o in objects] == [f.name for f in files], (local, remote)
        assert [o.path for o in objects] == [f"s3://{bucket}/shots/{f.path.relative_to(shots).as_posix()}"
                                             for f in files]  # fmt: skip
        assert problems == []
    assert [o.name for o in find_objects([f"s3://{bucket}/shots/"])[0]] == ["a__b__img", "a__c", "clip", "top"]

    objects, problems = find_objects([f"s3://{bucket}/nothing/", f"s3://{bucket}/shots/*.txt"])
    assert objects == []
    assert [raw for raw, _ in problems] == [f"s3://{bucket}/nothing/", f"s3://{bucket}/shots/*.txt"]
    objects, _ = find_objects([f"s3://{bucket}/shots/top.png", f"s3://{bucket}/shots/top.png"])
    assert objects == [FoundObject(f"s3://{bucket}/shots/top.png", "top")]  # listed once


def test_s3_in_and_out_writes_the_local_engines_bytes_and_manifest(
    s3: S3Server, scale_model_dir: Path, scale_photos: Path, local_reference: Path
) -> None:
    bucket = _bucket(s3, "engine-local")
    s3.upload_folder(scale_photos, bucket, "in/")

    result = _predict(f"s3://{bucket}/in/", "--model", scale_model_dir, "--out", f"s3://{bucket}/out",
                      "--manifest", f"s3://{bucket}/out/run.jsonl")  # fmt: skip

    assert result.code == 0, result.err
    assert f"20 of 21 inputs done, 1 failed; 40 files written to s3://{bucket}/out" in result.out
    assert f"s3://{bucket}/in/broken.jpg: cannot read as an image" in result.err
    written = _s3_outputs(s3, bucket, "out/")
    assert_same_outputs(read_folder(local_reference), written)
    rows = [json.loads(line) for line in written["run.jsonl"].decode().splitlines()]
    assert [r["input"] for r in rows] == [f"s3://{bucket}/in/broken.jpg"] + [f"s3://{bucket}/in/{s}.png" for s in STEMS]
    assert rows[0]["status"] == "failed" and "cannot read as an image" in rows[0]["error"]
    for row, stem in zip(rows[1:], STEMS, strict=True):
        depth = np.load(__import__("io").BytesIO(written[f"{stem}.npy"]))
        assert row["status"] == "done" and row["error"] is None
        assert row["outputs"] == [f"s3://{bucket}/out/{stem}.png", f"s3://{bucket}/out/{stem}.npy"]
        assert (row["height"], row["width"]) == depth.shape
        assert row["depth_min"] == pytest.approx(float(depth.min()), rel=1e-6)
        assert row["depth_median"] == pytest.approx(float(np.median(depth)), rel=1e-6)
        assert row["depth_max"] == pytest.approx(float(depth.max()), rel=1e-6)
        assert row["seconds"] > 0


def test_skip_existing_on_s3_lists_the_output_prefix_once(
    s3: S3Server, scale_model_dir: Path, scale_photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(s3, "engine-resume")
    s3.upload_folder(scale_photos, bucket, "in/")
    out = f"s3://{bucket}/out"
    manifest = f"{out}/run.jsonl"
    first = _predict(f"s3://{bucket}/in/photo0*.png", "--model", scale_model_dir, "--out", out, "--manifest", manifest)
    assert first.code == 0, first.err
    first_rows = {r["input"]: r for r in map(json.loads, s3.get(bucket, "out/run.jsonl").decode().splitlines())}

    with CuttingProxy(s3.port, cut=lambda method, path: False) as proxy:  # counts the requests
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        s3fs.S3FileSystem.clear_instance_cache()  # a filesystem that uses the proxy
        again = _predict(f"s3://{bucket}/in/", "--model", scale_model_dir, "--out", out, "--manifest", manifest,
                         "--skip-existing")  # fmt: skip

    assert again.code == 0, again.err
    assert "20 of 21 inputs done (10 already done, skipped), 1 failed; 20 files written" in again.out
    reads = [(method, path) for method, path in proxy.requests if method in ("GET", "HEAD") and "out" in path]
    listings = [path for _, path in reads if "list-type=2" in path]
    assert len(listings) == 1 and "prefix=out" in listings[0]  # the one listing behind every skip
    assert {path for _, path in reads if path not in listings} == {f"/{bucket}/out/run.jsonl"}  # the manifest
    written = sorted(path for method, path in proxy.requests if method == "PUT")  # nothing that existed
    new = [f"/{bucket}/out/{stem}{suffix}" for stem in STEMS[10:] for suffix in (".npy", ".png")]
    assert written == sorted([f"/{bucket}/out/run.jsonl", *new])
    rows = {r["input"]: r for r in map(json.loads, s3.get(bucket, "out/run.jsonl").decode().splitlines())}
    assert len(rows) == 21
    for stem in STEMS:
        row = rows[f"s3://{bucket}/in/{stem}.png"]
        if stem.startswith("photo0"):  # skipped: the first run's values are carried over
            assert row["status"] == "skipped" and row["seconds"] is None
            assert {k: row[k] for k in ("outputs", "height", "width", "depth_min", "depth_median", "depth_max")} == \
                {k: first_rows[row["input"]][k] for k in ("outputs", "height", "width", "depth_min", "depth_median",
                                                          "depth_max")}  # fmt: skip
        else:
            assert row["status"] == "done"


def test_an_input_whose_outputs_fail_while_being_written_leaves_no_object(
    s3: S3Server, scale_model_dir: Path, scale_photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(s3, "half-written")
    real = outputs_module.save_depth_npy

    def failing(depth, path):
        if Path(path).name == "photo03.npy":
            raise OSError(28, "No space left on device", str(path))
        real(depth, path)

    monkeypatch.setattr(outputs_module, "save_depth_npy", failing)
    inputs = [scale_photos / f"photo0{i}.png" for i in range(2, 5)]
    result = _predict(*inputs, "--model", scale_model_dir, "--out", f"s3://{bucket}/out")

    assert result.code == 0, result.err
    assert "photo03.png: cannot write outputs: [Errno 28] No space left on device" in result.err
    assert s3.keys(bucket) == ["out/photo02.npy", "out/photo02.png", "out/photo04.npy", "out/photo04.png"]
    monkeypatch.setattr(outputs_module, "save_depth_npy", real)
    again = _predict(*inputs, "--model", scale_model_dir, "--out", f"s3://{bucket}/out", "--skip-existing")
    assert "3 of 3 inputs done (2 already done, skipped); 2 files written" in again.out
    assert len(s3.keys(bucket)) == 6


def test_an_upload_cut_short_leaves_no_object_under_its_final_name(
    s3: S3Server, scale_model_dir: Path, scale_photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(s3, "cut-uploads")
    with CuttingProxy(s3.port, cut=lambda method, path: method == "PUT" and path.endswith("/photo05.npy")) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        s3fs.S3FileSystem.clear_instance_cache()
        result = _predict(*[scale_photos / f"photo0{i}.png" for i in (4, 5)], "--model", scale_model_dir,
                          "--out", f"s3://{bucket}/out")  # fmt: skip

    assert proxy.cuts, "the proxy cut no upload"
    assert result.code == 0, result.err
    assert "photo05.png: cannot write outputs" in result.err
    # half of photo05.npy reached the server, which never made it an object; nothing else was left behind
    assert s3.keys(bucket) == ["out/photo04.npy", "out/photo04.png", "out/photo05.png"]
    multipart = s3.client().list_multipart_uploads(Bucket=bucket)
    assert not multipart.get("Uploads")


def test_other_fsspec_filesystems_get_a_temporary_name_then_a_move(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "depth.npy"
    local.write_bytes(b"0123456789")
    fs = fsspec.filesystem("memory")
    upload(local, "memory://bucket/out/depth.npy")
    assert fs.cat_file("/bucket/out/depth.npy") == b"0123456789"

    def broken_move(*args, **kwargs):
        raise OSError("connection lost")

    monkeypatch.setattr(type(fs), "mv", broken_move)
    with pytest.raises(Exception, match="connection lost"):
        upload(local, "memory://bucket/out/other.npy")
    assert fs.ls("/bucket/out", detail=False) == ["/bucket/out/depth.npy"]  # neither the file nor its temporary


def test_file_urls_are_local_paths(scale_model_dir: Path, scale_photos: Path, tmp_path: Path) -> None:
    result = _predict(f"file://{scale_photos}/photo01.png", "--model", scale_model_dir, "--out", f"file://{tmp_path}")
    assert result.code == 0, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo01.npy", "photo01.png"]
    assert storage.location(f"file://{tmp_path}") == tmp_path


def test_a_missing_bucket_is_one_error(s3: S3Server, scale_model_dir: Path, scale_photos: Path,
                                       tmp_path: Path) -> None:  # fmt: skip
    result = run_cli("predict", "s3://no-such-bucket/photos/", "--model", scale_model_dir, "--out", tmp_path)
    assert_user_error(result, "no input matched", "s3://no-such-bucket/photos/",
                      "bucket 'no-such-bucket' does not exist")

    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", "s3://no-such-bucket/depth")
    assert_user_error(result, "output folder s3://no-such-bucket/depth", "bucket 'no-such-bucket' does not exist")
    assert "RANDOM weights" not in result.err  # refused before the model loads


def test_missing_credentials_are_one_error(s3: S3Server, scale_model_dir: Path, scale_photos: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    bucket = _bucket(s3, "locked")
    s3.upload_folder(scale_photos, bucket, "in/")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    result = run_cli("predict", f"s3://{bucket}/in/", "--model", scale_model_dir, "--out", tmp_path)
    assert_user_error(result, f"s3://{bucket}/in/: no credentials to list it", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL")

    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", f"s3://{bucket}/out")
    assert_user_error(result, f"output folder s3://{bucket}/out: no credentials", "AWS_SECRET_ACCESS_KEY")


def test_a_protocol_without_its_package_names_it(scale_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    result = run_cli("predict", "gs://bucket/photo.jpg", "--model", scale_model_dir, "--out", tmp_path)
    assert_user_error(result, "gs://bucket/photo.jpg: gs:// needs gcsfs (pip install gcsfs)")


def test_a_corrupt_object_is_a_failed_input_and_the_rest_is_done(s3: S3Server, scale_model_dir: Path,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    bucket = _bucket(s3, "mixed")
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "good.png")
    (folder / "cut.png").write_bytes((folder / "good.png").read_bytes()[:40])
    s3.upload_folder(folder, bucket, "in/")

    result = _predict(f"s3://{bucket}/in/", "--model", scale_model_dir, "--out", tmp_path / "out")

    assert result.code == 0, result.err
    assert "1 of 2 inputs done, 1 failed" in result.out
    assert f"s3://{bucket}/in/cut.png: cannot read as an image" in result.err
    assert "clip2depth-in-" not in result.err  # the message names the object, not its temporary copy
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.npy", "good.png"]


def test_locations_are_paths_or_urls(tmp_path: Path) -> None:
    assert storage.location("s3://b/photos/") == "s3://b/photos/"
    assert storage.location("photos/a.jpg") == Path("photos/a.jpg")
    assert storage.location("file:///data/x.png") == Path("/data/x.png")
    assert not storage.is_url("file:///data") and not storage.is_url(Path("s3:/b")) and storage.is_url("gs://b/k")
    assert storage.join("s3://b/out/", "a__x") == "s3://b/out/a__x" and storage.join(tmp_path, "x") == tmp_path / "x"
    assert storage.added("s3://b/out/x", "_color.png") == "s3://b/out/x_color.png"
    assert storage.added(tmp_path / "x", ".npy") == tmp_path / "x.npy"
    assert storage.name_of("s3://b/out/x.png") == "x.png" and storage.parent_of("s3://b/out/x.png") == "s3://b/out"
    assert storage.canonical("s3://b/out/") == "s3://b/out"
    assert storage.canonical(tmp_path / "a" / ".." / "b") == str(tmp_path / "b")
