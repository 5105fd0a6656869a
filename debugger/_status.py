"""The status line: where you are in history, and the keys that matter most."""

from __future__ import annotations

import datetime as dt

from rich.text import Text
from textual.widgets import Static

HINTS = "j/k step  [ ] ±10  { } ±100  : go to  s lines  b break  c/C continue  w watch  ? help"


MERGED_HINTS = "> follow  < back  % call/reply  y why  1-9 instances  ? help"


class StatusLine(Static):
    """``LSN n of N · time · checkpoint distance · live or finished · hints``."""

    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        background: $primary-darken-3;
        color: $text;
    }
    """

    def show(
        self,
        *,
        lsn: int,
        last: int,
        wall_ns: int,
        checkpoint: int | None,
        live: bool,
        following: bool,
        busy: str = "",
    ) -> None:
        when = _when(wall_ns)
        distance = (
            f"{lsn - checkpoint} after checkpoint {checkpoint}" if checkpoint else "no checkpoint"
        )
        mode = "live, following" if following else ("live" if live else "finished")
        parts = [f"LSN {lsn:,} of {last:,}", when, distance, mode]
        if busy:
            parts.append(busy)
        text = Text(" " + "  ·  ".join(parts), style="bold")
        text.append("   " + HINTS, style="dim")
        self.update(text)

    def show_merged(
        self,
        *,
        position: int,
        merged: int,
        total: int,
        instance: str,
        lsn: int,
        wall_ns: int,
        busy: str = "",
    ) -> None:
        """``#n of N · instance LSN · time · merging``, for the merged timeline."""
        parts = [f"#{position:,} of {merged:,}", f"{instance} LSN {lsn:,}", _when(wall_ns)]
        if merged < total:
            parts.append(f"merging {100 * merged // max(1, total)}%")
        if busy:
            parts.append(busy)
        text = Text(" " + "  ·  ".join(parts), style="bold")
        text.append("   " + MERGED_HINTS, style="dim")
        self.update(text)


def _when(wall_ns: int) -> str:
    if not wall_ns:
        return "time unknown"
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{rest // 1_000_000:03d} UTC"
