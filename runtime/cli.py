"""The ``immortals`` command: one entry point, one module per command group.

Every error a user can cause (a bad path, an unknown name, a damaged log, a bad argument) is
printed as one line, ``immortals: error: ...``, with exit status 2 and no traceback. A
traceback means a bug in immortals.

A command group is one module with ``add_parser(subparsers)``, which adds its subcommands and
sets ``handler`` (a function of the parsed arguments returning the exit status); adding a group
is one import and one call in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence

from logformat import LogError

from . import cli_call, cli_log, cli_run
from ._errors import ImmortalsError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """argparse's own errors: one line (no usage dump), exit 2."""
        self.exit(2, f"immortals: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="immortals",
        description="Virtual resiliency for Python: run immortals and inspect their logs.",
    )
    parser.add_argument(
        "--home", default=".immortals", help="registry, logs and secret (default ./.immortals)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_run.add_parser(commands)
    cli_call.add_parser(commands)
    cli_log.add_parser(commands)
    from replayer import cli as replay_cli  # the replayer is built on the runtime, not in it

    replay_cli.add_parser(commands)
    from debugger import cli as debug_cli

    debug_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status is returned, so ``raise SystemExit(main())`` works.

    Usage errors return 2 instead of raising SystemExit, so tests and embedding callers get
    the same answer as the shell.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.handler(args))
    except (ImmortalsError, LogError) as exc:
        print(f"immortals: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return 0  # the reader of our output went away (`| head`): not an error
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into the closed pipe is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (captured in tests): nothing will be flushed


if __name__ == "__main__":
    raise SystemExit(main())
