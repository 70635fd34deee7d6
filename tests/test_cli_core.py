"""The command line's contract: exit statuses, one ``error:`` line, log levels, ``-q``/``-v`` everywhere."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import warnings

import pytest
import torch

import clip2depth.cli.info
import clip2depth.models.profiling
from clip2depth.errors import ConfigError, DataError, is_out_of_memory
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
    (["info", "--size", "a", "b"], ["--size", "invalid int value: 'a'", "clip2depth info --help"]),
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
    assert_user_error(run_cli("info"), "out of memory", "70.0 GiB", "--max-side")


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
    assert str(failure).splitlines()[0] in line and "--max-side" in line


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


def test_name_flags_rewrites_only_the_parameters_the_error_names() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fov", dest="fov_deg", type=float)
    parser.add_argument("--max-side", dest="max_side")
    error = ConfigError("fov_deg=200 is wrong; max_side=3, default_fov_deg=60 and camera.fov_deg=1 stay",
                        params=("fov_deg", "default_fov_deg"))
    assert cli_main.name_flags(error, parser) == (
        "--fov 200 is wrong; max_side=3, default_fov_deg=60 and camera.fov_deg=1 stay"
    )
