"""``predict --engine ray`` on a local Ray instance (one per test session) and :class:`DepthPredictor` in a user's
own Ray Data pipeline: the local engine's files, one record per input, a killed actor replaced without an output
lost or written twice, and an image's depth independent of the batch it shares."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import clip2depth
import clip2depth.inference.steps as steps_module
from clirun import assert_user_error, run_cli
from s3server import S3Server
from scalefixtures import FORMATS, STEMS, assert_same_outputs, make_slow_photos, read_folder, single_thread

ray = pytest.importorskip("ray", reason="--engine ray needs Ray (pip install 'clip2depth[ray]')")
pq = pytest.importorskip("pyarrow.parquet")


def _predict(*argv: object):
    return run_cli("-q", "predict", *argv, "--format", FORMATS, "--device", "cpu")


def test_ray_writes_what_the_local_engine_writes_from_and_to_s3(
    ray_cluster, s3: S3Server, scale_model_dir: Path, scale_photos: Path, local_reference: Path
) -> None:
    s3.client().create_bucket(Bucket="ray")
    s3.upload_folder(scale_photos, "ray", "in/")

    result = _predict("s3://ray/in/", "--model", scale_model_dir, "--out", "s3://ray/out", "--engine", "ray",
                      "--workers", "2", "--batch-size", "1")  # fmt: skip

    assert result.code == 0, result.err
    assert "20 of 21 inputs done, 1 failed; 40 files written to s3://ray/out" in result.out
    assert "s3://ray/in/broken.jpg: cannot read as an image" in result.err
    written = {key[len("out/") :]: s3.get("ray", key) for key in s3.keys("ray", "out/")}
    assert_same_outputs(read_folder(local_reference), written)
    rows = pq.read_table(io.BytesIO(written["manifest.parquet"])).to_pylist()
    assert [r["input"] for r in rows] == ["s3://ray/in/broken.jpg"] + [f"s3://ray/in/{s}.png" for s in STEMS]
    assert [r["status"] for r in rows] == ["failed"] + ["done"] * 20
    assert rows[0]["error"].startswith("cannot read as an image")
    for row, stem in zip(rows[1:], STEMS, strict=True):
        depth = np.load(io.BytesIO(written[f"{stem}.npy"]))
        assert row["outputs"] == [f"s3://ray/out/{stem}.png", f"s3://ray/out/{stem}.npy"]
        assert (row["height"], row["width"]) == depth.shape
        assert (row["depth_min"], row["depth_max"]) == pytest.approx((float(depth.min()), float(depth.max())), rel=1e-6)


def test_an_images_depth_does_not_depend_on_its_batch(
    ray_cluster, scale_model_dir: Path, scale_photos: Path, local_reference: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    sizes: list[int] = []
    real = steps_module.predict_batch

    def recorded(model, images, **kwargs):
        sizes.append(len(images))
        return real(model, images, **kwargs)

    monkeypatch.setattr(steps_module, "predict_batch", recorded)
    with single_thread():
        eight = _predict(scale_photos, "--model", scale_model_dir, "--out", tmp_path / "batch8", "--batch-size", "8")
    assert eight.code == 0, eight.err
    assert max(sizes) == 8 and sorted(sizes) == [5, 7, 8]  # 13 images of one size, 7 of the other
    monkeypatch.undo()
    on_ray = _predict(scale_photos, "--model", scale_model_dir, "--out", tmp_path / "ray", "--batch-size", "8",
                      "--engine", "ray", "--workers", "1")  # fmt: skip
    assert on_ray.code == 0, on_ray.err

    worst = 0.0
    for stem in STEMS:
        one = np.load(local_reference / f"{stem}.npy")  # batch size 1
        for other in (np.load(tmp_path / "batch8" / f"{stem}.npy"), np.load(tmp_path / "ray" / f"{stem}.npy")):
            assert other.shape == one.shape
            worst = max(worst, float(np.max(np.abs(other - one) / np.abs(one))))
    assert worst <= 1e-5


def _actor_pids() -> list[int]:
    """Processes of Ray Data's predicting actors (their title names the callable class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker(MapBatches(_PipelinePredictor))" in title:
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the actor through /proc")
def test_a_killed_actor_is_replaced_and_every_output_is_written_once(
    ray_cluster, scale_model_dir: Path, tmp_path: Path
) -> None:
    stems = make_slow_photos(tmp_path / "photos", 24)
    out = tmp_path / "out"
    results = []
    run = threading.Thread(target=lambda: results.append(_predict(
        tmp_path / "photos", "--model", scale_model_dir, "--out", out, "--batch-size", "1", "--engine", "ray",
        "--workers", "2")))  # fmt: skip
    run.start()
    deadline = time.monotonic() + 300
    while not (out.exists() and any(p.suffix == ".npy" for p in out.iterdir())):
        assert run.is_alive() and time.monotonic() < deadline, results
        time.sleep(0.05)
    victims = _actor_pids()
    assert victims, "no predicting actor found"
    done_at_kill = sum(1 for p in out.iterdir() if p.suffix == ".npy")
    os.kill(victims[0], signal.SIGKILL)
    run.join(timeout=600)

    assert done_at_kill < len(stems), "the run finished before the actor was killed"
    [result] = results
    assert result.code == 0, result.err
    assert f"24 of 24 inputs done; 48 files written to {out}" in result.out  # each output written once
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        sorted([f"{s}{x}" for s in stems for x in (".png", ".npy")] + ["manifest.parquet"])  # fmt: skip
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [Path(r["input"]).stem for r in rows] == stems and {r["status"] for r in rows} == {"done"}
    for stem in stems:
        assert np.load(out / f"{stem}.npy").shape == (480, 640)


