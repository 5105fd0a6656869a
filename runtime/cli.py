"""The ``immortals`` command: one entry point, one module per command group.

Every error a user can cause (a bad path, an unknown name, a damaged log, a bad argument) is
printed as one line, ``immortals: error: ...``, with exit status 2 and no traceback. A
traceback means a bug in immortals.
"""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ImmortalsError, LogError) as exc:
        print(f"immortals: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0  # the reader of our output went away (`| head`): not an error
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
