"""An output folder that holds an earlier run's results is refused unless the user says otherwise."""

from __future__ import annotations

import pytest

from clip2depth.errors import ConfigError
from clip2depth.io.outputs import claim_output_dir


def test_new_or_unrelated_folder_is_used_as_it_is(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert claim_output_dir(tmp_path / "new", ["metrics.json"]).is_dir()
    assert claim_output_dir(tmp_path, ["metrics.json"]) == tmp_path
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_existing_outputs_are_refused_with_the_flags_that_decide(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "log.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"--resume to continue that run, or --overwrite") as info:
        claim_output_dir(tmp_path, ["log.jsonl", "best", "last"], resumable=True)
    assert "log.jsonl" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(ConfigError, match=r"pass --overwrite"):
        claim_output_dir(tmp_path, ["best"])
    assert (tmp_path / "best").is_dir() and (tmp_path / "log.jsonl").exists()


def test_overwrite_removes_only_the_named_outputs(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "keep.txt").write_text("mine")
    claim_output_dir(tmp_path, ["best", "metrics.json", "last"], overwrite=True)
    assert not (tmp_path / "best").exists() and not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(ConfigError, match="is an existing file"):
        claim_output_dir(tmp_path / "out", ["metrics.json"])


def test_progress_bars_stay_out_of_pipes_and_obey_the_global_switch(capsys):
    from clip2depth.io.progress import progress, set_progress

    assert list(progress(range(3), desc="x")) == [0, 1, 2]
    assert "\r" not in capsys.readouterr().err  # stderr is captured, not a terminal
    set_progress(False)
    try:
        assert progress(range(2)).disable
    finally:
        set_progress(True)
    assert progress(range(2), enabled=False).disable


def test_file_digest_matches_hashlib_on_a_file_larger_than_one_block(tmp_path):
    import hashlib

    from clip2depth.io.digest import file_digest

    data = bytes(range(256)) * 5000  # 1.28 MB: more than one read block
    (tmp_path / "f.bin").write_bytes(data)
    assert file_digest(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()
    assert file_digest(tmp_path / "f.bin", "md5") == hashlib.md5(data).hexdigest()


def test_read_json_object_treats_a_damaged_cache_as_missing(tmp_path, caplog):
    import logging

    from clip2depth.io.atomic import atomic_write_json, read_json_object

    caplog.set_level(logging.WARNING, logger="clip2depth")
    path = tmp_path / "metrics.json"
    assert read_json_object(path) is None
    atomic_write_json(path, {"count": 3})
    assert read_json_object(path) == {"count": 3}
    path.write_text('{"count": ')  # truncated
    assert read_json_object(path) is None and "unreadable" in caplog.text
    path.write_text("[1, 2]")
    assert read_json_object(path) is None


def test_a_log_cut_off_mid_line_still_reads(tmp_path):
    from clip2depth.reporting.report import read_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    assert [r["step"] for r in read_log(log)] == [1, 2]
