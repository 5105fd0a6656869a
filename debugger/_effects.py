"""The effects pane: the step's input, what it consumed, and everything it produced.

In line-by-line mode it shows the locals at the current line instead of the state-level view.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from replayer import Step, TraceLine


class EffectsView(Static):
    """Input, non-deterministic values, calls, replies, emits, timers, result or exception."""

    DEFAULT_CSS = """
    EffectsView {
        border: round $primary-darken-2;
        height: 1fr;
        overflow-y: auto;
    }
    """

    logpoint_lines: tuple[str, ...] = ()
    """The logpoint output shown for the step (what prints added there would have printed)."""

    def on_mount(self) -> None:
        self.border_title = "effects"

    def show_step(self, step: Step, logpoints: list[str] | None = None) -> None:
        self.border_title = f"step {step.lsn}: input and effects"
        self.logpoint_lines = tuple(logpoints or ())
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        table.add_row("input", _brief(step.input, 200))
        for kind, value in step.nondeterminism:
            table.add_row(f"used {kind}", recorded_value(kind, value))
        fx = step.effects
        for target, seq, method, args, wants in fx["calls"]:
            post = "" if wants else " (post, no reply)"
            table.add_row("call", f"{target}.{method}({_args(args)}) #{seq}{post}")
        for reply in fx["replies"]:
            ok, value = reply[-2], reply[-1]
            to = reply[0] if len(reply) == 5 else f"caller {reply[0]!r}"
            if ok:
                table.add_row("result", Text(f"{_brief(value)} → {to}", style="green"))
            else:
                table.add_row("exception", Text(f"{_exception(value)} → {to}", style="red"))
        for value in fx["emits"]:
            table.add_row("emit", _brief(value))
        for timer in fx["timers"]:
            calls = f", calls {timer[2]}({_args(timer[3])})" if len(timer) > 2 else ""
            table.add_row("timer", f"#{timer[0]} due at {local_time(timer[1])}{calls}")
        for tid in fx["cancelled"]:
            table.add_row("cancel", f"timer #{tid}")
        for _eid, key, name in fx["side_effects"]:
            table.add_row("side effect", f"{name}() with key {key!r}")
        for type_name, message, *_ in fx["failures"]:
            table.add_row("unhandled", Text(f"{type_name}: {message}", style="red"))
        if not any(fx.values()):
            table.add_row("", Text("no effects", style="italic"))
        for line in self.logpoint_lines:
            table.add_row("logpoint", Text(line, style="yellow"))
        self.update(table)

    def show_line(self, line: TraceLine, index: int, total: int, step: Step) -> None:
        self.border_title = f"step {step.lsn}: line {index + 1} of {total} ({line.event})"
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold magenta", no_wrap=True)
        table.add_column()
        table.add_row("at", f"{line.function}() line {line.line}")
        for name, value in line.locals.items():
            table.add_row(name, _brief(value, 200))
        hint = Text("↓/↑ next/previous line, esc back to steps", style="italic dim")
        self.update(Group(table, hint))

    def show_message(self, message: str) -> None:
        self.border_title = "effects"
        self.update(Text(message, style="italic"))


def recorded_value(kind: str, value: Any) -> str:
    """A non-deterministic value as a person reads it: a uuid as a UUID, a clock reading as a
    local time. The log keeps what the executor handed out (16 bytes, seconds since the epoch),
    which is exact but unreadable."""
    if kind == "uuid" and isinstance(value, bytes) and len(value) == 16:
        return str(uuid.UUID(bytes=value))
    if kind == "now" and isinstance(value, int | float) and not isinstance(value, bool):
        return local_time(value)
    return _brief(value)


def local_time(seconds: float) -> str:
    """Seconds since the epoch as ``2023-11-14 23:13:20.250 +0100``, in the local time zone
    (what ``self.now()`` meant to the handler), with the offset so it is never ambiguous."""
    try:
        moment = dt.datetime.fromtimestamp(seconds).astimezone()
    except (OverflowError, OSError, ValueError):
        return repr(seconds)  # not a time this machine can show: the number itself
    millis = moment.microsecond // 1000
    return f"{moment:%Y-%m-%d %H:%M:%S}.{millis:03d} {moment:%z}"


def _args(args: Any) -> str:
    return ", ".join(_brief(a, 30) for a in args) if isinstance(args, list) else _brief(args)


def _exception(value: Any) -> str:
    if isinstance(value, list) and len(value) in (2, 3):  # [type, message(, lsn)]
        return f"{value[0]}: {value[1]}"
    return _brief(value)


def _brief(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
