"""benchmarks/peers.py at tiny sizes: the section it writes has every row, ratios that follow from its times,
GFLOPs equal to the counter, and the README table between its markers. Timings themselves are not checked."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import peers  # noqa: E402

import clip2depth  # noqa: E402
from clip2depth.models.profiling import count_flops, forward_flops  # noqa: E402


def _table(section: str, header_start: str) -> list[list[str]]:
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("peers")
    report, readme = folder / "BENCHMARKS.md", folder / "README.md"
    report.write_text("# Benchmarks\n\n<!-- bench:cpu-1threads -->\nkept\n<!-- /bench:cpu-1threads -->\n")
    readme.write_text(f"intro\n\n{peers.README_BEGIN}\nold table\n{peers.README_END}\n\nrest\n")
    threads = torch.get_num_threads()
    try:
        assert peers.main(["--tiny", "--quick", "--photo", "64", "96", "--crop", "64", "96", "--threads", "1",
                           "--out", str(report), "--readme", str(readme)]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return report.read_text(), readme.read_text()


def test_section_has_every_model_and_keeps_other_sections(written) -> None:
    report, _ = written
    assert "<!-- bench:cpu-1threads -->\nkept\n" in report
    assert report.count("## Against other depth models") == 1
    rows = _table(report, "| model |")
    assert [r[0] for r in rows] == ["clip2depth tiny", "clip2depth tiny-mobileclip", "DepthCLIP RN50 (zero-shot)",
                                    "Depth Anything V2 Small (tiny config)", "Depth Anything V2 Base (tiny config)"]
    assert rows[0][6] == "1.00"  # ours against itself
    assert rows[2][2] == "0"  # DepthCLIP trains nothing
    assert rows[3][3] == "518×784"  # Depth Anything's processor size: short side 518, multiples of 14
    train = _table(report, "| case |")
    assert [r[0] for r in train] == list(peers.TRAIN_CASES.values())
    assert [r[2] for r in train] == ["64×96", "70×98", "70×98"]  # ours' patch multiple; DA's multiples of 14
    assert train[1][5] == "1.00"


def test_ratios_follow_from_the_times(written) -> None:
    report, _ = written
    rows = _table(report, "| model |")
    ours = float(rows[0][5])
    for row in rows:  # one round: the ratio is the time over ours (both printed rounded)
        seconds, ratio = float(row[5]), float(row[6])
        assert ratio == pytest.approx(seconds / ours, rel=0.05, abs=0.02)
        assert float(row[7]) == pytest.approx(float(row[4]) / seconds, rel=0.01)  # GFLOP/s
    train = _table(report, "| case |")
    da = float(train[1][4])
    for row in train:
        assert float(row[5]) == pytest.approx(float(row[4]) / da, rel=0.05, abs=0.02)
        if row[6] != "n/a":  # Linux: memory ratio from the memory column
            assert float(row[7]) == pytest.approx(float(row[6].replace(",", "")) / float(train[1][6].replace(",", "")),
                                                  rel=0.05, abs=0.02)  # fmt: skip
    assert float(train[2][3]) < float(train[1][3])  # a frozen encoder skips its backward pass


def test_gflops_are_the_counters(written) -> None:
    report, _ = written
    rows = {r[0]: r for r in _table(report, "| model |")}
    with torch.no_grad():
        tiny = clip2depth.create_model("tiny")
        assert float(rows["clip2depth tiny"][4]) == pytest.approx(count_flops(tiny, 64, 96)["per_image"], abs=0.006)
        da = peers.build_depth_anything("tiny")
        expected = forward_flops(lambda: da(torch.rand(1, 3, *peers.depth_anything_size(64, 96)))) / 1e9
    assert float(rows["Depth Anything V2 Small (tiny config)"][4]) == pytest.approx(expected, abs=0.006)
    assert "counts" in report and "`clip2depth info`" in report  # the cross-check line for ours


def test_readme_table_replaces_the_old_one_and_links_the_report(written) -> None:
    _, readme = written
    assert readme.startswith("intro\n\n" + peers.README_BEGIN) and readme.endswith(peers.README_END + "\n\nrest\n")
    assert "old table" not in readme
    assert "BENCHMARKS.md#against-other-depth-models" in readme
    assert len(re.findall(r"^\| (clip2depth|DepthCLIP|Depth Anything)", readme, re.MULTILINE)) == 5


def test_processing_size_follows_depth_anythings_processor() -> None:
    assert peers.depth_anything_size(480, 640) == (518, 686)
    assert peers.depth_anything_size(640, 480) == (686, 518)
    assert peers.depth_anything_size(3000, 4000) == (518, 686)
