"""On a CUDA device: predict gives the CPU's depth, a resumed run is exact, and out of memory is a listed skip.

Marker ``gpu`` (skipped by default and without CUDA); ``benchmarks/gpu_check.sh`` runs them with ``-m gpu``.
"""

from __future__ import annotations

import copy
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

# cuBLAS picks deterministic reductions only with this set before it starts (the resume test needs them).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import clip2depth  # noqa: E402
from clip2depth.inference import steps as steps_module  # noqa: E402
from clip2depth.training.config import apply_overrides, load_recipe  # noqa: E402
from clip2depth.training.trainer import train  # noqa: E402
from clirun import run_cli  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def models() -> tuple[clip2depth.Clip2Depth, clip2depth.Clip2Depth]:
    """The paper's architecture (random weights) on the CPU and the same weights on CUDA."""
    torch.manual_seed(0)
    cpu = clip2depth.create_model("clip2depth-vit-b-16")
    with torch.no_grad():
        cpu.decoder.head.layers[-1].bias.add_(0.3)  # off the initial all-equal depth
    return cpu, copy.deepcopy(cpu).to("cuda")


# fp32 per pixel; bf16 keeps 8 bits of mantissa, so its bound is on the mean over the pixels.
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("bf16", 1e-2)])
def test_cuda_predict_equals_cpu(models, precision: str, tolerance: float) -> None:
    cpu, cuda = models
    assert cuda.device.type == "cuda"
    image = torch.rand(3, 240, 320, generator=torch.Generator().manual_seed(1))
    expected = cpu.infer(image)
    got = cuda.infer(image, precision=precision)
    assert got.shape == expected.shape == (240, 320) and got.dtype == np.float32
    relative = np.abs(got - expected) / expected
    assert (relative.max() if precision == "fp32" else relative.mean()) <= tolerance
    assert np.std(expected) > 0  # a depth map, not a constant, was compared


SMALL = [
    "data.kwargs.size=[64, 96]", "data.kwargs.length=32", "data.val_kwargs.size=[64, 96]",
    "data.val_kwargs.length=4", "augment.crop_size=[64, 80]", "train.batch_size=4", "train.num_workers=0",
    "train.log_every=1", "train.val_every=3", "train.max_steps=6",
]  # fmt: skip


def test_cuda_resume_is_exact(tmp_path: Path) -> None:
    recipe = apply_overrides(load_recipe("synthetic"), SMALL)
    deterministic = torch.are_deterministic_algorithms_enabled()
    # warn_only: an operator without a deterministic CUDA kernel warns instead of stopping the run, and the
    # comparison of two uninterrupted runs below then says that training itself is not reproducible.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        first, second = tmp_path / "first", tmp_path / "second"
        train(recipe, first, progress=False)
        train(recipe, second, progress=False)
        a, b = (load_file(str(run / "last" / "model.safetensors")) for run in (first, second))
        # Otherwise no resume could be exact: say that, not "resume is broken".
        assert all(torch.equal(a[k], b[k]) for k in a), "two uninterrupted CUDA runs differ"

        part = tmp_path / "part"

        def interrupt(step: int) -> None:
            if step == 4:
                os.kill(os.getpid(), signal.SIGINT)

        summary = train(recipe, part, on_step=interrupt, progress=False)
        assert summary.interrupted and summary.state.step == 4
        assert train(recipe, part, resume=True, progress=False).state.step == 6
    finally:
        torch.use_deterministic_algorithms(deterministic)
    c = load_file(str(part / "last" / "model.safetensors"))
    assert a.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], c[key]), key
    log = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_cuda_out_of_memory_in_predict_is_a_listed_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "in" / "small.png")
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / "in" / "big.png")
    real = steps_module.predict_batch
    free, _ = torch.cuda.mem_get_info()

    def predict_batch(model, images, **kwargs):
        if images[0].shape[-1] > 16:  # a real allocation the device cannot hold, from the real allocator
            torch.empty(4 * free, dtype=torch.uint8, device="cuda")
        return real(model, images, **kwargs)

    monkeypatch.setattr(steps_module, "predict_batch", predict_batch)
    result = run_cli("-q", "predict", tmp_path / "in", "--model", "tiny", "--device", "cuda", "--out",
                     tmp_path / "out", "--format", "npy")  # fmt: skip
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert "1 of 2 inputs done, 1 failed (1 out of memory)" in result.out
    assert f"{tmp_path / 'in' / 'big.png'}: out of memory predicting 1 image(s) of 48×32" in result.err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["small.npy"]
    assert np.load(tmp_path / "out" / "small.npy").shape == (16, 16)
