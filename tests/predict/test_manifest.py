"""``predict --manifest``: one row per input, whose values are those of the files written; a bad input is a row
with its error; the rows of an earlier run carry over to the inputs ``--skip-existing`` leaves alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from clip2depth.inference.manifest import COLUMNS, carry_over, decode, encode
from clip2depth.inference.plan import InputRecord
from clirun import assert_user_error, run_cli
from scalefixtures import STEMS, photo_size

pq = pytest.importorskip("pyarrow.parquet", reason="Parquet needs pyarrow: pip install 'clip2depth[manifest]'")


def _predict(*argv: object):
    return run_cli("-q", "predict", *argv, "--format", "png16,npy", "--device", "cpu")


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", ["manifest.parquet", "run.jsonl"])
def test_one_row_per_input_with_the_values_of_its_outputs(
    name: str, scale_model_dir: Path, scale_photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _predict(scale_photos, "--model", scale_model_dir, "--out", out, "--manifest", tmp_path / name)

    assert result.code == 0, result.err
    assert "20 of 21 inputs done, 1 failed" in result.out
    rows = _rows(tmp_path / name)
    assert [list(row) for row in rows] == [list(COLUMNS)] * 21
    assert [row["input"] for row in rows] == [str(scale_photos / "broken.jpg")] + \
        [str(scale_photos / f"{stem}.png") for stem in STEMS]  # fmt: skip
    broken = rows[0]
    assert broken["status"] == "failed" and broken["outputs"] == []
    assert broken["error"].startswith("cannot read as an image (")
    assert [broken[k] for k in ("height", "width", "depth_min", "depth_median", "depth_max", "seconds")] == [None] * 6
    for i, (stem, row) in enumerate(zip(STEMS, rows[1:], strict=True)):
        depth = np.load(out / f"{stem}.npy")
        assert row["status"] == "done" and row["error"] is None
        assert row["outputs"] == [str(out / f"{stem}.png"), str(out / f"{stem}.npy")]
        assert (row["height"], row["width"]) == depth.shape == photo_size(i)
        assert row["depth_min"] == pytest.approx(float(depth.min()), rel=1e-6)
        assert row["depth_median"] == pytest.approx(float(np.median(depth)), rel=1e-6)
        assert row["depth_max"] == pytest.approx(float(depth.max()), rel=1e-6)
        assert 0 < row["seconds"] < 60


def test_skip_existing_carries_the_earlier_rows_and_a_manifest_is_not_replaced_silently(
    scale_model_dir: Path, scale_photos: Path, tmp_path: Path
) -> None:
    out, manifest = tmp_path / "out", tmp_path / "out" / "manifest.parquet"
    first = _predict(*[scale_photos / f"photo0{i}.png" for i in range(3)], "--model", scale_model_dir, "--out", out,
                     "--manifest", manifest)  # fmt: skip
    assert first.code == 0, first.err
    earlier = {row["input"]: row for row in _rows(manifest)}

    refused = run_cli("predict", scale_photos / "photo05.png", "--model", scale_model_dir, "--out", out,
                      "--manifest", manifest)  # fmt: skip
    assert_user_error(refused, f"{manifest} is the manifest of an earlier run", "--skip-existing", "--overwrite")

    again = _predict(*[scale_photos / f"photo0{i}.png" for i in range(5)], "--model", scale_model_dir, "--out", out,
                     "--manifest", manifest, "--skip-existing")  # fmt: skip
    assert "5 of 5 inputs done (3 already done, skipped); 4 files written" in again.out
    rows = _rows(manifest)
    assert [row["status"] for row in rows] == ["skipped"] * 3 + ["done"] * 2
    for row in rows[:3]:
        kept = {k: v for k, v in earlier[row["input"]].items() if k not in ("status", "seconds")}
        assert {k: v for k, v in row.items() if k not in ("status", "seconds")} == kept
        assert row["seconds"] is None
    replaced = _predict(scale_photos / "photo05.png", "--model", scale_model_dir, "--out", out, "--manifest", manifest,
                        "--overwrite")  # fmt: skip
    assert replaced.code == 0, replaced.err
    assert [row["input"] for row in _rows(manifest)] == [str(scale_photos / "photo05.png")]


def test_carry_over_takes_only_finished_rows_of_skipped_inputs() -> None:
    records = [InputRecord(0, "a.png", "skipped"), InputRecord(1, "b.png", "skipped"), InputRecord(2, "c.png", "done",
               height=2, width=3, depth_min=1.0, depth_median=2.0, depth_max=3.0, seconds=0.5)]  # fmt: skip
    previous = [{"input": "a.png", "status": "done", "outputs": ["o/a.png"], "height": 4, "width": 5, "depth_min": 0.5,
                 "depth_median": 1.5, "depth_max": 2.5, "seconds": 9.0, "error": None},
                {"input": "b.png", "status": "failed", "outputs": [], "height": None, "width": None,
                 "depth_min": None, "depth_median": None, "depth_max": None, "seconds": None, "error": "bad"},
                {"input": "c.png", "status": "done", "outputs": [], "height": 9, "width": 9, "depth_min": 9.0,
                 "depth_median": 9.0, "depth_max": 9.0, "seconds": 9.0, "error": None}]  # fmt: skip
    a, b, c = carry_over(records, previous)
    assert (a.status, a.outputs, a.height, a.width, a.depth_min, a.depth_median, a.depth_max, a.seconds) == \
        ("skipped", (Path("o/a.png"),), 4, 5, 0.5, 1.5, 2.5, None)  # fmt: skip
    assert b == records[1] and c == records[2]  # a failed row is no result; a new result is not replaced


@pytest.mark.parametrize("name", ["m.parquet", "m.jsonl"])
def test_rows_survive_encoding(name: str) -> None:
    records = [InputRecord(0, "s3://b/x.jpg", "done", outputs=("s3://b/o/x.png",), height=1, width=2, depth_min=0.25,
                           depth_median=0.5, depth_max=1e3, seconds=1.5),
               InputRecord(1, "y.jpg", "out_of_memory", height=7, width=8, error="out of memory predicting ..."),
               InputRecord(-1, "z/*.png", "failed", error="pattern matches no image or video files")]  # fmt: skip
    rows = decode(encode(records, name), name)
    assert rows == [{"input": "s3://b/x.jpg", "outputs": ["s3://b/o/x.png"], "height": 1, "width": 2, "depth_min": 0.25,
                     "depth_median": 0.5, "depth_max": 1000.0, "seconds": 1.5, "status": "done", "error": None},
                    {"input": "y.jpg", "outputs": [], "height": 7, "width": 8, "depth_min": None, "depth_median": None,
                     "depth_max": None, "seconds": None, "status": "out_of_memory",
                     "error": "out of memory predicting ..."},
                    {"input": "z/*.png", "outputs": [], "height": None, "width": None, "depth_min": None,
                     "depth_median": None, "depth_max": None, "seconds": None, "status": "failed",
                     "error": "pattern matches no image or video files"}]  # fmt: skip


def test_a_manifest_name_without_a_format_is_refused_before_the_model_loads(
    scale_model_dir: Path, scale_photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", tmp_path, "--manifest",
                     tmp_path / "rows.csv")  # fmt: skip
    assert_user_error(result, f"--manifest {tmp_path / 'rows.csv'} must end in .parquet or .jsonl")

    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", tmp_path / "out", "--manifest",
                     tmp_path)  # fmt: skip
    assert_user_error(result, f"--manifest {tmp_path} is a folder", "manifest.parquet")
    (tmp_path / "file").write_text("x")
    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", tmp_path / "out", "--manifest",
                     tmp_path / "file" / "m.jsonl")  # fmt: skip
    assert_user_error(result, f"the manifest's folder {tmp_path / 'file'} is an existing file")
    (tmp_path / "file").unlink()

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where the manifest extra is not installed
    result = run_cli("predict", scale_photos, "--model", scale_model_dir, "--out", tmp_path, "--manifest",
                     tmp_path / "rows.parquet")  # fmt: skip
    assert_user_error(result, "Parquet needs pyarrow", "pip install 'clip2depth[manifest]'", ".jsonl")
    assert not any(tmp_path.iterdir())
