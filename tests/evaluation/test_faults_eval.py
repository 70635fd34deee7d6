"""Faults a user can cause in ``eval``, ``consistency`` and ``inspect-mirror``, through the real CLI:
each is one ``error:`` line (exit 1, no traceback) or a listed skip that leaves the rest evaluated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from clip2depth.data import build_dataset
from clip2depth.evaluation.protocol import EvalSettings, evaluate
from clirun import assert_user_error, run_cli

EVAL_SYNTHETIC = ["eval", "--model", "tiny", "--dataset", "synthetic", "--synthetic", "2",
                  "--synthetic-size", "64", "96", "--num-workers", "0", "--device", "cpu"]


def _write_pair(folder, stem: str, rng: np.random.Generator, size=(48, 64)) -> tuple[str, str]:
    rgb, depth = folder / f"{stem}.png", folder / f"{stem}_depth.png"
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(rgb)
    Image.fromarray(rng.integers(500, 5000, size, dtype=np.uint16)).save(depth)
    return rgb.name, depth.name


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--limit", "-1"], ["argument --limit: '-1' is not a whole number of 1 or more"]),
        (["--limit", "0"], ["--limit", "'0'"]),
        (["--input-size", "0", "64"], ["--input-size", "'0'"]),
        (["--input-size", "60", "90"], ["--input-size 60 90", "patch size"]),
        (["--input-box", "-1", "0", "32", "32"], ["--input-box", "'-1' is not a whole number of 0 or more"]),
        (["--input-box", "0", "0", "0", "32"], ["--input-box", "H and W must be at least 1, got 0 32"]),
        (["--num-workers", "-1"], ["--num-workers", "'-1'"]),
        (["--max-side", "0"], ["--max-side", "'0'", "whole number of 1 or more"]),
        (["--min-depth", "5", "--max-depth", "2"], ["--min-depth must be below --max-depth"]),
        (["--max-depth", "-1"], ["--max-depth", "'-1' is not a finite number above 0"]),
        (["--synthetic", "0"], ["--synthetic", "'0'"]),
        (["--depth-scale", "0"], ["--depth-scale", "'0'"]),
        (["--crop", "nyu_eigen"], ["--crop none"]),
        (["--dataset", "folder"], ["--list-file"]),
        (["--device", "tpu"], ["--device tpu is not a device name"]),  # the library's device=tpu, as a flag
    ],
)
def test_bad_numeric_values_are_one_error_line(tmp_path, flags, fragments):
    result = run_cli("-q", *EVAL_SYNTHETIC, "--out", tmp_path / "out", *flags)
    assert_user_error(result, *fragments)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_malformed_list_lines_are_reported_and_the_rest_evaluated(tmp_path):
    rng = np.random.default_rng(0)
    spaced = tmp_path / "my photos"
    spaced.mkdir()
    good = [_write_pair(tmp_path, f"img{i}", rng) for i in range(2)]
    rgb_sp, depth_sp = _write_pair(spaced, "room 1", rng)
    (tmp_path / "list.txt").write_text(
        "# rgb depth focal\n"
        f"{good[0][0]} {good[0][1]} 500\n"
        "just_one_field.png\n"
        f"{good[1][0]} {good[1][1]} five-hundred\n"
        "\n"
        f"my photos/{rgb_sp}\tmy photos/{depth_sp}\t500\n"
        f"{good[1][0]} {good[1][1]}\n"
    )
    out = tmp_path / "out"
    result = run_cli("-q", "eval", "--model", "tiny", "--dataset", "folder", "--list-file", tmp_path / "list.txt",
                     "--out", out, "--num-workers", "0", "--device", "cpu")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    data = json.loads((out / "metrics.json").read_text())
    assert data["count"] == 3 and data["bad_line_count"] == 2
    assert [b["line"] for b in data["bad_lines"]] == [3, 4]
    assert "five-hundred" in data["bad_lines"][1]["reason"]
    assert "2 malformed list lines" in result.out and "bad list line 3" in result.out
    names = [row.split(",")[0] for row in (out / "per_image.csv").read_text().splitlines()[1:]]
    assert "my photos_room 1" in names


def test_a_list_with_no_usable_line_is_refused_naming_the_format(tmp_path):
    (tmp_path / "list.txt").write_text("a.png\nb.png c.png d.png e.png\n")
    result = run_cli("-q", "eval", "--model", "tiny", "--dataset", "folder", "--list-file", tmp_path / "list.txt",
                     "--out", tmp_path / "out", "--num-workers", "0")
    assert_user_error(result, "no usable line", "line 1", "tabs")


def test_eval_refuses_to_replace_an_earlier_run_unless_told(tmp_path):
    out = tmp_path / "out"
    first = run_cli("-q", *EVAL_SYNTHETIC, "--out", out)
    assert first.code == 0, first.err
    before = (out / "metrics.json").read_bytes()
    assert_user_error(run_cli("-q", *EVAL_SYNTHETIC, "--out", out, "--seed", "1"), str(out), "--overwrite")
    assert (out / "metrics.json").read_bytes() == before
    again = run_cli("-q", *EVAL_SYNTHETIC, "--out", out, "--seed", "1", "--overwrite")
    assert again.code == 0, again.err
    assert (out / "metrics.json").read_bytes() != before


@pytest.mark.parametrize(
    ("argv", "existing"),
    [
        (["consistency", "--model", "tiny", "--synthetic", "2", "--synthetic-size", "32", "48"], "consistency.json"),
        (["inspect-mirror", "--model", "tiny", "--synthetic", "1", "--synthetic-size", "32", "48"], "tokens.md"),
    ],
)
def test_analysis_commands_refuse_a_folder_holding_their_outputs(tmp_path, argv, existing):
    (tmp_path / existing).write_text("earlier run")
    result = run_cli("-q", *argv, "--out", tmp_path, "--device", "cpu")
    assert_user_error(result, existing, "--overwrite")
    assert (tmp_path / existing).read_text() == "earlier run"


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--batch-size", "0"], ["--batch-size", "'0'"]),
        (["--max-side", "0"], ["--max-side", "'0'"]),
        (["--stride", "0"], ["--stride", "'0'"]),
        (["--synthetic-size", "0", "48"], ["--synthetic-size", "'0'"]),
        (["--tau", "3"], ["--tau", "'3' is not a number above 0 and at most 1"]),
        (["--depth-scale", "0"], ["--depth-scale", "'0'"]),
        (["--min-depth", "20", "--max-depth", "5"], ["--min-depth 20"]),
        (["--synthetic", "1"], ["--synthetic", "at least 2 frames"]),
    ],
)
def test_consistency_bad_values_are_one_error_line(tmp_path, flags, fragments):
    argv = ["-q", "consistency", "--model", "tiny", "--synthetic", "2", "--synthetic-size", "32", "48",
            "--out", tmp_path / "out", "--device", "cpu"]
    assert_user_error(run_cli(*argv, *flags), *fragments)


def test_inspect_mirror_bad_values_are_one_error_line(tmp_path):
    result = run_cli("-q", "inspect-mirror", "--model", "tiny", "--top-k", "0", "--out", tmp_path)
    assert_user_error(result, "--top-k", "'0'")


class _MemoryHungry(nn.Module):
    """Depth 2 m everywhere, but 'runs out of memory' on inputs with more than ``max_pixels`` pixels."""

    patch_size = 8

    def __init__(self, max_pixels: int) -> None:
        super().__init__()
        self.max_pixels = max_pixels
        self.register_buffer("depth", torch.tensor(2.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        if h * w > self.max_pixels:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return self.depth.expand(b, 1, h, w).clone()


class _Sizes(torch.utils.data.Dataset):
    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> dict:
        h, w = self.sizes[i]
        return {"image": torch.rand(3, h, w), "depth": torch.full((1, h, w), 4.0), "name": f"s{i}", "path": f"s{i}"}


def test_an_image_too_large_for_memory_is_a_listed_skip_and_max_side_avoids_it():
    dataset = _Sizes([(32, 48), (256, 384), (32, 48)])
    model = _MemoryHungry(max_pixels=64 * 64)
    result = evaluate(model, dataset, EvalSettings(crop=None), progress=False)
    assert result.count == 2 and len(result.failed) == 1
    assert "s1" in result.failed[0]["reason"] and "max_side=None" in result.failed[0]["reason"]
    assert result.failed[0]["out_of_memory"] is True
    shrunk = evaluate(model, dataset, EvalSettings(crop=None, max_side=64), progress=False)
    assert shrunk.count == 3 and not shrunk.failed
    assert shrunk.metrics["abs_rel"] == pytest.approx(0.5)  # depth resized back to the ground truth's size


def test_other_runtime_errors_still_surface():
    class Broken(_MemoryHungry):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        evaluate(Broken(0), _Sizes([(16, 16)]), EvalSettings(crop=None), progress=False)


def test_precision_reaches_the_forward_pass():
    seen: list[torch.dtype] = []

    class Recorder(_MemoryHungry):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            seen.append((images[:, :1].flatten(2) @ images[:, :1].flatten(2).transpose(1, 2)).dtype)
            return super().forward(images)

    dataset = build_dataset("synthetic", split="test", size=(32, 48), length=1)
    evaluate(Recorder(10**6), dataset, EvalSettings(crop=None, precision="bf16"), progress=False)
    evaluate(Recorder(10**6), dataset, EvalSettings(crop=None), progress=False)
    assert seen == [torch.bfloat16, torch.float32]


def test_a_run_where_every_image_fails_is_one_error_line_with_outputs_kept(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "list.txt").write_text("a.png a_depth.png\n")
    out = tmp_path / "out"
    result = run_cli("-q", "eval", "--model", "tiny", "--dataset", "folder", "--list-file", tmp_path / "list.txt",
                     "--out", out, "--num-workers", "0", "--device", "cpu")
    assert_user_error(result, "no image was evaluated", "1 failed")
    assert json.loads((out / "metrics.json").read_text())["failed_count"] == 1


def test_synthetic_sets_the_number_of_scenes(tmp_path):
    result = run_cli("-q", *EVAL_SYNTHETIC[:5], "--synthetic", "1", *EVAL_SYNTHETIC[7:], "--out", tmp_path)
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "metrics.json").read_text())["count"] == 1


def test_consistency_records_precision(tmp_path):
    result = run_cli("-q", "consistency", "--model", "tiny", "--synthetic", "2", "--synthetic-size", "32", "48",
                     "--out", tmp_path, "--device", "cpu", "--precision", "bf16")
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "consistency.json").read_text())["settings"]["precision"] == "bf16"


def test_save_png_into_a_folder_of_earlier_pngs_is_refused_unless_told(tmp_path):
    pngs = tmp_path / "pngs"
    first = run_cli("-q", *EVAL_SYNTHETIC, "--out", tmp_path / "a", "--save-png", pngs)
    assert first.code == 0, first.err
    written = sorted(p.name for p in pngs.rglob("*.png"))
    before = {p: p.read_bytes() for p in pngs.rglob("*.png")}
    again = run_cli("-q", *EVAL_SYNTHETIC, "--out", tmp_path / "b", "--save-png", pngs)
    assert_user_error(again, f"--save-png {pngs} already holds PNGs", "--overwrite")
    assert {p: p.read_bytes() for p in pngs.rglob("*.png")} == before and not (tmp_path / "b").exists()
    replaced = run_cli("-q", *EVAL_SYNTHETIC, "--out", tmp_path / "b", "--save-png", pngs, "--overwrite")
    assert replaced.code == 0 and sorted(p.name for p in pngs.rglob("*.png")) == written
    (tmp_path / "file").write_text("")
    assert_user_error(run_cli("-q", *EVAL_SYNTHETIC, "--out", tmp_path / "c", "--save-png", tmp_path / "file"),
                      "is an existing file")
