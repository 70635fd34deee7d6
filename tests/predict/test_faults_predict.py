"""Faults a user can cause with ``clip2depth predict``: one ``error:`` line and exit 1, a listed skip, never a hang."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip2depth.inference.steps as steps_module
from clirun import assert_user_error, run_cli


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny model, saved as a model directory for ``--model``."""
    directory = tmp_path_factory.mktemp("model")
    tiny_model.save_pretrained(str(directory))
    return directory


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        # argparse types of the flag kit: the flag, the value, what it must be
        (["--max-side", "0"], ["argument --max-side: '0' is not a whole number of 1 or more"]),
        (["--max-side", "none"], ["--max-side", "'none'"]),  # --native replaces it
        (["--size", "0", "64"], ["argument --size: '0' is not a whole number of 1 or more"]),
        (["--max-side", "-32"], ["--max-side", "'-32'"]),
        (["--max-side", "big"], ["--max-side", "'big'"]),
        (["--max-side", "1.5"], ["--max-side", "'1.5'"]),
        (["--batch-size", "0"], ["argument --batch-size: '0' is not a whole number of 1 or more"]),
        (["--batch-size", "two"], ["--batch-size", "'two'"]),
        (["--depth-scale", "0"], ["argument --depth-scale: '0' is not a finite number above 0"]),
        (["--depth-scale", "nan"], ["--depth-scale", "'nan'"]),
        (["--vmax", "-1"], ["argument --vmax: '-1' is not a finite number of 0 or more"]),
        (["--skip-existing", "--overwrite"], ["--overwrite: not allowed with argument --skip-existing"]),
        # the library's errors name its parameters (fov_deg=0); the command line shows the flag that set them
        (["--fov", "0"], ["error: --fov 0 is not a field of view", "between 0 and 180"]),
        (["--fov", "180"], ["--fov 180 is not a field of view"]),
        (["--fx", "-1"], ["error: --fx -1 is not a focal length"]),
        (["--fx", "50", "--fov", "60"], ["--fov 60 and --fx 50 both set the focal length"]),
        (["--cy", "inf"], ["--cy inf is not a pixel coordinate"]),
        (["--vmin", "5", "--vmax", "2"], ["error: --vmin 5 must be smaller than --vmax 2"]),
        (["--vmin", "3", "--vmax", "3"], ["--vmin 3", "--vmax 3"]),
        (["--device", "cuda:x"], ["error: --device cuda:x is not a device name"]),
        (["--format", "png16,jpg"], ["'jpg'", "png16, npy, color, ply"]),
        (["--cmap", "no-such-map"], ["colour map", "no-such-map"]),
    ],
)
def test_bad_values_are_one_error_before_the_model_loads(
    flags: list[str], fragments: list[str], tmp_path: Path
) -> None:
    image = _image(tmp_path / "in" / "a.png")
    # a model directory that does not exist: reaching the model load would give a different error
    result = run_cli("predict", image, "--model", tmp_path / "no-model", "--out", tmp_path / "out", *flags)

    line = assert_user_error(result, *fragments)
    assert "fov_deg" not in line and "depth_scale" not in line and "device=" not in line  # no library names
    assert not (tmp_path / "out").exists()


def test_no_input_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("predict", tmp_path / "empty", tmp_path / "nope.jpg", "--model", "tiny", "--out", tmp_path / "o")

    assert_user_error(result, "no input matched", "folder contains no image", "nope.jpg: no such file or folder")


