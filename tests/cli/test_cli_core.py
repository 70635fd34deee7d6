"""The command line's contract: exit statuses, one ``error:`` line, log levels, ``-q``/``-v`` everywhere."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import re
import warnings

import pytest
import torch

import clip2depth.cli.info
import clip2depth.models.profiling
from clip2depth.cli.options import (
    fraction,
    from_kit,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)
from clip2depth.errors import ConfigError, DataError, is_out_of_memory
from clip2depth.inference.steps import DEFAULT_BATCH_SIZE
from clip2depth.io.progress import progress_enabled
from clirun import assert_user_error, run_cli

cli_main = importlib.import_module("clip2depth.cli.main")  # the package re-exports the function `main`


@pytest.fixture()
def info_runs(monkeypatch: pytest.MonkeyPatch):
    """Replace what ``clip2depth info`` does with the given function (the parser stays the real one)."""

    def install(fn) -> None:
        monkeypatch.setattr(clip2depth.cli.info, "run", fn)

    return install


# --- usage errors: exit 1 with one line, never argparse's status 2 -------------------------------

@pytest.mark.parametrize("argv, fragments", [
    (["info", "--no-such-flag"], ["clip2depth info", "--no-such-flag", "clip2depth info --help"]),
    (["info", "--size", "a", "b"], ["--size", "'a' is not a whole number of 1 or more", "clip2depth info --help"]),
    (["info", "--size", "32"], ["--size", "expected 2 arguments"]),
    (["predict", "photo.jpg"], ["clip2depth predict", "--model", "clip2depth predict --help"]),
    (["no-such-command"], ["invalid choice: 'no-such-command'", "clip2depth --help"]),
    (["--bogus", "info"], ["--bogus"]),
    (["info", "-q", "-v"], ["--verbose", "--quiet"]),
])
def test_usage_errors_are_one_line_and_exit_1(argv: list[str], fragments: list[str]) -> None:
    result = run_cli(*argv)
    assert_user_error(result, *fragments)
    assert "usage:" not in result.err


def test_no_command_prints_the_command_list_and_exits_1() -> None:
    result = run_cli()
    assert_user_error(result, "no COMMAND")
    assert "inspect-mirror" in result.out


def test_help_and_version_exit_0() -> None:
    assert run_cli("--version").code == 0
    result = run_cli("predict", "--help")
    assert result.code == 0 and "--quiet" in result.out and "--verbose" in result.out


# --- errors escaping a command ---------------------------------------------------------------------

def test_user_error_from_a_command_is_one_line(info_runs) -> None:
    def run(args):
        raise DataError("scan.png: not an image; pass a PNG or JPEG file")

    info_runs(run)
    assert_user_error(run_cli("info"), "scan.png", "pass a PNG or JPEG")


def test_full_disk_is_one_line_naming_the_file_and_the_fix(info_runs) -> None:
    def run(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/best/model.safetensors")

    info_runs(run)
    result = run_cli("info")
    assert_user_error(result, "No space left on device", "runs/x/best/model.safetensors", "free some space")
    verbose = run_cli("info", "-v")  # -v adds the traceback above the same line, for a bug hunt
    assert verbose.code == 1 and len(verbose.error_lines) == 1
    assert "Traceback" in verbose.err.split("error:")[0]


def test_out_of_memory_is_one_line(info_runs) -> None:
    def run(args):
        raise MemoryError("Unable to allocate 70.0 GiB for an array with shape (4000, 6000, 768)")

    info_runs(run)
    line = assert_user_error(run_cli("info"), "out of memory", "70.0 GiB", "use smaller values of --size")
    assert "--max-side" not in line  # info has no such flag


def test_out_of_memory_names_the_flags_of_the_command_that_ran() -> None:
    parser, _ = cli_main.build_parser()
    predict = parser._subparsers._group_actions[0].choices["predict"]
    line = cli_main.describe_out_of_memory(MemoryError("Unable to allocate 9 GiB"), predict)
    assert line == ("out of memory (Unable to allocate 9 GiB): use smaller values of --size, --max-side, --batch-size, "
                    "or a device with more memory")
    train = parser._subparsers._group_actions[0].choices["train"]
    assert cli_main.describe_out_of_memory(MemoryError("Unable to allocate 9 GiB"), train).endswith(
        "use smaller inputs or a smaller batch or crop (--set train.batch_size=N, --set augment.crop_size=[H,W]), "
        "or a device with more memory")


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 74793582592 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 70.00 GiB (GPU 0; 79.15 GiB total capacity)"),
    RuntimeError("MPS backend out of memory (MPS allocated: 17.89 GB)"),
])
def test_an_allocation_failure_inside_the_library_is_one_line(monkeypatch: pytest.MonkeyPatch, failure) -> None:
    def count_flops(*args, **kwargs):
        raise failure

    monkeypatch.setattr(clip2depth.models.profiling, "count_flops", count_flops)  # the real command, real model
    line = assert_user_error(run_cli("-q", "info", "--model", "tiny", "--size", "32", "32"), "out of memory")
    # the allocator's byte count in GiB, without its source location; other allocators' first line as it is
    shown = "69.7 GiB requested" if "alloc_cpu" in str(failure) else str(failure).splitlines()[0]
    assert f"out of memory ({shown}): use smaller values of --size" in line and "enforce fail" not in line


def test_is_out_of_memory_tells_allocation_failures_from_bugs() -> None:
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocators' errors, not any text


def test_a_closed_output_pipe_ends_quietly(info_runs) -> None:
    def run(args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")  # `clip2depth info | head -1`

    info_runs(run)
    result = run_cli("info")
    assert result.code == 1 and result.err == ""


def test_a_bug_keeps_its_traceback(info_runs) -> None:
    def run(args):
        raise ZeroDivisionError("a programming error")

    info_runs(run)
    with pytest.raises(ZeroDivisionError):
        run_cli("info")


def test_ctrl_c_in_a_command_exits_130_without_traceback(info_runs) -> None:
    def run(args):
        raise KeyboardInterrupt

    info_runs(run)
    result = run_cli("info")
    assert result.code == 130
    assert result.err.strip() == "interrupted"


def test_ctrl_c_while_importing_the_commands_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted_import(name: str):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.importlib, "import_module", interrupted_import)
    result = run_cli("predict", "photo.jpg", "--model", "tiny")
    assert result.code == 130
    assert result.err.strip() == "interrupted"


def test_importing_the_package_does_not_import_torch() -> None:
    """The CLI catches Ctrl-C only once ``main`` runs: the entry point's own imports must be light."""
    import subprocess
    import sys

    code = "import sys, clip2depth.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- logging and -q / -v ---------------------------------------------------------------------------

