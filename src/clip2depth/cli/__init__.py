"""The ``clip2depth`` command line: ``main`` plus one module per subcommand (flags, then a call into the library)."""

from clip2depth.cli.main import main

__all__ = ["main"]
