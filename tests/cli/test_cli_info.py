"""``clip2depth info`` and the CLI's error handling."""

from __future__ import annotations

import json

import open_clip

from clip2depth.cli import main


def test_info_json_reports_paper_preset_counts(capsys):
    assert main(["-q", "info", "--model", "clip2depth-vit-b-16", "--size", "224", "224", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    reference = open_clip.create_model("ViT-B-16")  # logit_scale is the one CLIP tensor we never hold
    assert info["frozen"] == sum(p.numel() for p in reference.parameters()) - 1 == 149_620_736
    assert info["trainable"] == 1_159_777
    assert info["modules"]["prompt_encoder"]["trainable"] == 64 * 512
    assert info["modules"]["decoder"]["trainable"] == info["trainable"] - 64 * 512
    # 9 ViT-B/16 blocks at 196+1 tokens: 24·N·d² + 4·N²·d each, plus the patch stem
    n, d = 197, 768
    blocks = 9 * (24 * n * d * d + 4 * n * n * d) / 1e9
    assert abs(info["gflops"]["image_encoder"] - blocks) / blocks < 0.05
    assert 0 < info["gflops"]["decoder"] < 1


def test_info_table_for_tiny(capsys):
    assert main(["-q", "info", "--model", "tiny", "--size", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert "prompt_encoder" in out and "GFLOPs per image" in out


def test_bad_model_is_one_clear_error(capsys, tmp_path):
    assert main(["-q", "info", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a clip2depth model directory" in err
    assert "Traceback" not in err


def test_size_is_rounded_to_the_patch_size_as_predict_rounds_it(capsys):
    assert main(["-q", "info", "--model", "tiny", "--size", "100", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == [96, 64]  # 100 / 16 = 6.25 -> 6 patches
    assert main(["-q", "info", "--model", "tiny", "--size", "0", "64"]) == 1
    assert "argument --size: '0' is not a whole number of 1 or more" in capsys.readouterr().err