def test_depth_predictor_in_a_users_own_pipeline(ray_cluster, scale_model_dir: Path) -> None:
    from clip2depth.inference.raydata import DepthPredictor

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(32, 48, 3), (40, 32, 3), (32, 48, 3)] * 3]
    ds = ray.data.from_items([{"name": f"img{i}", "image": image} for i, image in enumerate(images)])
    ds = ds.map_batches(DepthPredictor, fn_constructor_kwargs={"model": str(scale_model_dir), "device": "cpu",
                                                               "batch_size": 4},
                        batch_size=5, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)  # fmt: skip
    rows = sorted(ds.take_all(), key=lambda row: int(row["name"][3:]))

    model = clip2depth.create_model(scale_model_dir)
    assert [row["name"] for row in rows] == [f"img{i}" for i in range(len(images))]
    for row, image in zip(rows, images, strict=True):
        expected = model.infer(image)  # DepthPredictor predicts at the model's own scale, as infer does
        assert np.array_equal(row["image"], image)
        assert row["depth"].shape == image.shape[:2] and row["depth"].dtype == np.float32
        assert float(np.max(np.abs(row["depth"] - expected) / expected)) <= 1e-5


def test_a_pool_that_takes_every_cpu_is_refused(ray_cluster, scale_model_dir: Path, scale_photos: Path,
                                                tmp_path: Path) -> None:  # fmt: skip
    result = run_cli("predict", scale_photos / "photo01.png", "--model", scale_model_dir, "--out", tmp_path,
                     "--engine", "ray", "--workers", "3")  # fmt: skip
    assert_user_error(result, "--workers 3 would take every CPU of the Ray cluster (3)", "at most 2 workers")
    assert not any(tmp_path.iterdir())


def test_without_ray_the_engine_is_one_error_naming_the_extra(scale_model_dir: Path, scale_photos: Path,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as where the ray extra is not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", tmp_path, "--engine", "ray")
    assert_user_error(result, "--engine ray needs Ray with Ray Data: pip install 'clip2depth[ray]'")


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--workers", "2"], "--workers only apply to --engine ray"),
    (["--ray-address", "10.0.0.1:6379", "--gpus-per-worker", "1"], "--ray-address, --gpus-per-worker only apply to"),
    (["--engine", "ray", "--workers", "0"], "argument --workers: '0' is not a whole number of 1 or more"),
    (["--engine", "ray", "--gpus-per-worker", "-1"], "argument --gpus-per-worker: '-1' is not a finite number of 0"),
])  # fmt: skip
def test_ray_flags_are_checked_before_anything_starts(flags: list[str], fragment: str, scale_model_dir: Path,
                                                      scale_photos: Path, tmp_path: Path) -> None:  # fmt: skip
    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", tmp_path, *flags)
    assert_user_error(result, fragment)


