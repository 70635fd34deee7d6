"""The full demo (about 70 s on 2 CPU cores): `pytest -m slow tests/training/test_demo_slow.py`."""

from __future__ import annotations

import json

import pytest

from clip2depth.cli import main


@pytest.mark.slow
def test_demo_beats_half_the_mean_depth_baseline(tmp_path):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["abs_rel"] <= 0.5 * summary["baseline"]["abs_rel"]
