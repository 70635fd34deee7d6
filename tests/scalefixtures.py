"""Fixtures and helpers of the scale-out tests (torchrun, Ray, object storage, manifest); conftest imports the
fixtures, so each session-scoped one exists once: one S3 server and at most one Ray instance per test session.

The photos are 20 random images of two sizes and one corrupt file. The reference outputs come from the local
engine in one thread with ``--batch-size 1``: every engine that computes each image the same way (one image
at a time, one thread: torchrun's processes and Ray's actors run with one thread each) must write the very
same PNG16 bytes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clirun import run_cli
from s3server import S3Server

PHOTO_COUNT = 20
STEMS = [f"photo{i:02d}" for i in range(PHOTO_COUNT)]
SIZES = [(32, 48), (40, 32)]  # H, W: two sizes, so that batches mix and split by size
FORMATS = "png16,npy"


def photo_size(i: int) -> tuple[int, int]:
    return SIZES[1] if i % 3 == 0 else SIZES[0]


def make_photos(folder: Path) -> Path:
    """``folder`` holding ``photoNN.png`` (random pixels, two sizes) and ``broken.jpg`` (not an image)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i, stem in enumerate(STEMS):
        height, width = photo_size(i)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{stem}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def make_slow_photos(folder: Path, count: int) -> list[str]:
    """``count`` 480×640 photos (smooth, so the files stay small): about 0.1 s each for the tiny model."""
    folder.mkdir()
    rows, cols = np.mgrid[0:480, 0:640]
    stems = [f"big{i:02d}" for i in range(count)]
    for i, stem in enumerate(stems):
        rgb = np.stack([(rows + 7 * i) % 256, (cols + 3 * i) % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{stem}.png")
    return stems


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def output_names() -> list[str]:
    return sorted(f"{stem}{suffix}" for stem in STEMS for suffix in (".png", ".npy"))


def read_folder(folder: Path) -> dict[str, bytes]:
    """Every non-hidden file directly in ``folder``, by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def assert_same_outputs(reference: dict[str, bytes], other: dict[str, bytes]) -> None:
    """The same output names; PNG16 files byte for byte; ``.npy`` depth within 1e-6 relative."""
    names = output_names()
    assert sorted(n for n in other if n.endswith((".png", ".npy"))) == names
    for name in names:
        if name.endswith(".png"):
            assert other[name] == reference[name], name
        else:
            a, b = np.load(io.BytesIO(reference[name])), np.load(io.BytesIO(other[name]))
            assert a.shape == b.shape and a.dtype == b.dtype == np.float32, name
            assert float(np.max(np.abs(a - b) / np.abs(a))) <= 1e-6, name


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def scale_model_dir(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("scale-model")
    tiny_model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def scale_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photos(tmp_path_factory.mktemp("scale-photos") / "photos")


@pytest.fixture(scope="session")
def local_reference(scale_model_dir: Path, scale_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local engine's outputs of ``scale_photos`` (one thread, batch size 1)."""
    out = tmp_path_factory.mktemp("scale-reference")
    with single_thread():
        result = run_cli("-q", "predict", scale_photos, "--model", scale_model_dir, "--out", out, "--format", FORMATS,
                         "--batch-size", "1", "--device", "cpu")  # fmt: skip
    assert result.code == 0, result.err
    return out


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 server, with its endpoint and test credentials in the environment for the whole session
    (what s3fs and botocore read; subprocesses and Ray workers started later inherit them)."""
    pytest.importorskip("moto.server", reason="the S3 tests need moto's server (pip install 'moto[server]')")
    pytest.importorskip("s3fs", reason="s3:// needs s3fs (pip install 'clip2depth[storage]')")
    with S3Server() as server, pytest.MonkeyPatch.context() as patch:
        for key, value in server.env.items():
            patch.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(key, raising=False)
        yield server
        _forget_s3_filesystems()


def _forget_s3_filesystems() -> None:
    """Drop fsspec's cached S3 filesystems (they keep the credentials and endpoint they were made with)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def ray_cluster(s3: S3Server) -> Iterator[None]:
    """One local Ray instance for the session, started the way ``predict --engine ray`` starts one for two
    workers (3 logical CPUs: two actors, and room for the read and write tasks); shut down at the end."""
    from clip2depth.inference.raydata import RayOptions, ray_session

    with ray_session(RayOptions(workers=2)):
        yield
