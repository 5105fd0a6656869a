"""``immortals upgrade test PATH... --app NEW``: would the new code have done what the old did?

Replays every recorded input of each log through NEW, from the starting checkpoint's state
(migrated to NEW's version), and compares what NEW produces with what the log recorded, step
by step. Exit 0 when every step is equal (or allowed), 1 when one diverged, 2 on bad input.

The ``immortals`` command finds this module through the ``immortals.commands`` entry point group
(pyproject.toml): the runtime below never imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from logformat import LogReader, read_meta
from logformat._errors import LogError
from replayer._replayer import open_log_dir
from runtime._apps import load_app
from runtime._errors import ImmortalsError
from runtime.cli_log import lsn_argument
from runtime.cli_run import add_instance_options, node_config, serve

from ._report import SUMMARY_HEADER, instance_text, summary_rows, to_json, write_junit
from ._rules import AllowRule, parse_rules
from ._run import InstanceResult, UpgradeError, check_log

RULES_HELP = """\
--allow rules (repeatable) declare expected differences; a step whose every difference is
allowed counts as allowed, not diverged:
  method:NAME       every difference of a step whose input calls NAME (or a timer callback of NAME)
  effect:KIND       one kind of effect: calls, replies (to instances), results (to outside callers
                    and main), emits, timers, cancelled, side_effects, nd (clock, seeds, uuids),
                    state (a --check-migration state difference), error (NEW raised out of a step);
                    the record keys out, rep, emit, tim, tcx, fx work too
  path:FIELD.PATH   a path in the step record or the state, '*' for any one key or index:
                    rep.0.2 (the first result's value), emit.*.total, out.*.4, state.balance

--junit FILE writes one testsuite per instance and one testcase per checked step range (the
range cut at its checkpoints), failed when a step in it diverged.
"""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "upgrade",
        help="test new code against recorded history (retroactive testing)",
        description="Upgrade tools: `immortals upgrade test` replays recorded inputs through "
        "new code and reports every step where it would have behaved differently.",
    )
    sub = p.add_subparsers(dest="upgrade_command", metavar="COMMAND", required=True)
    live = sub.add_parser(
        "live",
        help="replace a running instance by NEW, nothing lost, callers unaware",
        description="Start NEW beside the running instance: it follows the instance's log while "
        "the old one serves, checks NEW over the steps since the last checkpoint (refusing "
        "leaves the old one running), then asks it to stop (it drains and exits), replays the "
        "last steps, logs the upgrade step and serves. Callers reconnect by themselves.",
    )
    live.add_argument("name", metavar="NAME", help="the running instance")
    live.add_argument(
        "--app", required=True, metavar="NEW", help="path/to/file.py:Class or module:Class"
    )
    live.add_argument(
        "--skip-test", action="store_true", help="take over without checking NEW (default: check)"
    )
    add_instance_options(live, live_upgrade=True)
    live.set_defaults(handler=live_command)
    t = sub.add_parser(
        "test",
        help="replay recorded inputs through NEW and compare effects step by step",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog=RULES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "paths",
        metavar="PATH",
        nargs="*",
        help="log directories or instance names under --home (none, or --all: every instance)",
    )
    t.add_argument("--all", action="store_true", help="every instance under --home")
    t.add_argument(
        "--app", required=True, metavar="NEW", help="path/to/file.py:Class or module:Class"
    )
    t.add_argument(
        "--from", dest="from_lsn", type=lsn_argument, metavar="LSN", help="first step checked"
    )
    t.add_argument(
        "--to", dest="to_lsn", type=lsn_argument, metavar="LSN", help="last step checked"
    )
    t.add_argument(
        "--allow",
        action="append",
        metavar="RULE",
        help="an expected difference, repeatable (see the rules below; default: none)",
    )
    t.add_argument("--json", action="store_true", help="print one JSON document")
    t.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML to FILE")
    t.add_argument(
        "--check-migration",
        action="store_true",
        help="at each checkpoint, migrate-then-NEW must equal recorded-code-then-migrate",
    )
    t.add_argument(
        "--max-divergences",
        type=_count,
        default=5,
        metavar="N",
        help="divergences listed in detail per instance (default 5)",
    )
    t.add_argument(
        "--old-app",
        metavar="OLD",
        help="the code that recorded the log (default: the app the log names, if unchanged)",
    )
    t.add_argument("--allow-pickle", action="store_true", help="load pickled checkpoints")
    t.set_defaults(handler=test_command)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a count is a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a count is 0 or more, not {value}")
    return value


def log_dirs(paths: list[str], home: str, every: bool) -> list[Path]:
    """The logs to test: each PATH as `immortals replay` resolves it, or every instance's."""
    if paths and not every:
        return [open_log_dir(p, home) for p in paths]
    found = [*([open_log_dir(p, home) for p in paths])]
    logs = Path(home) / "logs"
    for entry in sorted(logs.iterdir()) if logs.is_dir() else ():
        try:
            read_meta(entry)
        except LogError:
            continue
        if entry not in found:
            found.append(entry)
    if not found:
        raise UpgradeError(f"no instance logs under {logs}")
    return found


def test_command(args: argparse.Namespace) -> int:
    rules = parse_rules(args.allow)
    dirs = log_dirs(args.paths, args.home, args.all)
    new = load_app(args.app)
    if args.old_app is not None:
        load_app(args.old_app)  # a typo is bad input, said before anything runs
    results: list[InstanceResult] = []
    total = sum(_size(d) for d in dirs)
    with _progress(total) as advance:
        for log_dir in dirs:
            results.append(
                check_log(
                    log_dir,
                    new,
                    from_lsn=args.from_lsn,
                    to_lsn=args.to_lsn,
                    allow=rules,
                    max_divergences=args.max_divergences,
                    check_migration=args.check_migration,
                    old_app=args.old_app,
                    allow_pickle=args.allow_pickle,
                    progress=advance,
                )
            )
    if args.junit is not None:
        try:
            write_junit(results, args.junit)
        except OSError as exc:
            raise UpgradeError(f"cannot write --junit {args.junit}: {exc.strerror}") from None
    if args.json:
        print(to_json(results, new.spec, []))
    else:
        _print_text(results, rules)
    return 0 if all(r.ok for r in results) else 1


def _print_text(results: list[InstanceResult], rules: list[AllowRule]) -> None:
    for r in results:
        print("\n".join(instance_text(r)))
    if len(results) > 1:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="upgrade test")
        for name in SUMMARY_HEADER:
            table.add_column(name, justify="left" if name in ("instance", "") else "right")
        for row in summary_rows(results):
            table.add_row(*row)
        Console(width=max(100, Console().width)).print(table)
    bad = [r for r in results if not r.ok]
    allowed = f" (allowing {', '.join(map(str, rules))})" if rules else ""
    if bad:
        print(f"FAILED: {len(bad)} of {len(results)} instances diverged{allowed}")
    else:
        print(
            f"ok: {len(results)} instance{'s' if len(results) != 1 else ''} replay equal{allowed}"
        )


def _size(log_dir: Path) -> int:
    try:
        with LogReader(log_dir) as reader:
            return max(0, reader.last_lsn - reader.first_lsn + 1)
    except (LogError, ImmortalsError):
        return 0


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long runs, only when a person is watching."""
    if not sys.stderr.isatty() or total < 10_000:
        yield lambda lsn: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("replaying through the new code", total=total)
        yield lambda lsn: progress.advance(task)


def live_command(args: argparse.Namespace) -> int:
    """``immortals upgrade live NAME --app NEW``: this process becomes the instance."""
    import asyncio

    from runtime._home import Home, check_name
    from runtime._node import Node

    config = node_config(args, take_over=True, upgrade_check="off" if args.skip_test else "default")
    app = load_app(args.app)
    node = Node(app, name=check_name(args.name), home=Home(Path(args.home)), config=config)
    return asyncio.run(serve(node))