def test_symlink_loop_folder_predicts_each_image_once(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "shots"
    _image(root / "a.png", 1)
    _image(root / "deeper" / "b.png", 2)
    (root / "deeper" / "loop").symlink_to(root)  # shots/deeper/loop/deeper/loop/... forever
    (root / "twin").symlink_to(root / "deeper")  # a second way into the same folder

    by_folder = run_cli("-q", "predict", root, "--model", model_dir, "--out", tmp_path / "o1", "--format", "npy")
    by_glob = run_cli("-q", "predict", f"{root}/**/*.png", "--model", model_dir, "--out", tmp_path / "o2",
                      "--format", "npy")  # fmt: skip

    for result, out in ((by_folder, tmp_path / "o1"), (by_glob, tmp_path / "o2")):
        assert result.code == 0, result.err
        assert "2 of 2 inputs done; 2 files written" in result.out
        assert sorted(p.name for p in out.iterdir()) == ["a.npy", "deeper__b.npy"]


def test_bad_files_are_listed_and_the_rest_is_written(model_dir: Path, tmp_path: Path) -> None:
    good = _image(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "cut.png").write_bytes(good.read_bytes()[:60])  # truncated
    (tmp_path / "in" / "empty.jpg").write_bytes(b"")
    (tmp_path / "in" / "text.png").write_text("not an image")

    result = run_cli("-q", "predict", tmp_path / "in", "--model", model_dir, "--out", tmp_path / "out",
                     "--format", "npy")  # fmt: skip

    assert result.code == 0 and "Traceback" not in result.err
    assert "1 of 4 inputs done, 3 failed; 1 files written" in result.out
    lines = result.err.splitlines()
    listed = lines[lines.index("3 failed:") + 1:]  # after the header; warnings (random CLIP) may precede it
    assert [line.split(":")[0].strip() for line in listed] == [
        str(tmp_path / "in" / name) for name in ("cut.png", "empty.jpg", "text.png")
    ]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.npy"]


def test_a_folder_holding_outputs_of_these_inputs_is_not_silently_replaced(model_dir: Path, tmp_path: Path) -> None:
    image = _image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    first = run_cli("-q", "predict", image, "--model", model_dir, "--out", out, "--format", "npy")
    assert first.code == 0, first.err
    earlier = (out / "a.npy").read_bytes()
    (out / "a.npy").write_bytes(earlier[:-4] + b"mine")  # e.g. an earlier model's result

    refused = run_cli("-q", "predict", image, "--model", model_dir, "--out", out, "--format", "npy")
    assert_user_error(refused, "already holds 1 output", "--skip-existing", "--overwrite")
    assert (out / "a.npy").read_bytes().endswith(b"mine")

    kept = run_cli("-q", "predict", image, "--model", model_dir, "--out", out, "--format", "npy", "--skip-existing")
    assert kept.code == 0 and (out / "a.npy").read_bytes().endswith(b"mine")
    replaced = run_cli("-q", "predict", image, "--model", model_dir, "--out", out, "--format", "npy", "--overwrite")
    assert replaced.code == 0 and (out / "a.npy").read_bytes() == earlier
    # Other formats into the same folder write new files only: nothing to refuse.
    assert run_cli("-q", "predict", image, "--model", model_dir, "--out", out, "--format", "png16").code == 0
    both = run_cli("predict", image, "--model", model_dir, "--out", out, "--skip-existing", "--overwrite")
    assert_user_error(both, "--overwrite")


ALLOCATION_FAILURES = {
    "cpu": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                                "you tried to allocate 1073741824 bytes"),
    "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "numpy": lambda: MemoryError("Unable to allocate 1.00 GiB for an array"),
}


@pytest.mark.parametrize("failure", sorted(ALLOCATION_FAILURES))
def test_a_batch_out_of_memory_is_a_listed_skip_and_the_rest_is_written(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    small = _image(tmp_path / "in" / "small.png", 1)
    big = tmp_path / "in" / "big.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(big)
    real = steps_module.predict_batch

    def predict_batch(model, images, **kwargs):
        if images[0].shape[-1] > 16:  # the allocator refuses the big image's batch, as a real one would
            raise ALLOCATION_FAILURES[failure]()
        return real(model, images, **kwargs)

    monkeypatch.setattr(steps_module, "predict_batch", predict_batch)
    result = run_cli("-q", "predict", tmp_path / "in", "--model", model_dir, "--out", tmp_path / "out",
                     "--format", "npy")  # fmt: skip

    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert "1 of 2 inputs done, 1 failed (1 out of memory); 1 files written" in result.out
    # 32x48 at the tiny model's 192x256 pixel count: 5.66 x -> 181 x 272 -> 11 and 17 patches of 16
    assert f"  {big}: out of memory predicting 1 image(s) of 48×32 at 272×176 (batch_size=4)" in result.err
    assert "1 ran out of memory: a smaller --batch-size or --size may fit" in result.err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["small.npy"]
    assert np.load(tmp_path / "out" / "small.npy").shape == (16, 16)
    assert small.is_file()


def test_a_runtime_error_that_is_not_memory_keeps_its_traceback(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(model, images, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")  # a bug, not the user's input

    monkeypatch.setattr(steps_module, "predict_batch", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        run_cli("-q", "predict", _image(tmp_path / "a.png"), "--model", model_dir, "--out", tmp_path / "out")
