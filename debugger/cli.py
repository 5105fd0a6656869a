"""``immortals debug PATH... | --all``: open the time-travel debugger on instances' logs.

One PATH (a log directory or an instance name) opens that log as always; several, or
``--all`` (every instance with a log under the home), open one merged, causally ordered
timeline over them (docs/GUIDE.md, "Several instances at once").

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
    p.add_argument(
        "paths",
        metavar="PATH",
        nargs="*",
        help="a log directory, or an instance name; several open one merged timeline",
    )
    p.add_argument(
        "--all", action="store_true", help="every instance with a log under the home, merged"
    )
    p.add_argument(
        "--app",
        help="path/to/file.py:Class or module:Class (default: from the log; one log only)",
    )
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
    from runtime._errors import ImmortalsError

    from ._app import DebuggerApp  # Textual loads only for this command

    log_dirs = _log_dirs(args)
    if len(log_dirs) > 1:
        from ._merged_app import MergedDebuggerApp

        merged = MergedDebuggerApp(log_dirs, home=args.home, index=not args.no_index)
        if merged.open_error is not None:
            raise ImmortalsError(f"cannot open the logs: {merged.open_error}")
        merged.run()
        return merged.return_code or 0
    log_dir = log_dirs[0]
    app = DebuggerApp(log_dir, app=args.app, home=args.home, index=not args.no_index)
    if app.open_error is not None:
        raise ImmortalsError(f"cannot open {log_dir}: {app.open_error}")
    app.run()
    return app.return_code or 0  # non-zero when the app ended on an unexpected error


def _log_dirs(args: argparse.Namespace) -> list[Path]:
    """The log directories the arguments name, or an error line for names that do not work:
    none given, an unknown one, one given twice, ``--all`` with names or over an empty home,
    ``--app`` with several logs (each runs its own recorded code)."""
    from logformat import NotALogError
    from replayer._replayer import open_log_dir
    from runtime._errors import ImmortalsError

    if args.all and args.paths:
        raise ImmortalsError("give instance names or --all, not both")
    if args.all:
        names = _instance_names(args.home)
        if not names:
            raise ImmortalsError(f"--all: {instances_hint(args.home).removeprefix('hint: ')}")
        paths: list[str] = names
    else:
        paths = list(args.paths)
    if not paths:
        raise ImmortalsError("give a log directory or an instance name (several, or --all, merge)")
    if args.app and len(paths) > 1:
        raise ImmortalsError("--app applies to one log; several logs each replay their own code")
    found: list[Path] = []
    for path in paths:
        try:
            log_dir = open_log_dir(path, args.home)
        except NotALogError as exc:
            raise NotALogError(f"{exc} ({instances_hint(args.home)})") from None
        if any(log_dir.resolve() == seen.resolve() for seen in found):
            raise ImmortalsError(f"{path} is given twice")
        found.append(log_dir)
    return found


def _instance_names(home: str | os.PathLike[str]) -> list[str]:
    """Every instance with a log under ``home``, by name."""
    logs = Path(home) / "logs"
    try:
        return sorted(p.name for p in logs.iterdir() if (p / "meta.json").is_file())
    except OSError:
        return []


def instances_hint(home: str | os.PathLike[str]) -> str:
    """The names that would work, for a name or path that did not."""
    names = _instance_names(home)
    if names:
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return f"hint: instances under {home}: {shown}; a path to a log directory works too"
    return f"hint: no instance has a log under {home}; pass --home DIR or a log directory"
