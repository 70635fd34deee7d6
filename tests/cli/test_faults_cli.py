"""Faults every command shares, through the real CLI: an output folder that is a file or cannot be written, an
input folder that cannot be read, a host that is not an address, a file name at the length limit, an allocation
that fails. Each is one ``error:`` line naming the path or flag (exit 1, no traceback), before any model is built."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clip2depth.models.profiling as profiling
from clip2depth.app.predict import predict_image, predict_video
from clip2depth.cli.main import describe_out_of_memory
from clip2depth.errors import DataError, is_out_of_memory
from clip2depth.io.atomic import NAME_MAX, atomic_write_bytes, temporary_name
from clip2depth.models.model import Clip2Depth
from clirun import assert_user_error, run_cli

SRC = Path(__file__).resolve().parents[2] / "src"


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def no_model(monkeypatch):
    """Building a model fails the test: the fault must be reported before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the output folder was checked")

    monkeypatch.setattr(Clip2Depth, "__init__", refuse)


def _commands(out: Path, image: Path) -> dict[str, list[object]]:
    """Every command that writes into a folder, with ``out`` as that folder."""
    return {
        "predict": ["predict", image, "--model", "tiny", "--out", out],
        "train": ["train", "--model", "tiny", "--out", out],
        "train --overwrite": ["train", "--model", "tiny", "--out", out, "--overwrite"],
        "eval": ["eval", "--model", "tiny", "--dataset", "synthetic", "--synthetic", "1", "--out", out],
        "eval --save-png": ["eval", "--model", "tiny", "--dataset", "synthetic", "--synthetic", "1",
                            "--out", out.parent.parent / "eval-out", "--save-png", out],
        "ablate": ["ablate", "--model", "tiny", "--out", out],
        "demo": ["demo", "--out", out],
        "consistency": ["consistency", "--model", "tiny", "--synthetic", "3", "--out", out],
        "inspect-mirror": ["inspect-mirror", "--model", "tiny", "--synthetic", "2", "--out", out],
        "export": ["export", "--model", "tiny", "--onnx", out / "model.onnx"],
        "reproduce": ["reproduce", "nyu", "--model", "tiny", "--out", out],
        "reproduce --dry-run": ["reproduce", "nyu", "--model", "tiny", "--out", out, "--dry-run"],
        "data get --root": ["data", "get", "nyu", "--root", out, "--dry-run"],
    }


COMMANDS = list(_commands(Path("o"), Path("i")))


@pytest.mark.parametrize("command", COMMANDS)
def test_output_folder_that_is_a_file_is_one_error_naming_it(command, tmp_path, no_model):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    result = run_cli(*_commands(taken, _image(tmp_path / "in.png"))[command])

    line = assert_user_error(result, str(taken), "is an existing file, not a folder")
    assert "File exists" not in line and "Not a directory" not in line
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("command", COMMANDS)
def test_output_folder_below_a_file_is_one_error_naming_it(command, tmp_path, no_model):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    result = run_cli(*_commands(taken / "sub", _image(tmp_path / "in.png"))[command])

    line = assert_user_error(result, str(taken), "is a file, not a folder")
    assert "Not a directory" not in line and "Errno" not in line


