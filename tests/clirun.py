"""Running the real ``clip2depth`` command line inside the test process, as a user would from a shell.

An exception that escapes :func:`clip2depth.cli.main` propagates out of :func:`run_cli` and fails
the test with its traceback, which is exactly what a user must never see.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from clip2depth.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run_cli(*argv: object) -> CliResult:
    """``clip2depth ARGV...``: exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's own exits (--help, --version, usage errors)
            code = exc.code if isinstance(exc.code, int) else 1
    return CliResult(int(code), out.getvalue(), err.getvalue())


def assert_user_error(result: CliResult, *fragments: str) -> str:
    """Exit status 1, exactly one ``error:`` line that contains every fragment, and no traceback."""
    assert "Traceback" not in result.err, result.err
    assert result.code == 1, (result.code, result.err)
    assert len(result.error_lines) == 1, result.err
    line = result.error_lines[0]
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line
