"""Presentation helpers shared by the ``immortals`` commands: times, sizes, JSON, colour, tables.

Commands gather plain data first and hand it to these functions to print, so what a command
knows can be tested (and reused by other tools) apart from how it looks. Colour and rich
rendering happen only on a terminal: piped output stays plain text that scripts can parse.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import math
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Literal, TextIO

Row = tuple[str, str]
"""One ``key  value`` line of a report; a value may hold several lines."""


def iso_time(wall_ns: int | None, *, timespec: str = "milliseconds") -> str | None:
    """Nanoseconds since the epoch as ISO-8601 UTC (None for an unknown time, stored as 0).

    Integer arithmetic, not ``ns / 1e9``: a float loses the low digits of today's timestamps.
    """
    if not wall_ns:
        return None
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).replace(microsecond=rest // 1000)
    return moment.isoformat(timespec=timespec)


def human_size(n: int) -> str:
    """A byte count a person can read at a glance (powers of 1024)."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def plural(n: int, word: str) -> str:
    """``1 segment``, ``3 segments``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def json_value(value: Any) -> Any:
    """A stored value made JSON-friendly, keeping as much of its meaning as JSON can carry.

    Logged values use msgpack's extension types (tuple, set, datetime, ...) that JSON lacks; a
    script reading ``--json`` output wants plain data, not an error. Sets come out sorted when
    their items compare, so the same set always prints the same way.
    """
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, set | frozenset):
        try:
            ordered = sorted(value)
        except TypeError:
            ordered = list(value)
        return [json_value(v) for v in ordered]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity; "nan", "inf", "-inf" keep the meaning
    return value


@functools.cache
def _lexer(language: Literal["json", "python"]) -> Any:
    from pygments.lexers import JsonLexer, PythonLexer

    return JsonLexer() if language == "json" else PythonLexer()


@functools.cache
def _formatter() -> Any:
    from pygments.formatters import TerminalFormatter

    return TerminalFormatter()


def colourise(line: str, language: Literal["json", "python"]) -> str:
    """``line`` with terminal colour codes (call only when printing to a terminal)."""
    from pygments import highlight

    coloured: str = highlight(line, _lexer(language), _formatter())
    return coloured.rstrip("\n")


def format_rows(title: str, rows: Sequence[Row]) -> str:
    """Rows as plain aligned text: the form for pipes, files and tests."""
    width = max((len(key) for key, _ in rows), default=0)
    lines = [title]
    for key, value in rows:
        first, *more = value.split("\n")
        lines.append(f"  {key.ljust(width)}  {first}")
        lines.extend(f"  {'':{width}}  {line}" for line in more)
    return "\n".join(lines)


def print_rows(title: str, rows: Sequence[Row], *, out: TextIO | None = None) -> None:
    """A titled key/value report: a rich table on a terminal, aligned plain text elsewhere."""
    stream = sys.stdout if out is None else out
    if not stream.isatty():
        print(format_rows(title, rows), file=stream)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, Text(value))  # Text: a value's "[...]" is data, not rich markup
    Console(file=stream).print(table)


@contextmanager
def working(message: str) -> Iterator[None]:
    """A spinner on stderr while something slow runs, only when a person is watching."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under headers in aligned columns, as plain text (scripts should read ``--json``)."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )
