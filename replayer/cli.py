"""``immortals replay PATH``: re-execute a recorded history and show it, check it, or query it.

Text output is one line per step (what came in, what went out, how state changed), then the
final state; ``--json`` prints one JSON object per step instead, for scripts. ``--verify`` prints
only the steps the code no longer reproduces and exits 1 when there is any. ``--state-at N``
prints the state after step N as JSON. ``--logpoint FILE:LINE:EXPR`` (repeatable) prints the
expression's value at every time that line ran, as if a print had been there, one line per hit
(``--json``: one object per hit); nothing is written and the app's files are not changed.

The ``immortals`` command finds this module through the ``immortals.commands`` entry point group
(pyproject.toml): the runtime below never imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runtime._cli_text import iso_time, json_value

from ._diff import Change, format_path
from ._logpoint import Hit, Logpoint, LogpointError, LogpointRun
from ._replayer import Replayer, Step, VerifyReport

_SHORT = 60
_LISTED = 20  # diverging steps listed in text form


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "replay",
        help="re-execute an instance's log offline and show each step",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("path", metavar="PATH", help="a log directory, or an instance name")
    p.add_argument("--app", help="path/to/file.py:Class or module:Class (default: from the log)")
    p.add_argument("--from", dest="from_lsn", type=_lsn, metavar="LSN", help="first step")
    p.add_argument("--to", dest="to_lsn", type=_lsn, metavar="LSN", help="last step")
    p.add_argument("--verify", action="store_true", help="only report steps that diverge")
    p.add_argument("--json", action="store_true", help="one JSON object per step")
    p.add_argument("--state-at", type=_lsn, metavar="LSN", help="print the state after LSN")
    p.add_argument("--allow-pickle", action="store_true", help="load pickled checkpoints")
    p.add_argument(
        "--logpoint",
        action="append",
        metavar="FILE:LINE:EXPR",
        help="print EXPR each time LINE of FILE ran, as a print added there would (repeatable)",
    )
    p.set_defaults(handler=replay_command)


def _lsn(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an LSN is a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"an LSN is 0 or more, not {value}")
    return value


def replay_command(args: argparse.Namespace) -> int:
    if args.logpoint:
        return _logpoints(args)
    with Replayer(args.path, app=args.app, home=args.home, allow_pickle=args.allow_pickle) as r:
        if args.state_at is not None:
            print(_dumps(r.state_at(args.state_at), indent=2))
            return 0
        first = r.first_lsn if args.from_lsn is None else args.from_lsn
        last = r.last_lsn if args.to_lsn is None else args.to_lsn
        if args.verify:
            return _verify(r, first, last, as_json=args.json)
        with _progress(first, last) as advance:
            for step in r.steps(first, last):
                print(_dumps(step.to_json()) if args.json else step_line(step))
                advance(step.lsn)
        if not args.json:
            print(f"state after step {last}: {_dumps(r.current_state())}")
    return 0


def _verify(r: Replayer, first: int, last: int, *, as_json: bool) -> int:
    with _progress(first, last) as advance:
        report = r.verify(first, last, progress=advance)
    if as_json:
        for d in report.divergences:
            print(_dumps(d.to_json()))
    else:
        print("\n".join(verify_lines(report, r.app.spec)))
    return 0 if report.ok else 1


def _logpoints(args: argparse.Namespace) -> int:
    if args.verify or args.state_at is not None:
        raise LogpointError("--logpoint is a replay of its own: leave out --verify and --state-at")
    with LogpointRun(
        args.path,
        args.logpoint,
        app=args.app,
        home=args.home,
        from_lsn=args.from_lsn,
        to_lsn=args.to_lsn,
        allow_pickle=args.allow_pickle,
    ) as run:
        for note in run.notes:
            print(f"immortals: note: {note}", file=sys.stderr)
        points, lines = run.logpoints, list[str]()

        def flush() -> None:  # one write per batch: under the bar, each write redraws it
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
                lines.clear()

        with _progress(run.first_lsn, run.last_lsn) as advance:

            def progress(done: int, _total: int) -> None:
                flush()
                advance(run.first_lsn + done - 1)

            for hit in run.hits(progress=progress):
                point = points[hit.logpoint]
                lines.append(_dumps(hit_json(hit, point)) if args.json else hit_line(hit, point))
            flush()
    return 0


def hit_line(hit: Hit, point: Logpoint) -> str:
    """One hit as a line: ``    12  2026-12-01T17:51:55.123+00:00  counter.py:16  self.count = 8``."""
    when = iso_time(hit.wall_ns) or "-"
    return f"{hit.lsn:>6}  {when}  {point.file}:{point.line}  {point.expression} = {hit.text}"


def hit_json(hit: Hit, point: Logpoint) -> dict[str, Any]:
    return {
        **hit.to_json(),
        "time": iso_time(hit.wall_ns, timespec="microseconds"),
        "file": point.file,
        "line": point.line,
        "expression": point.expression,
    }


def verify_lines(report: VerifyReport, app: str) -> list[str]:
    """The verdict of a verify run, one line per diverging step."""
    span = f"steps {report.first_lsn}..{report.last_lsn}"
    if report.ok:
        return [f"ok: {app} reproduces all {report.steps} {span}"]
    lines = [
        f"DIVERGED: {app} does not reproduce {len(report.divergences)} of {report.steps} {span}"
    ]
    for d in report.divergences[:_LISTED]:
        lines.append(
            f"  step {d.lsn}: {d.what}: recorded {_short(d.expected)}, replay {_short(d.actual)}"
        )
    if len(report.divergences) > _LISTED:
        lines.append(f"  ... {len(report.divergences) - _LISTED} more (--json lists all)")
    lines.append(
        "hint: the handler depends on something not recorded (the real clock, unseeded "
        "randomness, I/O) or its code changed; `immortals replay PATH --from N --to N` shows a step"
    )
    return lines


def step_line(step: Step) -> str:
    """One step as a line: ``12  call inc() from client#3  -> reply 9  | count: 8 -> 9``."""
    parts = [f"{step.lsn:>6}  {describe_input(step.input)}"]
    fx = step.effects
    parts += [f"-> call {c[0]}.{c[2]}({_args(c[3])})" for c in fx["calls"]]
    parts += [_reply_text(r) for r in fx["replies"]]
    parts += [f"-> emit {_short(e)}" for e in fx["emits"]]
    parts += [
        f"-> timer #{t[0]}" + (f" calls {t[2]}({_args(t[3])})" if len(t) > 2 else "")
        for t in fx["timers"]
    ]
    parts += [f"-> cancel timer #{tid}" for tid in fx["cancelled"]]
    parts += [f"-> side effect {name}() key {key}" for _eid, key, name in fx["side_effects"]]
    parts += [f"-> unhandled {f[0]}: {_short(f[1])}" for f in fx["failures"]]
    line = "  ".join(parts)
    if step.state_diff:
        line += "  | " + "; ".join(change_text(c) for c in step.state_diff)
    return line


def _reply_text(reply: list[Any]) -> str:
    ok, value = reply[-2], reply[-1]
    if len(reply) == 3 and reply[0] == "main":
        return "-> main() finished" if ok else f"-> main() raised {_short(value)}"
    return f"-> reply {_short(value)}" if ok else f"-> error {_short(value)}"


def describe_input(inp: dict[str, Any]) -> str:
    kind = inp.get("k")
    sender = inp.get("from")
    origin = f"from {sender}#{inp.get('seq')}" if sender else f"from outside ({inp.get('id')})"
    if kind == "start":
        return "start"
    if kind == "call":
        return f"call {inp.get('m')}({_args(inp.get('a', []))}) {origin}"
    if kind == "reply":
        outcome = _short(inp["ok"]) if "ok" in inp else "error " + _short(inp.get("err"))
        return f"reply to #{inp.get('re')} {origin}: {outcome}"
    if kind == "timer":
        return f"timer #{inp.get('tid')} fired"
    if kind == "upgrade":
        versions = (
            f"version {inp.get('fv')} -> {inp.get('tv')}, " if inp.get("tv") is not None else ""
        )
        return f"upgrade to {inp.get('to')} ({versions}from {inp.get('prev')})"
    if kind == "effect":
        outcome = _short(inp["ok"]) if "ok" in inp else "error " + _short(inp.get("err"))
        return f"side effect #{inp.get('eid')} returned: {outcome}"
    return _short(inp)


def change_text(change: Change) -> str:
    where = format_path(change.path)
    if change.kind == "added":
        return f"+{where} = {_short(change.new)}"
    if change.kind == "removed":
        return f"-{where}"
    return f"{where}: {_short(change.old)} -> {_short(change.new)}"


def _args(args: Any) -> str:
    return ", ".join(_short(a) for a in args) if isinstance(args, list) else _short(args)


def _short(value: Any) -> str:
    text = _dumps(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _dumps(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(json_value(value), indent=indent, ensure_ascii=False)


@contextmanager
def _progress(first: int, last: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long replays, only when a person is watching."""
    if not sys.stderr.isatty() or last - first < 10_000:
        yield lambda lsn: None
        return
    from rich.console import Console
    from rich.progress import Progress

    # Output to the same terminal goes through the bar's console (lines stay above the bar);
    # output to a file or a pipe is left alone (redirecting it would send it to the terminal).
    with Progress(
        console=Console(stderr=True),
        transient=True,
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    ) as progress:
        task = progress.add_task("replaying", total=last - first + 1)
        yield lambda lsn: progress.update(task, completed=lsn - first + 1)
