"""The merged timeline: the steps of several instances in one causal order, each row tagged
with its instance in that instance's colour.

It is the one-log :class:`Timeline` over a :class:`MergedHistory`: positions in the merged
order take the place of LSNs (the cursor, the mark, breakpoint hits and filters are all
positions), and only the row drawing differs. The merge goes on in the background; the app
calls :meth:`Timeline.update_size` as it grows.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from ._merged import MergedHistory, MergedRow
from ._timeline import (
    CHECKPOINT_STYLE,
    CURSOR_STYLE,
    DIM_STYLE,
    HIT_STYLE,
    MARKED_STYLE,
    UPGRADE_STYLE,
    Timeline,
    clock,
)

IN_FLIGHT_MARK = "~"
_IN_FLIGHT = Style(color="#e06c75", bold=True)

MERGED_MARKS: list[tuple[str, str]] = [
    (IN_FLIGHT_MARK, "the step sent a message its target's log never received (in flight)"),
]
"""The merged timeline's own markers, for the help screen."""


class MergedTimeline(Timeline):
    """Every step of every opened instance, one row each, in causal order."""

    def __init__(self, merged: MergedHistory, *, id: str | None = None) -> None:
        super().__init__(merged, id=id)
        self.merged = merged
        self.hidden: set[str] = set()
        """Instances whose rows are filtered out."""

    def default_title(self) -> str:
        shown = [n for n in self.merged.names if n not in self.hidden]
        merged = "" if self.merged.merge.done else f" (merging: {self.merged.count:,} so far)"
        return f"timeline of {', '.join(shown)}{merged}"

    def _header(self, width: int) -> Strip:
        watches = "".join(f" {w[:14]:<14}" for w in self.watch_columns)
        text = (
            f"{'#':>6} {'instance':<8} {'LSN':>6} {'':2}{'time':<12} {'kind':<6} {'from':<8}"
            f"{watches}  input"
        )
        return Strip([Segment(text[:width].ljust(width), Style(bold=True, underline=True))], width)

    def _row(self, row: MergedRow, width: int) -> Strip:  # type: ignore[override]
        marker: str = self.merged.marker(row.lsn)
        styles = {"~": _IN_FLIGHT, "C": CHECKPOINT_STYLE, "U": UPGRADE_STYLE}
        marker_style = styles.get(marker, DIM_STYLE)
        if row.lsn in self.hits:
            marker, marker_style = "●", HIT_STYLE
        values = self.watch_values.get(row.lsn)
        watches = "".join(
            f" {(values[i] if values and i < len(values) else '…'):<14}"
            for i in range(len(self.watch_columns))
        )
        body = f"{clock(row.wall_ns):<12} {row.kind:<6} {row.sender[:8]:<8}{watches}  {row.summary}"
        base = Style()
        if row.lsn == self.mark:
            base = MARKED_STYLE
        if row.lsn == self.cursor:
            base = CURSOR_STYLE
        tag = Style(color=self.merged.colour(row.instance), bold=True)
        rest = max(0, width - 25)
        segments = [
            Segment(f"{row.lsn:>6} ", base),
            Segment(f"{row.instance[:8]:<8} ", base + tag if row.lsn != self.cursor else base),
            Segment(f"{row.step_lsn:>6} ", base),
            Segment(f"{marker or ' ':<2}", base + marker_style if row.lsn != self.cursor else base),
            Segment(body[:rest].ljust(rest), base),
        ]
        return Strip(segments, width)

    def show_instances(self, hidden: set[str]) -> None:
        """Hide the rows of ``hidden`` instances (none: every row again)."""
        self.hidden = set(hidden)
        if hidden:
            self.set_filter(self.merged.merge.positions_of(set(self.merged.names) - hidden))
        else:
            self.set_filter(None)
        self.border_title = self.default_title()