PYTHON_WARNING = "python-warning"  # a name, so the source line the warning quotes does not repeat the text


def _logging_command(seen: dict):
    def run(args):
        own = logging.getLogger("clip2depth.some.module")
        own.debug("own-debug")
        own.info("own-info")
        own.warning("own-warning")
        logging.info("library-info")  # what open_clip does, on the root logger
        logging.getLogger("PIL.PngImagePlugin").warning("library-warning")
        warnings.warn(PYTHON_WARNING, FutureWarning, stacklevel=1)  # e.g. a torch deprecation
        seen["progress"] = progress_enabled()
        return 0

    return run


@pytest.mark.parametrize("flags, shown, hidden, progress", [
    ([], ["own-info", "own-warning"], ["own-debug", "library-info", "library-warning", "python-warning"], True),
    (["-q"], ["own-warning"], ["own-info", "own-debug", "library-info", "library-warning", "python-warning"], False),
    (["-v"], ["own-debug", "own-info", "own-warning", "library-info", "library-warning", "python-warning"], [], True),
])
@pytest.mark.parametrize("before_command", [True, False])
def test_log_levels(info_runs, flags, shown, hidden, progress, before_command) -> None:
    warnings.simplefilter("always")  # pytest restores the filters after the test
    seen: dict = {}
    info_runs(_logging_command(seen))
    result = run_cli(*flags, "info") if before_command else run_cli("info", *flags)
    assert result.code == 0, result.err
    for text in shown:
        assert result.err.count(text) == 1, (text, result.err)
    for text in hidden:
        assert text not in result.err, (text, result.err)
    assert seen["progress"] is progress
    assert progress_enabled()  # restored for whatever runs next in this process


def test_repeated_runs_in_one_process_do_not_repeat_lines(info_runs) -> None:
    info_runs(_logging_command({}))
    run_cli("info")
    assert run_cli("info").err.count("own-info") == 1


