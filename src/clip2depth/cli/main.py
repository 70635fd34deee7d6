"""The ``clip2depth`` command line: one subcommand module per task (see ``clip2depth.cli``).

Exit status: 0 success; 1 any error a user can cause (bad flag, missing or corrupt file, wrong
checkpoint, full disk), printed as one ``error:`` line; 130 interrupted by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from clip2depth import __version__
from clip2depth.errors import Clip2DepthError, ConfigError, is_out_of_memory
from clip2depth.io.progress import progress_enabled, set_progress

COMMANDS = [
    "info", "eval", "train", "demo", "predict", "export", "ablate", "consistency", "inspect_mirror", "data",
    "reproduce", "app",
]

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130

log = logging.getLogger(__name__)


class UsageError(ConfigError):
    """A command line argparse refused (unknown flag, bad value, missing argument)."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors become a :class:`UsageError` (one ``error:`` line, exit 1).

    argparse's own behaviour (usage block, then exit status 2) would break the exit-status contract;
    subparsers inherit this class, so every command behaves the same.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _add_verbosity(parser: argparse.ArgumentParser, *, default: object) -> None:
    """``-v`` / ``-q`` on ``parser``. Subcommands use ``default=SUPPRESS`` so an omitted flag there
    keeps the value given before the command name (``clip2depth -q predict`` == ``clip2depth predict -q``)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="also show other libraries' log messages, and ours at debug level; "
                             "tracebacks for unexpected errors")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="only warnings and errors; no progress bars")


def build_parser() -> tuple[ArgumentParser, dict]:
    """The top-level parser with every subcommand, and ``{command name: run function}``."""
    parser = ArgumentParser(
        prog="clip2depth",
        description="Metric depth from a frozen CLIP (CLIP2Depth): train, evaluate, predict, export.",
        epilog="'clip2depth COMMAND --help' documents each command. "
               "Exit status: 0 success, 1 an error you can fix (one 'error:' line), 130 interrupted (Ctrl-C, SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=f"clip2depth {__version__}")
    _add_verbosity(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for name in COMMANDS:
        module = importlib.import_module(f"clip2depth.cli.{name}")
        module.add_parser(sub)
        _add_verbosity(sub.choices[module.NAME], default=argparse.SUPPRESS)
        handlers[module.NAME] = module.run
    return parser, handlers


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command ``args`` ran (``clip2depth data get ...``: the ``get`` parser)."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or getattr(args, sub.dest, None) not in sub.choices:
            return parser
        parser = sub.choices[getattr(args, sub.dest)]


def name_flags(exc: Clip2DepthError, parser: argparse.ArgumentParser) -> str:
    """``exc``'s message with each ``name=`` of its :attr:`~clip2depth.errors.Clip2DepthError.params` written as
    the flag of ``parser`` that sets ``name`` (its dest): ``fov_deg=200`` → ``--fov 200``. A parameter the
    command has no flag for keeps its name."""
    text = str(exc)
    for param in exc.params:
        flags = next((a.option_strings for a in parser._actions if a.dest == param and a.option_strings), None)
        if flags:
            text = re.sub(rf"(?<![\w.-]){re.escape(param)}=", max(flags, key=len) + " ", text)
    return text


class _CurrentStderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (so redirected stderr sees it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging must never take the command down; the stdlib reports it
            self.handleError(record)


class _OwnRecordsOnly(logging.Filter):
    """Lets through only records of the ``clip2depth`` logger tree (hides open_clip's INFO chatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "clip2depth" or record.name.startswith("clip2depth.")


def configure_logging(*, verbose: bool, quiet: bool) -> None:
    """One stderr handler on the root logger.

    default: our messages at INFO, other libraries' (and their Python warnings) hidden; ``verbose``: ours
    at DEBUG, other libraries' at INFO; ``quiet``: our warnings and errors only, no progress bars. Replaces the
    handler of a previous call, so calling ``main`` repeatedly in one process does not duplicate lines.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _CurrentStderrHandler)]:
        root.removeHandler(handler)
    handler = _CurrentStderrHandler()
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler.addFilter(_OwnRecordsOnly())
    root.addHandler(handler)
    # A handler on the root also stops logging.warning() of other libraries from installing its own.
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    own = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.getLogger("clip2depth").setLevel(own)
    set_progress(not quiet)


def _describe_os_error(exc: OSError) -> str:
    """One line for an OSError escaping a command: what failed, on which file, and what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason}{where}: free some space or write to another folder, then run the command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{reason}{where}: choose a location you can write to or fix its permissions"
    if exc.errno == errno.ENOENT:
        return f"{reason}{where}: check the path"
    return f"{reason}{where}: check the file or folder and run again (-v shows the traceback)"


