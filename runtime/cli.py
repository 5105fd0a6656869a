"""The ``immortals`` command: one entry point, assembled from the packages that provide commands.

Every error a user can cause (a bad path, an unknown name, a damaged log, a bad argument) is
printed as one line, ``immortals: error: ...``, with exit status 2 and no traceback. A
traceback means a bug in immortals.

A command group is one module with ``add_parser(subparsers)``, which adds its subcommands and
sets ``handler`` (a function of the parsed arguments returning the exit status). Groups are
found through the entry point group ``immortals.commands`` (see pyproject.toml): each package
registers its own, so the runtime never imports the packages built on top of it. Adding a
command is one line there, ``NAME = "package.module:add_parser"``, and a reinstall. The
runtime's own groups (run, call, status and stop, log) also work without any installed
metadata, so ``python -m runtime`` from a bare checkout still runs instances.

Global options (``--home``) are accepted before or after the subcommand; after wins.

A command line that names its command loads that command's group alone (``immortals run``
does not import the replayer, the upgrade tools or the log commands: a restart's time to
serving is mostly the interpreter starting and importing); ``--help``, ``--version`` and a
name no group has load them all, so the list and the "invalid choice" error stay whole.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import Any

from logformat import LogError

from ._errors import ImmortalsError
from ._home import DEFAULT_HOME

ENTRY_POINT_GROUP = "immortals.commands"
HOME_VARIABLE = "IMMORTALS_HOME"

AddParser = Callable[["argparse._SubParsersAction[Any]"], None]

# The runtime's own groups (their modules), in the order --help lists them; they come first.
_OWN: dict[str, str] = {
    "run": "runtime.cli_run",
    "call": "runtime.cli_call",
    "status": "runtime.cli_status",  # status and stop
    "log": "runtime.cli_log",
}
_OWN_COMMANDS = {"stop": "status"}  # commands a group adds besides the one of its name


def _own_group(name: str) -> AddParser:
    add: AddParser = importlib.import_module(_OWN[name]).add_parser
    return add


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """argparse's own errors: one line (no usage dump), exit 2."""
        self.exit(2, f"immortals: error: {message} (see `{self.prog} --help`)\n")


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def package_version() -> str:
    try:
        return version("immortals")
    except PackageNotFoundError:
        return "unknown"


def command_groups(
    points: Sequence[EntryPoint] | None = None,
    warn: Callable[[str], None] = _warn,
    *,
    only: str | None = None,
) -> list[tuple[str, AddParser]]:
    """Every registered command group, the runtime's first, then the others by name; with
    ``only``, the group of that name alone (loading nothing else).

    ``points`` defaults to the installed entry points of :data:`ENTRY_POINT_GROUP`. A group
    that cannot be loaded is left out with one line through ``warn``; the rest still work. The
    runtime's own groups are used directly when not registered (a checkout run as
    ``python -m runtime`` without ``pip install -e .``).
    """
    if only in _OWN:
        return [(only, _own_group(only))]
    if points is None:
        points = _installed()
    if only is not None:
        points = [point for point in points if point.name == only]
    found: dict[str, AddParser] = {}
    broken: dict[str, str] = {}
    for point in points:
        if point.name in found:
            continue  # two packages register one name: the first found keeps it
        try:
            found[point.name] = point.load()
        except Exception as exc:
            broken.setdefault(point.name, f"cannot load {point.value}: {_one_line(exc)}")
        else:
            broken.pop(point.name, None)
    for name, problem in sorted(broken.items()):
        if name not in _OWN:  # the runtime's own are at hand without their entry points
            warn(f"immortals: warning: the `{name}` command is missing ({problem})")
    if only is not None:
        return list(found.items())
    own = [(name, found.get(name) or _own_group(name)) for name in _OWN]
    return own + sorted((name, add) for name, add in found.items() if name not in _OWN)


def _group_named_by(argv: Sequence[str], points: Sequence[EntryPoint] | None) -> str | None:
    """The group of the command ``argv`` names, if it names one (None: load them all)."""
    for i, token in enumerate(argv):
        if token.startswith("--home="):
            continue
        if token == "--home":
            if i + 1 >= len(argv):
                return None
            continue
        if i > 0 and argv[i - 1] == "--home":
            continue  # the directory
        if token.startswith("-"):
            return None  # --help, --version, or an option argparse will refuse
        group = _OWN_COMMANDS.get(token, token)
        if group in _OWN:
            return group
        names = {p.name for p in (points if points is not None else _installed())}
        return group if group in names else None
    return None


def _installed() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def build_parser(
    points: Sequence[EntryPoint] | None = None,
    warn: Callable[[str], None] = _warn,
    argv: Sequence[str] | None = None,
) -> argparse.ArgumentParser:
    """The command line; ``points`` and ``warn`` as for :func:`command_groups`. Given the
    ``argv`` it will parse, only the group of the command it names is loaded."""
    only = _group_named_by(argv, points) if argv is not None else None
    if only in _OWN:
        points = []  # not needed: the runtime's own group is at hand
    elif points is None:
        points = _installed()
    parser = _Parser(
        prog="immortals",
        description="Virtual resiliency for Python: run immortals and inspect their logs.",
    )
    parser.add_argument("--version", action="version", version=f"immortals {package_version()}")
    _add_global_options(parser)
    if not points and only is None:
        parser.epilog = (
            "Only the runtime's commands are here: the others register themselves when "
            "immortals is installed (pip install -e .)."
        )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, add_parser in command_groups(points, warn, only=only):
        try:
            add_parser(commands)
        except Exception as exc:
            warn(f"immortals: warning: the `{name}` command is missing ({_one_line(exc)})")
    for sub in _subparsers(parser):
        _add_global_options(sub)
    return parser


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--home`` on ``parser``; absent unless given, so a later (inner) one overrides."""
    if "--home" in parser._option_string_actions:
        return
    parser.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"registry, logs and secret (default: ${HOME_VARIABLE}, else ./{DEFAULT_HOME})",
    )


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (subcommands, and their subcommands), each once."""
    seen: set[int] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if id(sub) not in seen:
                        seen.add(id(sub))
                        pending.append(sub)
                        yield sub


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; ``home`` comes from the environment when not given."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv=argv).parse_args(argv)
    if getattr(args, "home", None) is None:
        args.home = os.environ.get(HOME_VARIABLE) or DEFAULT_HOME
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status is returned, so ``raise SystemExit(main())`` works.

    Usage errors return 2 instead of raising SystemExit, so tests and embedding callers get
    the same answer as the shell.
    """
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2), printed
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