def test_default_model_build_shows_only_our_warning() -> None:
    """open_clip logs nine INFO lines and a duplicate random-weights WARNING on the root logger."""
    result = run_cli("info", "--model", "tiny", "--size", "32", "32", "--json")
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "RANDOM weights" in lines[0], result.err
    verbose = run_cli("info", "--model", "tiny", "--size", "32", "32", "--json", "-v")
    assert "No pretrained weights loaded" in verbose.err  # open_clip's own line, shown with -v


def test_every_command_accepts_quiet_and_verbose_after_its_name() -> None:
    parser, handlers = cli_main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(handlers) == set(sub.choices)
    for name, command_parser in sub.choices.items():
        options = command_parser._option_string_actions
        for flag in ("-q", "--quiet", "-v", "--verbose"):
            assert flag in options, (name, flag)
    args = parser.parse_args(["predict", "photo.jpg", "--model", "tiny", "-q"])
    assert args.quiet is True and args.verbose is False
    args = parser.parse_args(["-v", "predict", "photo.jpg", "--model", "tiny"])
    assert args.verbose is True and args.quiet is False


# --- the flag kit: one declaration per shared flag -------------------------------------------------

PER_COMMAND_DEFAULT = {  # same type, choices and help; the default (and the help's closing clause) per command
    "--model": "required where a command runs the model you name; info has a preset, app the demo's model, "
               "train, ablate and reproduce the recipe's",
    "--out": "each command names its own output folder; reproduce has no default",
    "--max-side": "eval keeps the evaluation protocol's own sizes; predict and consistency the model's own scale",
    "--data-root": "an omitted root is the dataset's environment variable, the recipe's root or data/<dataset>",
    "--gt-root": "eval reads $CLIP2DEPTH_KITTI_GT_ROOT, data check ROOT/data_depth_annotated",
    "--split": "eval evaluates the test split, ablate the recipe's validation split",
    "--synthetic": "eval: the split's size; consistency: one of three required sources; inspect-mirror: 4 scenes",
    "--min-depth": "eval uses the dataset's range, consistency clamps at 1 mm",
    "--max-depth": "eval uses the dataset's range, consistency the model's max_depth",
}
DIFFERENT_KIND = {  # same name, another argument: checked for coming from the kit only
    "--resume": "train's takes the run folder (it replaces --out and the recipe flags); ablate and demo continue "
                "in --out",
}
CLOSING_CLAUSE = re.compile(r" \((default: .+|required)\)$")


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by its prog (``clip2depth data get``), subcommands of subcommands included."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, top: bool = False) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            for child in subs[0].choices.values():
                walk(child)
        elif not top:
            found[parser.prog] = parser

    walk(cli_main.build_parser()[0], top=True)
    return found


def _signature(flag: str, action: argparse.Action) -> dict:
    sig = {key: getattr(action, key) for key in ("dest", "type", "choices", "nargs", "metavar", "const")}
    sig["action"] = type(action)
    if flag in PER_COMMAND_DEFAULT:
        assert CLOSING_CLAUSE.search(action.help), (flag, action.help)
        sig["help"] = CLOSING_CLAUSE.sub("", action.help)
    else:
        sig.update(help=action.help, default=action.default, required=action.required)
    return sig


def test_every_shared_flag_comes_from_the_kit_and_reads_the_same_everywhere() -> None:
    uses: dict[str, list[tuple[str, argparse.Action]]] = {}
    for command, parser in _command_parsers().items():
        for flag, action in parser._option_string_actions.items():
            assert action.help != argparse.SUPPRESS, (command, flag)  # no hidden aliases
            if flag.startswith("--") and flag not in ("--help", "--quiet", "--verbose"):
                uses.setdefault(flag, []).append((command, action))
    shared = {flag: found for flag, found in uses.items() if len(found) > 1}

    assert {"--model", "--pretrained", "--device", "--precision", "--max-side", "--batch-size", "--out",
            "--overwrite", "--resume", "--set", "--seed", "--flip-tta", "--depth-scale", "--limit"} <= set(shared)
    assert set(PER_COMMAND_DEFAULT) | set(DIFFERENT_KIND) <= set(shared)  # no stale exception
    assert len(shared["--pretrained"]) == 10 and len(shared["--device"]) == 6
    for flag, found in shared.items():
        for command, action in found:
            assert from_kit(action), f"{command} declares the shared flag {flag} by hand: use clip2depth.cli.options"
        if flag in DIFFERENT_KIND:
            continue
        (first_command, first), *others = found
        for command, action in others:
            assert _signature(flag, action) == _signature(flag, first), (flag, first_command, command)


