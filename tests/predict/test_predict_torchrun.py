"""``torchrun --nproc_per_node 2 -m clip2depth predict``: two gloo processes share one plan, write exactly what one
process writes, and rank 0 reports for both; after SIGTERM, ``--skip-existing`` computes only what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clip2depth.io.depth import load_depth_png16
from s3server import S3Server, free_port
from scalefixtures import FORMATS, STEMS, assert_same_outputs, make_slow_photos

TORCHRUN = Path(sys.executable).with_name("torchrun")

pq = pytest.importorskip("pyarrow.parquet", reason="Parquet needs pyarrow: pip install 'clip2depth[manifest]'")

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")


def _torchrun(*argv: object, nproc: int = 2) -> list[str]:
    return [str(TORCHRUN), "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1", "--master_port",
            str(free_port()), "-m", "clip2depth", "-q", "predict", *map(str, argv), "--device", "cpu"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_two_processes_write_what_one_process_writes_from_and_to_s3(
    s3: S3Server, scale_model_dir: Path, scale_photos: Path, local_reference: Path
) -> None:
    s3.client().create_bucket(Bucket="torchrun")
    s3.upload_folder(scale_photos, "torchrun", "in/")

    result = subprocess.run(_torchrun("s3://torchrun/in/", "--model", scale_model_dir, "--out", "s3://torchrun/out",
                                      "--format", FORMATS, "--batch-size", "1"),
                            env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip

    assert result.returncode == 0, result.stderr
    summary = "20 of 21 inputs done, 1 failed; 40 files written to s3://torchrun/out"
    assert result.stdout.count(summary) == 1, result.stdout  # rank 0 alone, for both processes
    assert result.stderr.count("s3://torchrun/in/broken.jpg: cannot read as an image") == 1
    written = {key[len("out/"):]: s3.get("torchrun", key) for key in s3.keys("torchrun", "out/")}
    assert_same_outputs({p.name: p.read_bytes() for p in local_reference.iterdir()}, written)
    rows = pq.read_table(__import__("io").BytesIO(written["manifest.parquet"])).to_pylist()
    assert [r["input"] for r in rows] == ["s3://torchrun/in/broken.jpg"] + [f"s3://torchrun/in/{s}.png" for s in STEMS]
    assert [r["status"] for r in rows] == ["failed"] + ["done"] * 20
    assert all(r["outputs"] == [f"s3://torchrun/out/{stem}.png", f"s3://torchrun/out/{stem}.npy"]
               for r, stem in zip(rows[1:], STEMS, strict=True))  # fmt: skip


def test_sigterm_then_skip_existing_computes_only_what_is_missing(scale_model_dir: Path, tmp_path: Path) -> None:
    stems = make_slow_photos(tmp_path / "photos", 40)
    out = tmp_path / "out"
    targets = {stem: [out / f"{stem}.png", out / f"{stem}.npy"] for stem in stems}
    argv = (tmp_path / "photos", "--model", scale_model_dir, "--out", out, "--format", FORMATS, "--batch-size", "1")

    run = subprocess.Popen(_torchrun(*argv), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while sum(all(t.exists() for t in ts) for ts in targets.values()) < 2:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no output within 300 s"
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=120)

    assert run.returncode != 0
    done = sorted(stem for stem, ts in targets.items() if all(t.exists() for t in ts))
    assert 2 <= len(done) < len(stems), f"the run finished {len(done)} of {len(stems)} inputs before SIGTERM"
    assert not (out / "manifest.parquet").exists()
    for path in out.iterdir():  # whatever has a final name is whole (writes are atomic)
        if path.suffix == ".npy":
            assert np.load(path).shape == (480, 640)
        elif not path.name.startswith("."):
            assert load_depth_png16(path).shape == (480, 640)
    print(f"{len(done)} of {len(stems)} inputs were done at SIGTERM")
    before = {t: (t.stat().st_ino, t.stat().st_mtime_ns) for stem in done for t in targets[stem]}

    again = subprocess.run(_torchrun(*argv, "--skip-existing"), env=_env(), capture_output=True, text=True,
                           timeout=600)  # fmt: skip

    assert again.returncode == 0, again.stderr
    assert f"40 of 40 inputs done ({len(done)} already done, skipped)" in again.stdout
    assert f"; {2 * (40 - len(done))} files written" in again.stdout
    assert {t: (t.stat().st_ino, t.stat().st_mtime_ns) for t in before} == before  # nothing that existed redone
    assert all(t.exists() for ts in targets.values() for t in ts)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [Path(r["input"]).stem for r in rows] == stems
    assert {Path(r["input"]).stem for r in rows if r["status"] == "skipped"} == set(done)
    assert all(r["status"] == "done" for r in rows if Path(r["input"]).stem not in done)


def test_shards_are_disjoint_cover_the_plan_and_keep_a_video_whole(tmp_path: Path) -> None:
    from clip2depth.inference.outputs import OutputOptions
    from clip2depth.inference.plan import plan_predictions
    from clip2depth.inference.torchrun import Shard, shard_plan

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "clip.mp4", "c.png", "d.png", "e.png", "f.png"):
        (folder / name).write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_color.png").write_bytes(b"x")
    plan = plan_predictions([folder, tmp_path / "missing"], tmp_path / "out", OutputOptions(formats="color"),
                            skip_existing=True)  # fmt: skip
    assert [job.path.name for job in plan.jobs] == ["b.png", "c.png", "clip.mp4", "d.png", "e.png", "f.png"]

    shards = [shard_plan(plan, Shard(rank, 4, rank % 2)) for rank in range(4)]

    assert [[job.path.name for job in s.jobs] for s in shards] == [["b.png", "e.png"], ["c.png", "f.png"],
                                                                   ["clip.mp4"], ["d.png"]]  # fmt: skip
    assert shards[0].skipped == plan.skipped and [j.path.name for j in plan.skipped] == ["a.png"]
    assert shards[0].refused == plan.refused and len(plan.refused) == 1
    assert all(not s.skipped and not s.refused for s in shards[1:])  # each reported once, by rank 0


def test_the_shard_comes_from_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from clip2depth.errors import ConfigError
    from clip2depth.inference.torchrun import Shard, current_shard, shard_device

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert current_shard() is None
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("RANK", "9")
    monkeypatch.setenv("LOCAL_RANK", "1")
    shard = current_shard()
    assert shard == Shard(rank=9, world=16, local_rank=1) and not shard.is_main
    assert shard_device("cuda", shard) == "cuda:1"  # this node's second GPU
    assert shard_device("cuda:0", shard) == "cuda:0" and shard_device("cpu", shard) == "cpu"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert shard_device("auto", shard) == "auto"
    monkeypatch.setenv("RANK", "16")
    with pytest.raises(ConfigError, match="RANK=16 must lie in 0..WORLD_SIZE-1"):
        current_shard()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="must be whole numbers"):
        current_shard()
