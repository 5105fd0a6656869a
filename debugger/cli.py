"""``immortals debug PATH [--app APP]``: open the time-travel debugger on an instance's log.

The ``immortals`` command finds this module through the ``immortals.commands`` entry point group
(pyproject.toml): the runtime below never imports it.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "debug",
        help="step through an instance's history in a terminal UI, backward and forward",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("path", metavar="PATH", help="a log directory, or an instance name")
    p.add_argument("--app", help="path/to/file.py:Class or module:Class (default: from the log)")
    p.add_argument(
        "--no-index",
        action="store_true",
        help="do not replay the log in the background to make jumps fast",
    )
    p.set_defaults(handler=debug_command)


def debug_command(args: argparse.Namespace) -> int:
    from ._app import DebuggerApp  # Textual loads only for this command

    DebuggerApp(args.path, app=args.app, home=args.home, index=not args.no_index).run()
    return 0