def test_the_commands_that_predict_users_files_share_one_scale_and_batch_size() -> None:
    parsers = _command_parsers()
    for command in ("clip2depth predict", "clip2depth consistency"):
        options = parsers[command]._option_string_actions
        assert options["--max-side"].default is None and options["--size"].default is None
        assert options["--native"].default is False
        assert options["--batch-size"].default == DEFAULT_BATCH_SIZE == 4
        assert options["--max-side"].help.endswith("(default: the model's own scale: the pixel count of the size "
                                                   "it was trained at, the image's aspect kept)")
        parser = parsers[command]
        argv = ["--model", "tiny", "--synthetic", "4"] if command.endswith("consistency") else ["x.jpg", "--model",
                                                                                                  "tiny"]
        for flags in (["--max-side", "64", "--native"], ["--size", "64", "64", "--max-side", "64"],
                      ["--native", "--size", "64", "64"]):
            with pytest.raises(cli_main.UsageError, match="not allowed with argument"):
                parser.parse_args([*argv, *flags])
    assert parsers["clip2depth eval"]._option_string_actions["--max-side"].default is None
    assert "--native" not in parsers["clip2depth eval"]._option_string_actions
    assert not any("--no-progress" in p._option_string_actions for p in parsers.values())  # -q is the switch


@pytest.mark.parametrize(("parse", "text", "value"), [
    (positive_int, "3", 3), (non_negative_int, "0", 0), (positive_float, "0.25", 0.25),
    (non_negative_float, "0", 0.0), (fraction, "1", 1.0), (port, "65535", 65535),
])
def test_kit_types_accept(parse, text: str, value) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(("parse", "text"), [
    (positive_int, "0"), (positive_int, "1.5"), (positive_int, "x"), (non_negative_int, "-1"),
    (positive_float, "0"), (positive_float, "inf"), (positive_float, "nan"), (non_negative_float, "-0.1"),
    (fraction, "0"), (fraction, "1.01"), (port, "0"), (port, "65536"),
])
def test_kit_types_refuse_naming_the_value(parse, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
        parse(text)


@pytest.mark.parametrize("argv, fragments", [
    (["info", "--size", "0", "32"], ["argument --size: '0' is not a whole number of 1 or more"]),
    (["eval", "--model", "tiny", "--synthetic-size", "32", "0"], ["--synthetic-size", "'0'"]),
    (["export", "--model", "tiny", "--onnx", "x.onnx", "--check-sizes", "32", "-4"], ["--check-sizes", "'-4'"]),
    (["demo", "--test-scenes", "0"], ["--test-scenes", "'0'"]),
    (["data", "get", "nyu", "--root", "x", "--timeout", "0"], ["--timeout", "'0'", "clip2depth data get --help"]),
    (["app", "--max-upload-mb", "0"], ["--max-upload-mb", "'0'"]),
    (["demo", "--resume", "--overwrite"], ["argument --overwrite: not allowed with argument --resume"]),
    (["ablate", "--overwrite", "--resume"], ["argument --resume: not allowed with argument --overwrite"]),
    (["train", "--resume", "runs/x", "--overwrite"], ["argument --overwrite: not allowed with argument --resume"]),
    (["consistency", "--model", "tiny", "--video", "a.mp4", "--frames", "d"], ["--frames: not allowed with"]),
    (["export", "--model", "tiny", "--onnx", "x.onnx", "--opset", "16"], ["--opset 16 is not supported"]),
])
def test_kit_values_and_exclusive_flags_are_one_error_line(argv: list[str], fragments: list[str]) -> None:
    assert_user_error(run_cli(*argv), *fragments)


def test_name_flags_rewrites_only_the_parameters_the_error_names() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fov", dest="fov_deg", type=float)
    parser.add_argument("--max-side", dest="max_side")
    error = ConfigError("fov_deg=200 is wrong; max_side=3, default_fov_deg=60 and camera.fov_deg=1 stay",
                        params=("fov_deg", "default_fov_deg"))
    assert cli_main.name_flags(error, parser) == (
        "--fov 200 is wrong; max_side=3, default_fov_deg=60 and camera.fov_deg=1 stay"
    )
