"""Mutation check: does the test suite fail when core behaviour is changed on purpose?

Each mutant below is one small, plausible mistake in the source (a wrong constant, formula, crop, interpolation
mode or index). For each, the harness copies ``src/`` to a temporary folder, applies the change there (the
worktree is never touched), and runs the tests named for that mutant against the copy (``PYTHONPATH`` puts the
copy first) with ``pytest -x -q``. A mutant is *killed* when a test fails, *survived* when every test passes
(the suite has a hole), and an *error* when its snippet is no longer in the source (update the mutant) or pytest
could not run. First every named test is run once on the unchanged source: one that fails there would count as a
kill for nothing, so the harness stops (exit status 2). Run from the repository root::

    python tools/mutants.py                 # every mutant; exit status 0 only if all are killed, else 1
    python tools/mutants.py --list          # names, files and tests, nothing run
    python tools/mutants.py eval_resize_nearest infer_resize_nearest   # just these
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path("src") / "clip2depth"


@dataclass(frozen=True)
class Mutant:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``file`` (relative to src/clip2depth)."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    """Test files or node ids (``tests/test_x.py::test_y``) expected to fail on this mutant."""
    what: str


MUTANTS: tuple[Mutant, ...] = (
    # --- the four changes issue 17 found surviving the whole suite
    Mutant("silog_lambda_default", "training/config.py",
           "variance_focus: float = setting(0.85, ge=0, le=1)", "variance_focus: float = setting(1.0, ge=0, le=1)",
           ("tests/training/test_train.py::test_a_training_step_minimises_silog_with_lambda_085",),
           "TrainSection's SILog lambda 0.85 -> 1.0 (a recipe that does not set it)"),
    Mutant("silog_lambda_recipe", "training/recipes/nyu.yaml",
           "variance_focus: 0.85", "variance_focus: 1.0",
           ("tests/training/test_train.py::test_every_shipped_recipe_trains_with_the_papers_silog_lambda",),
           "the NYU recipe's SILog lambda 0.85 -> 1.0"),
    Mutant("silog_lambda_trainer", "training/trainer.py",
           "variance_focus=t.variance_focus,", "variance_focus=1.0,",
           ("tests/training/test_train.py::test_a_training_step_minimises_silog_with_lambda_085",),
           "the trainer passes lambda 1.0 to the loss, whatever the recipe says"),
    Mutant("depth_floor_0_1m", "models/decoder.py",
           "return self.max_depth * torch.sigmoid(logits.float()).clamp_min(1e-6)",
           "return (self.max_depth * torch.sigmoid(logits.float())).clamp_min(0.1)",
           ("tests/model/test_model.py::test_output_is_max_depth_times_sigmoid_of_the_logits",),
           "the model output clamped to at least 0.1 m"),
    Mutant("eval_resize_nearest", "evaluation/metrics.py",
           'mode="bilinear", align_corners=False)[0, 0]', 'mode="nearest")[0, 0]',
           ("tests/evaluation/test_metrics.py::test_prediction_is_resized_bilinearly_to_the_ground_truth",),
           "evaluation resizes a prediction to the ground truth with nearest instead of bilinear"),
    Mutant("infer_resize_nearest", "models/infer.py",
           'depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)',
           'depth = F.interpolate(depth, size=(h, w), mode="nearest")',
           ("tests/model/test_model.py::test_infer_resizes_depth_back_bilinearly",),
           "infer resizes depth back to the input with nearest instead of bilinear"),
    # --- metric formulas and masks
    Mutant("metric_abs_rel_over_pred", "evaluation/metrics.py",
           '"abs_rel": float(np.mean(np.abs(diff) / g)),', '"abs_rel": float(np.mean(np.abs(diff) / p)),',
           ("tests/evaluation/test_metrics.py",), "AbsRel divided by the prediction instead of the ground truth"),
    Mutant("metric_silog_lambda", "evaluation/metrics.py",
           "si_var = max(float(np.mean(e**2) - np.mean(e) ** 2), 0.0)",
           "si_var = max(float(np.mean(e**2) - 0.85 * np.mean(e) ** 2), 0.0)",
           ("tests/evaluation/test_metrics.py",), "the SIlog metric with the loss's lambda 0.85 instead of 1"),
    Mutant("metric_d2_threshold", "evaluation/metrics.py",
           '"d2": float(np.mean(ratio < 1.25**2)),', '"d2": float(np.mean(ratio < 1.25 * 2)),',
           ("tests/evaluation/test_metrics.py",), "delta2 threshold 1.25*2 instead of 1.25^2"),
    Mutant("eval_valid_inclusive", "evaluation/metrics.py",
           "valid = (gt_np > min_depth) & (gt_np < max_depth)", "valid = (gt_np >= min_depth) & (gt_np <= max_depth)",
           ("tests/evaluation/test_metrics.py",), "ground truth at exactly min/max depth counted as valid"),
    Mutant("eval_no_upper_clamp", "evaluation/metrics.py",
           "pred_np = np.clip(pred_np, min_depth, max_depth)", "pred_np = np.clip(pred_np, min_depth, None)",
           ("tests/evaluation/test_metrics.py",), "predictions beyond max_depth not clamped"),
    Mutant("eval_settings_depth_range", "evaluation/protocol.py",
           "min_depth=settings.min_depth, max_depth=settings.max_depth,",
           "min_depth=settings.min_depth, max_depth=10.0,",
           ("tests/evaluation/test_evaluate.py::test_kitti_pngs_have_full_ground_truth_size_and_none_for_images_without_ground_truth",),
           "evaluation ignores the settings' max depth (KITTI's 80 m)"),
    Mutant("crop_nyu_eigen_cols", "evaluation/metrics.py",
           "mask[45:471, 41:601] = True", "mask[45:471, 46:601] = True",
           ("tests/evaluation/test_metrics.py",), "NYU Eigen crop with DepthCLIP's columns"),
    Mutant("crop_kitti_garg_rows", "evaluation/metrics.py",
           "mask[int(0.40810811 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True",
           "mask[int(0.3324324 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True",
           ("tests/evaluation/test_metrics.py",), "KITTI Garg crop starting at the Eigen crop's top row"),
    # --- model
    Mutant("model_max_depth_ignored", "models/model.py",
           "max_depth=config.max_depth,", "max_depth=10.0,",
           ("tests/model/test_model.py::test_output_is_max_depth_times_sigmoid_of_the_logits",),
           "the decoder always scales by 10 m (KITTI's 80 m ignored)"),
    Mutant("film_gain_dropped", "models/decoder.py",
           "a = self.film_mul(q).unsqueeze(1) * a + self.film_add(q).unsqueeze(1)",
           "a = a + self.film_add(q).unsqueeze(1)",
           ("tests/model/test_model.py::test_film_gain_scales_the_deepest_level_only",),
           "FiLM without its multiplicative gain"),
    Mutant("film_wrong_level", "models/decoder.py",
           "if level == 0 and self.film_mul is not None:",
           "if level == len(self.reduces) - 1 and self.film_mul is not None:",
           ("tests/model/test_model.py::test_film_gain_scales_the_deepest_level_only",),
           "FiLM after the shallowest level instead of the deepest"),
    Mutant("mirror_pooled_index", "models/prompt_encoder.py",
           "return self._project(x[:, self.pooled_index])", "return self._project(x[:, self.pooled_index - 1])",
           ("tests/model/test_model.py::test_mirror_holding_the_prompt_embeddings_reproduces_encode_text",),
           "the query read one position before EOT"),
    # --- data, files, geometry
    Mutant("augment_flip_image_only", "data/transforms.py",
           "image, depth = image.flip(-1), depth.flip(-1)", "image, depth = image.flip(-1), depth",
           ("tests/training/test_transforms.py",), "horizontal flip applied to the image but not to the depth"),
    Mutant("augment_rotate_depth_bilinear", "data/transforms.py",
           'depth = rotate(depth, angle, mode="nearest")', 'depth = rotate(depth, angle, mode="bilinear")',
           ("tests/training/test_transforms.py",),
           "depth rotated with bilinear sampling (invents depths, blurs invalid)"),
    Mutant("png16_fixed_scale", "io/depth.py",
           "units = np.where(np.isfinite(depth) & (depth > 0), depth * scale, 0.0)",
           "units = np.where(np.isfinite(depth) & (depth > 0), depth * 1000.0, 0.0)",
           ("tests/data/test_io.py",), "16-bit PNGs always written in millimetres (KITTI's 1/256 m ignored)"),
    Mutant("backproject_fy_for_x", "inference/pointcloud.py",
           "x = (u - intrinsics.cx) * z / intrinsics.fx", "x = (u - intrinsics.cx) * z / intrinsics.fy",
           ("tests/predict/test_pointcloud.py",), "x back-projected with fy"),
    Mutant("intrinsics_fov_full_angle", "inference/pointcloud.py",
           "focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)",
           "focal = (width / 2.0) / math.tan(math.radians(fov_deg))",
           ("tests/predict/test_pointcloud.py",), "focal length from the full FOV instead of half of it"),
    Mutant("exif_focal_width_rule", "io/images.py",
           "return focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM",
           "return focal_35mm * width / 36.0",
           ("tests/data/test_io.py",),
           "EXIF 35 mm focal length converted by the width rule, right only for 3:2 images"),
    Mutant("flip_tta_not_flipped_back", "models/infer.py",
           "depth = 0.5 * (depth + model(x.flip(-1)).float().flip(-1))",
           "depth = 0.5 * (depth + model(x.flip(-1)).float())",
           ("tests/model/test_model.py::test_flip_tta_averages_with_the_prediction_of_the_mirror_image_flipped_back",),
           "flip test-time augmentation averages with the mirror image's depth left mirrored"),
    Mutant("resume_rng_not_restored", "training/resume.py",
           'torch.set_rng_state(rng["rng.torch"])', "pass",
           ("tests/training/test_train.py::test_resume_state_restores_the_torch_random_stream",),
           "resume leaves torch's random stream where it is"),
    Mutant("batch_order_same_every_epoch", "training/datasets.py",
           "manual_seed(self.seed * 100_003 + self.epoch)", "manual_seed(self.seed * 100_003)",
           ("tests/model/test_batching.py",), "the same data order in every epoch"),
    Mutant("batch_ranks_share_a_slice", "training/datasets.py",
           "chunk[self.rank * self.local : (self.rank + 1) * self.local]", "chunk[: self.local]",
           ("tests/model/test_batching.py",), "every data-parallel rank trains on the same slice of a batch"),
    # --- the model's own scale (docs/predict.md#processing-size)
    Mutant("scale_by_longer_side", "models/infer.py",
           "scale = math.sqrt(model_size[0] * model_size[1] / (h * w))",
           "scale = max(model_size) / max(h, w)",
           ("tests/model/test_processing_scale.py",),
           "the model's scale matched by the longer side, not the pixel count"),
    Mutant("scale_never_up", "models/infer.py",
           "scale = math.sqrt(model_size[0] * model_size[1] / (h * w))",
           "scale = min(1.0, math.sqrt(model_size[0] * model_size[1] / (h * w)))",
           ("tests/model/test_processing_scale.py",), "small images kept at their size instead of scaled up"),
    Mutant("max_side_enlarges", "models/infer.py",
           "scale = min(1.0, max_side / max(h, w))", "scale = max_side / max(h, w)",
           ("tests/model/test_processing_scale.py",), "--max-side scales small images up too"),
)


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # killed, survived, error
    detail: str
    seconds: float


def apply(mutant: Mutant, src_copy: Path) -> None:
    path = src_copy / "clip2depth" / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise LookupError(f"{PACKAGE / mutant.file}: the snippet occurs {count} times, expected once: {mutant.old!r}")
    path.write_text(text.replace(mutant.old, mutant.new))


def _first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return match.group(1) if match else output.strip().splitlines()[-1] if output.strip() else "no output"


def run_mutant(mutant: Mutant, python: str, timeout: float) -> Outcome:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        src_copy = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src_copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        try:
            apply(mutant, src_copy)
        except LookupError as exc:
            return Outcome(mutant, "error", str(exc), time.perf_counter() - start)
        try:
            proc = _pytest(list(mutant.tests), src_copy, python, timeout)
        except subprocess.TimeoutExpired:
            return Outcome(mutant, "error", f"tests ran past {timeout:g} s", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return Outcome(mutant, "survived", "all tests passed", seconds)
    if proc.returncode == 1:
        return Outcome(mutant, "killed", _first_failure(output), seconds)
    return Outcome(mutant, "error", f"pytest exit {proc.returncode}: {_first_failure(output)}", seconds)


def _pytest(tests: list[str], src: Path, python: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def baseline(mutants: list[Mutant], python: str, timeout: float) -> str | None:
    """Run every named test once on the unchanged source; a failure here would pass for a kill later."""
    tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
    proc = _pytest(tests, ROOT / "src", python, timeout)
    return None if proc.returncode == 0 else _first_failure(proc.stdout + proc.stderr)


def check_copy_is_imported(python: str) -> None:
    """Fail early if an installed clip2depth would shadow the mutated copy (mutants would all 'survive')."""
    with tempfile.TemporaryDirectory(prefix="mutant-probe-") as tmp:
        (Path(tmp) / "clip2depth").mkdir()
        (Path(tmp) / "clip2depth" / "__init__.py").write_text("")
        env = {**os.environ, "PYTHONPATH": tmp}
        found = subprocess.run([python, "-c", "import clip2depth; print(clip2depth.__file__)"], env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        if not found.startswith(tmp):
            sys.exit(f"clip2depth is imported from {found}, not from PYTHONPATH: the mutated copy would be ignored")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's tests (default 600)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the first run of the named tests on the unchanged source")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest (default: this one)")
    args = parser.parse_args(argv)

    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(unknown)}; --list shows them")
    chosen = [known[n] for n in args.names] if args.names else list(MUTANTS)
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {PACKAGE / m.file}: {m.what}\n{'':32} tests: {' '.join(m.tests)}")
        return 0

    check_copy_is_imported(args.python)
    if not args.no_baseline:
        failed = baseline(chosen, args.python, args.timeout)
        if failed is not None:
            print(f"baseline: {failed} fails on the unchanged source; fix it first (a kill would mean nothing)")
            return 2
        print("baseline: every named test passes on the unchanged source", flush=True)
    outcomes = []
    for m in chosen:
        outcome = run_mutant(m, args.python, args.timeout)
        outcomes.append(outcome)
        print(f"{outcome.verdict.upper():9} {m.name:32} {outcome.seconds:5.1f}s  {outcome.detail}", flush=True)
    killed = sum(o.verdict == "killed" for o in outcomes)
    print(f"{killed} of {len(outcomes)} mutants killed", end="")
    for verdict in ("survived", "error"):
        names = [o.mutant.name for o in outcomes if o.verdict == verdict]
        if names:
            print(f"; {verdict}: {', '.join(names)}", end="")
    print()
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `--list | head`: the reader has gone, nothing left to say
        sys.stderr.close()
        sys.exit(0)