def _as_user_without_override(*argv: object, cwd: Path) -> subprocess.CompletedProcess:
    """``clip2depth ARGV`` in a new process that file permissions bind: as root (where they would not) with
    the capabilities that override them dropped (setpriv), otherwise as this user."""
    command = [sys.executable, "-m", "clip2depth", *map(str, argv)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be made to bind")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _one_error(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_output_folder_inside_a_read_only_folder_is_one_error_before_the_model(tmp_path):
    image = _image(tmp_path / "in.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        proc = _as_user_without_override("predict", image, "--model", "no-such-model-dir/", "--out",
                                         locked / "out", cwd=tmp_path)
    finally:
        locked.chmod(0o755)
    line = _one_error(proc)  # the model directory does not exist: the folder was refused first
    assert f"no permission to write in {locked}" in line and "choose a folder you can write to" in line
    assert not (locked / "out").exists()


def test_unreadable_input_folder_says_it_cannot_be_read(tmp_path):
    shots = tmp_path / "shots"
    _image(shots / "a.png")
    shots.chmod(0o000)
    try:
        proc = _as_user_without_override("predict", shots, "--model", "tiny", "--out", tmp_path / "out",
                                         cwd=tmp_path)
    finally:
        shots.chmod(0o755)
    line = _one_error(proc)
    assert f"{shots}: folder cannot be read (Permission denied); check its permissions" in line
    assert "no image" not in line


def test_unreadable_input_folder_in_process(tmp_path, monkeypatch):
    """The same rule where permissions cannot be made to bind: listing the folder fails as it would."""
    shots = tmp_path / "shots"
    _image(shots / "a.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == shots:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run_cli("predict", shots, "--model", "tiny", "--out", tmp_path / "out")
    line = assert_user_error(result, f"{shots}: folder cannot be read (Permission denied)")
    assert "contains no image" not in line
    result = run_cli("predict", f"{shots}/*.png", "--model", "tiny", "--out", tmp_path / "out")
    assert_user_error(result, f"folder {shots} cannot be read (Permission denied)")


# ------------------------------------------------------------------------------------------------ app address


@pytest.mark.parametrize("host", ["999.1.1.1", "no-such-host.invalid"])
def test_app_host_that_does_not_resolve_is_blamed_on_the_host(host, tmp_path):
    pytest.importorskip("gradio")
    result = run_cli("app", "--model", tmp_path / "no-model", "--host", host, "--port", "7861")

    line = assert_user_error(result, f"--host {host} is neither an IP address nor a host name")
    assert "--port" not in line and "no-model" not in line  # checked before the model loads


def test_app_host_of_another_machine_is_blamed_on_the_host(tmp_path):
    pytest.importorskip("gradio")
    result = run_cli("app", "--model", tmp_path / "no-model", "--host", "192.0.2.1")  # TEST-NET-1: never ours

    line = assert_user_error(result, "--host 192.0.2.1 is not an address of this machine")
    assert "--port" not in line


def test_app_port_in_use_is_blamed_on_the_port(tmp_path):
    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("app", "--model", tmp_path / "no-model", "--port", port)
    line = assert_user_error(result, f"--port {port} is in use on 127.0.0.1:{port}", "choose another port")
    assert "--host" not in line


# ------------------------------------------------------------------------------------------------ app names


def test_app_messages_name_the_upload_not_the_servers_copy(tiny_model, tmp_path):
    server_copy = tmp_path / "gradio" / "3f9a0c" / "upload.jpg"
    whole = _image(tmp_path / "whole.jpg").read_bytes()
    server_copy.parent.mkdir(parents=True)
    server_copy.write_bytes(whole[: len(whole) // 3])  # a truncated JPEG: the header reads, the pixels do not

    with pytest.raises(DataError) as caught:
        predict_image(tiny_model, server_copy, tmp_path / "out", name="C:\\fakepath\\Holiday 2024.jpg")
    message = str(caught.value)
    assert message.startswith("Holiday 2024.jpg cannot be read as an image"), message
    assert str(tmp_path) not in message and "3f9a0c" not in message


def test_app_video_messages_name_the_upload(tiny_model, tmp_path):
    server_copy = tmp_path / "gradio" / "77aa" / "clip.mp4"
    server_copy.parent.mkdir(parents=True)
    server_copy.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())

    with pytest.raises(DataError) as caught:
        predict_video(tiny_model, server_copy, tmp_path / "out", max_side=64, name="beach.mp4")
    assert "beach.mp4" in str(caught.value) and str(tmp_path) not in str(caught.value)


def test_app_download_names_come_from_the_upload_and_fit_any_length(tiny_model, tmp_path):
    server_copy = _image(tmp_path / "gradio" / "ab" / "image.png")
    result = predict_image(tiny_model, server_copy, tmp_path / "out", name="k" * 250 + ".png")

    for path in (result.png16, result.npy, result.ply, result.view):
        assert path.is_file() and path.name.startswith("k" * 100 + "_depth")


# ------------------------------------------------------------------------------------------------ name lengths


@pytest.mark.parametrize("name", ["d" * 251 + ".png", "é" * 125 + ".npy", "x" * 255])
def test_temporary_names_fit_when_the_final_name_fits(name):
    assert len(name.encode()) <= NAME_MAX
    suffix = Path(name).suffix
    temporary = temporary_name(name, suffix=suffix)

    assert len(temporary.encode()) <= NAME_MAX
    assert temporary.startswith(".") and temporary.endswith(".tmp" + suffix)
    assert temporary_name(name, suffix=suffix) != temporary  # unique per write


def test_atomic_write_to_a_name_at_the_limit(tmp_path):
    target = tmp_path / ("n" * (NAME_MAX - 4) + ".npy")
    atomic_write_bytes(target, b"depth")

    assert target.read_bytes() == b"depth"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left behind


def test_predict_a_240_character_file_name_in_every_format(tmp_path):
    image = _image(tmp_path / "in" / ("p" * 240 + ".png"))
    result = run_cli("predict", image, "--model", "tiny", "--out", tmp_path / "out", "--format", "png16,npy,color,ply")

    assert result.code == 0, result.err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted("p" * 240 + s for s in (".npy", ".ply", ".png", "_camera.json", "_color.png"))


def test_predict_refuses_an_input_whose_output_name_cannot_exist_and_writes_none_of_its_files(tmp_path):
    image = _image(tmp_path / "in" / ("q" * 246 + ".png"))  # q…q_color.png: 256 bytes
    result = run_cli("predict", image, "--model", "tiny", "--out", tmp_path / "out", "--format", "png16,color")

    assert_user_error(result, "none of the 1 inputs could be predicted")
    assert f"its output name {'q' * 246}_color.png is longer than the 255 bytes a file name may have" in result.err
    assert not (tmp_path / "out").exists()  # not the PNG either: an input's outputs are all written or none


# ------------------------------------------------------------------------------------------------ memory


def test_cpu_allocation_failure_is_one_error_about_memory_with_the_flag_to_change(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 120000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(profiling, "count_flops", fail)
    result = run_cli("info", "--model", "tiny", "--size", "100000", "100000")
    assert_user_error(result, "error: out of memory (111.8 GiB requested): use smaller values of --size, or a "
                              "device with more memory")


def test_size_too_large_to_count_its_bytes_is_out_of_memory():
    result = run_cli("info", "--model", "tiny", "--size", "1000000000", "1000000000")

    assert_user_error(result, "out of memory (Storage size calculation overflowed", "smaller values of --size")


def test_memory_error_of_a_dataloader_worker_is_out_of_memory():
    """torch raises a worker's MemoryError again as a RuntimeError that carries the worker's traceback."""
    exc = RuntimeError("Caught MemoryError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                       "last):\n  File \"x.py\", line 1, in f\nnumpy._core._exceptions._ArrayMemoryError: Unable to "
                       "allocate 37.3 GiB for an array with shape (100000, 100000) and data type float32\n")
    assert is_out_of_memory(exc)
    assert describe_out_of_memory(exc, None) == (
        "out of memory (Unable to allocate 37.3 GiB for an array with shape (100000, 100000) and data type float32): "
        "use smaller inputs, or a device with more memory"
    )


@pytest.mark.parametrize(("make", "says"), [(None, "does not exist"), ("file", "is a file, not a run folder")])
def test_train_resume_of_a_missing_folder_or_a_file_says_which(make, says, tmp_path):
    run = tmp_path / "run"
    if make == "file":
        run.write_text("x")
    assert_user_error(run_cli("train", "--resume", run), f"--resume {run} {says}", "the folder of an earlier run")


def test_consistency_of_a_single_frame_is_refused_not_nan(tmp_path):
    """A photo passed as --video, or a folder of one image, has no change to measure."""
    frames = tmp_path / "frames"
    _image(frames / "only.png")
    for source in (["--video", _image(tmp_path / "photo.png")], ["--frames", frames]):
        result = run_cli("consistency", "--model", "tiny", *source, "--out", tmp_path / "out", "--overwrite")
        assert_user_error(result, "the sequence has 1 frame(s)", "need at least 2")
        assert not (tmp_path / "out" / "consistency.json").exists()


def test_consistency_depth_dir_that_is_a_file_says_so(tmp_path):
    result = run_cli("consistency", "--model", "tiny", "--synthetic", "3", "--depth-dir", _image(tmp_path / "d.png"),
                     "--out", tmp_path / "out")
    assert_user_error(result, f"--depth-dir {tmp_path / 'd.png'}: is a file, not a folder")


def test_unreadable_image_is_a_permission_problem_not_a_corrupt_file(tmp_path, monkeypatch):
    image = _image(tmp_path / "locked.png")
    real_open = Image.open

    def locked(fp, *args, **kwargs):
        if Path(fp) == image:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", locked)
    result = run_cli("predict", image, "--model", "tiny", "--out", tmp_path / "out")
    assert_user_error(result, "none of the 1 inputs could be predicted")
    assert f"{image}: no permission to read it (Permission denied); check its permissions" in result.err
    assert "complete image file" not in result.err


def test_sigterm_stops_predict_as_ctrl_c_does_and_leaves_no_temporary_file(tmp_path):
    """A scheduler's SIGTERM mid-run: exit 130 with "interrupted", every finished output whole, nothing hidden
    left behind, and ``--skip-existing`` completes the rest."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(photos / f"p{i:02d}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clip2depth", "-q", "predict", photos, "--model", "tiny", "--out", out,
               "--format", "png16,npy", "--native", "--batch-size", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(list(map(str, command)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not len(list(out.glob("*.npy"))) >= 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, (proc.returncode, err)
    finished = sorted(out.glob("*.npy"))
    assert 2 <= len(finished) < 40, "SIGTERM did not land mid-run"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    for npy in finished:
        assert np.load(npy).shape == (96, 128)  # whole files only
    again = subprocess.run(list(map(str, [*command, "--skip-existing"])), env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob("*.npy"))) == 40
