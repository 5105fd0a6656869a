"""``immortals debug PATH [--app APP]``: open the time-travel debugger on an instance's log.

The ``immortals`` command finds this module through the ``immortals.commands`` entry point group
(pyproject.toml): the runtime below never imports it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
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
    """Open the debugger, or fail in one line before the screen is taken over.

    A log that cannot be opened used to be a full-screen message waiting for ``q``, which hangs
    a script that runs ``immortals debug`` (and says nothing to a pipe): it is an error line
    with a hint and exit status 2 instead, like every other command's.
    """
    from logformat import NotALogError
    from replayer._replayer import open_log_dir
    from runtime._errors import ImmortalsError

    from ._app import DebuggerApp  # Textual loads only for this command

    try:
        log_dir = open_log_dir(args.path, args.home)
    except NotALogError as exc:
        raise NotALogError(f"{exc} ({instances_hint(args.home)})") from None
    app = DebuggerApp(log_dir, app=args.app, home=args.home, index=not args.no_index)
    if app.open_error is not None:
        raise ImmortalsError(f"cannot open {log_dir}: {app.open_error}")
    app.run()
    return app.return_code or 0  # non-zero when the app ended on an unexpected error


def instances_hint(home: str | os.PathLike[str]) -> str:
    """The names that would work, for a name or path that did not."""
    logs = Path(home) / "logs"
    try:
        names = sorted(p.name for p in logs.iterdir() if (p / "meta.json").is_file())
    except OSError:
        names = []
    if names:
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return f"hint: instances under {home}: {shown}; a path to a log directory works too"
    return f"hint: no instance has a log under {home}; pass --home DIR or a log directory"