_SIZE_FLAGS = ("--size", "--max-side", "--input-size", "--synthetic-size", "--check-sizes", "--batch-size")
"""Flags that shrink what a command allocates, in the order the out-of-memory message suggests them."""


def describe_out_of_memory(exc: BaseException, command: argparse.ArgumentParser | None) -> str:
    """One line for an allocation failure: how much was asked for when the allocator says, and the flags of
    ``command`` that would ask for less (a command without such flags is told to use a smaller input)."""
    text = str(exc)
    if "Original Traceback" in text:  # raised again from a DataLoader worker: its last line is the failure
        text = text.strip().splitlines()[-1].partition(": ")[2]
    wanted = re.search(r"tried to allocate (\d+) bytes", text)
    if wanted:
        detail = f"{int(wanted.group(1)) / 2**30:.1f} GiB requested"
    else:  # drop the allocator's source location ("[enforce fail at alloc_cpu.cpp:127] ...")
        detail = re.sub(r"^\[[^]]*\]\s*", "", (text.splitlines() or [""])[0]) or type(exc).__name__
    options = {flag for action in (command._actions if command is not None else []) for flag in action.option_strings}
    flags = [flag for flag in _SIZE_FLAGS if flag in options]
    smaller = f"smaller values of {', '.join(flags)}" if flags else "smaller inputs"
    if "--set" in options:  # training commands: the batch and crop live in the recipe
        smaller += " or a smaller batch or crop (--set train.batch_size=N, --set augment.crop_size=[H,W])"
    return f"out of memory ({detail}): use {smaller}, or a device with more memory"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into a closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # stdout is not a real file (captured in tests)
        pass


def _fail(message: str, *, show_traceback: bool) -> int:
    if show_traceback:
        traceback.print_exc(file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run ``clip2depth ARGV``; returns the exit status (0, 1 or 130, see the module docstring)."""
    progress_before = progress_enabled()
    try:
        with _sigterm_as_interrupt():
            return _run(argv)
    finally:  # leave the process as it was for code that calls main() in-process (tests, notebooks)
        logging.captureWarnings(False)
        set_progress(progress_before)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a job scheduler, torchrun, ``kill``) stops a command as Ctrl-C does: temporary files are removed,
    "interrupted" is printed and the exit status is 130. Only where nobody else handles SIGTERM, in the main
    thread (training installs its own handler, which finishes the step and saves first)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # fmt: skip
        yield
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(argv: list[str] | None) -> int:
    verbose = False
    command: argparse.ArgumentParser | None = None
    try:
        parser, handlers = build_parser()
        args, unknown = parser.parse_known_args(argv)
        command = command_parser(parser, args)
        if unknown:  # name the command whose --help lists the valid flags
            command.error(f"unrecognized arguments: {' '.join(unknown)}")
        verbose = args.verbose
        if args.verbose and args.quiet:
            raise UsageError("-v/--verbose and -q/--quiet contradict each other: give at most one")
        configure_logging(verbose=args.verbose, quiet=args.quiet)
        if args.command is None:
            parser.print_help()
            raise UsageError("no COMMAND given: choose one of the commands listed above")
        # Other libraries' Python warnings become log records of "py.warnings": shown with -v only.
        logging.captureWarnings(True)
        return int(handlers[args.command](args) or EXIT_OK)
    except Clip2DepthError as exc:  # the command's flags replace the library's parameter names
        message = str(exc) if command is None else name_flags(exc, command)
        return _fail(message, show_traceback=verbose and not isinstance(exc, UsageError))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (`clip2depth info | head -1`): nothing to say
        _silence_stdout()
        return EXIT_ERROR
    except OSError as exc:
        return _fail(_describe_os_error(exc), show_traceback=verbose)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise  # a bug, not something the user did: keep its traceback visible
        return _fail(describe_out_of_memory(exc, command), show_traceback=verbose)


if __name__ == "__main__":
    sys.exit(main())
