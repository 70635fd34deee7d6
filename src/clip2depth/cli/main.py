"""The ``clip2depth`` command line: one subcommand module per task (see ``clip2depth.cli``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from clip2depth import __version__
from clip2depth.errors import Clip2DepthError

COMMANDS = [
    "info", "eval", "train", "demo", "predict", "export", "ablate", "consistency", "inspect_mirror", "app",
]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="clip2depth",
        description="Metric depth from a frozen CLIP (CLIP2Depth): train, evaluate, predict, export.",
    )
    parser.add_argument("--version", action="version", version=f"clip2depth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for name in COMMANDS:
        module = importlib.import_module(f"clip2depth.cli.{name}")
        module.add_parser(sub)
        handlers[module.NAME] = module.run
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(handlers[args.command](args) or 0)
    except Clip2DepthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