def test_the_ray_engine_under_torchrun_is_refused(scale_model_dir: Path, scale_photos: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", tmp_path, "--engine", "ray")
    assert_user_error(result, "--engine ray starts its own workers", "not under torchrun")


def test_a_video_goes_whole_through_one_actor(ray_cluster, scale_model_dir: Path, scale_photos: Path,
                                              tmp_path: Path) -> None:  # fmt: skip
    pytest.importorskip("av")
    from clip2depth.io.video import VideoWriter, iter_video_frames

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo01.png").write_bytes((scale_photos / "photo01.png").read_bytes())
    rng = np.random.default_rng(5)
    with VideoWriter(folder / "walk.mp4", fps=10.0, size=(48, 32)) as writer:
        for _ in range(6):
            writer.write(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    argv = (folder, "--model", scale_model_dir, "--format", "color,npy", "--save-frames", "--device", "cpu")

    local = run_cli("-q", "predict", *argv, "--out", tmp_path / "local")
    on_ray = run_cli("-q", "predict", *argv, "--out", tmp_path / "ray", "--engine", "ray", "--workers", "1")

    assert local.code == on_ray.code == 0, (local.err, on_ray.err)
    assert "2 of 2 inputs done; 9 files written" in on_ray.out  # 6 frames, the depth video, 2 for the photo
    frames = sorted(p.name for p in (tmp_path / "local" / "walk_frames").iterdir())
    assert frames == [f"{i:06d}.npy" for i in range(6)]
    assert sorted(p.name for p in (tmp_path / "ray" / "walk_frames").iterdir()) == frames
    for name in frames:
        a, b = np.load(tmp_path / "local" / "walk_frames" / name), np.load(tmp_path / "ray" / "walk_frames" / name)
        assert a.shape == (32, 48) and float(np.max(np.abs(a - b) / a)) <= 1e-5
    local_video, ray_video = (list(iter_video_frames(tmp_path / run / "walk_depth.mp4")) for run in ("local", "ray"))
    assert len(ray_video) == len(local_video) == 6 and ray_video[0].shape[:2] == local_video[0].shape[:2]
    for ray_frame, local_frame in zip(ray_video, local_video, strict=True):  # the same colours, up to the codec
        assert float(np.abs(ray_frame.astype(int) - local_frame.astype(int)).mean()) < 2.0
    rows = {Path(r["input"]).name: r for r in pq.read_table(tmp_path / "ray" / "manifest.parquet").to_pylist()}
    video = rows["walk.mp4"]
    assert (video["status"], video["height"], video["width"]) == ("done", 32, 48)
    assert video["outputs"] == [str(tmp_path / "ray" / "walk_frames" / name) for name in frames] + \
        [str(tmp_path / "ray" / "walk_depth.mp4")]  # fmt: skip
    depths = [np.load(tmp_path / "ray" / "walk_frames" / name) for name in frames]
    assert video["depth_min"] == pytest.approx(min(float(d.min()) for d in depths), rel=1e-6)
    assert video["depth_max"] == pytest.approx(max(float(d.max()) for d in depths), rel=1e-6)


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--model", "/no/such/model"], "no such model directory: /no/such/model"),
    (["--device", "gpu"], "--device gpu is not a device name"),
])  # fmt: skip
def test_a_model_or_device_the_driver_can_refuse_is_refused_before_the_pipeline(
    flags: list[str], fragment: str, scale_model_dir: Path, scale_photos: Path, tmp_path: Path
) -> None:
    argv = ["predict", scale_photos, "--out", tmp_path, "--engine", "ray", "--model", scale_model_dir, *flags]
    assert_user_error(run_cli(*argv), fragment)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_model_the_workers_cannot_load_is_each_inputs_reason(ray_cluster, scale_model_dir: Path,
                                                                scale_photos: Path, tmp_path: Path) -> None:
    result = run_cli("predict", scale_photos / "photo01.png", scale_photos / "photo02.png", "--model",
                     scale_model_dir, "--out", tmp_path, "--engine", "ray", "--workers", "1", "--device", "cuda")

    assert_user_error(result, "none of the 2 inputs could be predicted")
    assert result.err.count("cannot load the model on this Ray worker: device=cuda is not available here") == 2


def test_the_actor_pool_follows_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    from clip2depth.errors import ConfigError
    from clip2depth.inference.raydata import RayOptions, _layout, _local_cpus

    def pool(options: RayOptions, cpus: float, gpus: float) -> tuple[int, float]:
        layout = _layout(options, cpus, gpus)
        return layout.workers, layout.gpus_per_worker

    assert pool(RayOptions(), 8, 0) == (7, 0.0)  # CPUs less one, for reading and writing
    assert pool(RayOptions(), 16, 4) == (4, 1.0)  # one actor per GPU
    assert pool(RayOptions(gpus_per_worker=0.5), 16, 2) == (4, 0.5)
    assert pool(RayOptions(workers=2, gpus_per_worker=0), 16, 4) == (2, 0.0)
    assert pool(RayOptions(workers=3), 4, 0) == (3, 0.0)
    with pytest.raises(ConfigError, match=r"workers=3 with gpus_per_worker=1 need 3 GPUs; the Ray cluster has 2"):
        _layout(RayOptions(workers=3, gpus_per_worker=1), 16, 2)
    with pytest.raises(ConfigError, match=r"workers=4 would take every CPU of the Ray cluster \(4\).*at most 3"):
        _layout(RayOptions(workers=4), 4, 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert _local_cpus(RayOptions()) == 2  # one actor, one CPU left
    assert _local_cpus(RayOptions(workers=2)) == 3  # two actors on 2 cores: one more CPU is advertised
    with pytest.raises(ConfigError, match="workers=0 must be at least 1"):
        RayOptions(workers=0)
