"""The timeline: one row per step, for logs of any length.

Never one widget per step: the widget knows only how many rows there are and draws the visible
ones (Textual's line API). Rows come from the history's block cache; a row not loaded yet is
drawn as a placeholder while a thread worker reads its block, then the view redraws, the way
toolong reads big files.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Set
from typing import ClassVar, Protocol

from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ._history import Row

CURSOR_STYLE = Style(bgcolor="#264f78", color="white", bold=True)
MARKED_STYLE = Style(bgcolor="#4b3b00")
HIT_STYLE = Style(color="#e5c07b")
DIM_STYLE = Style(color="#7f848e")
CHECKPOINT_STYLE = Style(color="#98c379", bold=True)
UPGRADE_STYLE = Style(color="#c678dd", bold=True)


HIT_MARK, CHECKPOINT_MARK, UPGRADE_MARK = "●", "C", "U"
MARKS: list[tuple[str, str]] = [
    (HIT_MARK, "a breakpoint hit (c / C stopped here)"),
    (CHECKPOINT_MARK, "a checkpoint: the state after this step is on disk"),
    (UPGRADE_MARK, "a code upgrade: a new code version ran from this step on"),
]
"""The markers of the timeline's second column, for the help screen."""


def clock(wall_ns: int) -> str:
    """Wall time of a step as ``HH:MM:SS.mmm`` (UTC): the date is in the status line."""
    if not wall_ns:
        return "--:--:--.---"
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%H:%M:%S") + f".{rest // 1_000_000:03d}"


class RowSource(Protocol):
    """What the timeline draws from: one log's :class:`History` (positions are LSNs), or the
    merged history of several (positions in the merged order)."""

    @property
    def first_lsn(self) -> int: ...
    @property
    def last_lsn(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def checkpoints(self) -> Set[int]: ...
    @property
    def upgrades(self) -> Set[int]: ...
    def cached_row(self, lsn: int) -> Row | None: ...
    def load_rows(self, lsn: int) -> None: ...


class Timeline(ScrollView, can_focus=True):
    """Every step of the log, one row each; the cursor row is the selected step."""

    DEFAULT_CSS = """
    Timeline {
        border: round $primary-darken-2;
        border-title-color: $text;
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
    }
    Timeline:focus { border: round $accent; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down,j", "move(1)", "next", show=False),
        Binding("up,k", "move(-1)", "previous", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
    ]

    cursor: reactive[int] = reactive(1)
    """The selected step's LSN."""
    mark: reactive[int | None] = reactive(None)
    """A step marked for diffing against (``m``)."""

    class Selected(Message):
        """The cursor moved to another step."""

        def __init__(self, lsn: int) -> None:
            self.lsn = lsn
            super().__init__()

    class RowsLoaded(Message):
        """A block of rows arrived from the log (the status line may now know the time)."""

    def __init__(self, history: RowSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history = history
        self.watch_columns: list[str] = []
        self.watch_values: dict[int, list[str]] = {}
        self.logpoint_columns: list[str] = []
        """Logpoints shown as columns (after the watches), their cells from ``logpoint_cell``."""
        self.logpoint_cell: Callable[[int, int], str] = lambda lsn, index: ""
        self.hits: set[int] = set()
        self.only: list[int] | None = None  # a filter's matching LSNs, ascending (None: all)
        self.cursor = history.first_lsn
        self._loading: set[int] = set()

    # -- size and drawing --------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.border_title = self.default_title()
        self.update_size()

    def default_title(self) -> str:
        return "timeline"

    def update_size(self) -> None:
        self.virtual_size = Size(self.size.width, self.row_count + 1)  # +1: the header
        self.refresh()

    def on_resize(self) -> None:
        self.update_size()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._header(width)
        lsn = self.lsn_at(int(self.scroll_offset.y) + y - 1)
        if lsn is None:
            return Strip.blank(width)
        row = self.history.cached_row(lsn)
        if row is None:
            self.request_row(lsn)
            return Strip([Segment(f"{lsn:>9}  …".ljust(width), DIM_STYLE)], width)
        return self._row(row, width)

    def _header(self, width: int) -> Strip:
        watches = "".join(f" {w[:14]:<14}" for w in self.watch_columns + self.logpoint_columns)
        text = f"{'LSN':>9} {'':2}{'time':<12}  {'kind':<6} {'from':<10} {'fx':>2}{watches}  input"
        return Strip([Segment(text[:width].ljust(width), Style(bold=True, underline=True))], width)

    def _row(self, row: Row, width: int) -> Strip:
        marker, marker_style = "  ", DIM_STYLE
        if row.lsn in self.history.upgrades:
            marker, marker_style = f"{UPGRADE_MARK} ", UPGRADE_STYLE
        elif row.lsn in self.history.checkpoints:
            marker, marker_style = f"{CHECKPOINT_MARK} ", CHECKPOINT_STYLE
        if row.lsn in self.hits:
            marker, marker_style = f"{HIT_MARK} ", HIT_STYLE
        values = self.watch_values.get(row.lsn)
        watches = "".join(
            f" {(values[i] if values and i < len(values) else '…'):<14}"
            for i in range(len(self.watch_columns))
        ) + "".join(
            f" {self.logpoint_cell(row.lsn, i)[:14]:<14}" for i in range(len(self.logpoint_columns))
        )
        sender = row.sender[:10]
        body = (
            f"{clock(row.wall_ns):<12}  {row.kind:<6} {sender:<10} {row.effects:>2}{watches}  "
            f"{row.summary}"
        )
        base = Style()
        if row.lsn == self.mark:
            base = MARKED_STYLE
        if row.lsn == self.cursor:
            base = CURSOR_STYLE
        segments = [
            Segment(f"{row.lsn:>9} ", base),
            Segment(marker, base + marker_style if row.lsn != self.cursor else base),
            Segment(body[: max(0, width - 12)].ljust(max(0, width - 12)), base),
        ]
        return Strip(segments, width)

    @work(thread=True, group="rows")
    def _load(self, lsn: int) -> None:
        self.history.load_rows(lsn)
        self.app.call_from_thread(self._loaded, lsn)

    def request_row(self, lsn: int) -> None:
        """Have the block holding ``lsn`` read in the background, unless it is on its way."""
        block = (lsn - self.history.first_lsn) // 256
        if block not in self._loading:
            self._loading.add(block)
            self._load(lsn)

    def _loaded(self, lsn: int) -> None:
        self._loading.discard((lsn - self.history.first_lsn) // 256)
        self.refresh()
        self.post_message(self.RowsLoaded())

    # -- moving ------------------------------------------------------------------------------------

    # -- rows shown: all steps, or a filter's matches ------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.only) if self.only is not None else self.history.count

    def lsn_at(self, index: int) -> int | None:
        """The LSN shown at row ``index`` (0 is the first row under the header)."""
        if index < 0 or index >= self.row_count:
            return None
        return self.only[index] if self.only is not None else self.history.first_lsn + index

    def index_of(self, lsn: int) -> int:
        """The row showing ``lsn``, or (filtered) the row of the first match after it."""
        if self.only is None:
            return lsn - self.history.first_lsn
        return min(bisect.bisect_left(self.only, lsn), max(0, len(self.only) - 1))

    def set_filter(self, lsns: list[int] | None) -> None:
        """Show only ``lsns`` (ascending), or every step again with None."""
        self.only = lsns
        self.update_size()
        if lsns:
            self.cursor = lsns[self.index_of(self.cursor)]  # the first match from here on
        self._scroll_into_view(self.cursor)

    def go(self, lsn: int) -> None:
        """Select step ``lsn`` (clamped to the log) and scroll it into view.

        With a filter on, a step it hides clears the filter: the user asked for that step.
        """
        lsn = max(self.history.first_lsn, min(self.history.last_lsn, lsn))
        if self.only is not None and lsn not in self._only_set():
            self.only = None
            self.update_size()
        self.cursor = lsn

    def _only_set(self) -> set[int]:
        return set(self.only or ())

    def move_by(self, delta: int) -> None:
        """Move ``delta`` rows (of the filtered rows, when filtered)."""
        index = max(0, min(self.row_count - 1, self.index_of(self.cursor) + delta))
        target = self.lsn_at(index)
        if target is not None:
            self.cursor = target

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_into_view(new)
        self.refresh()
        self.post_message(self.Selected(new))

    def watch_mark(self) -> None:
        self.refresh()

    def _scroll_into_view(self, lsn: int) -> None:
        index = self.index_of(lsn)
        visible = max(1, self.size.height - 1)
        top = int(self.scroll_offset.y)
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + visible:
            self.scroll_to(y=index - visible + 1, animate=False)

    def action_move(self, delta: int) -> None:
        stepper = getattr(self.app, "move_line", None)  # stepping through a handler's lines
        if stepper is not None and stepper(delta):
            return
        self.move_by(delta)

    def action_page(self, direction: int) -> None:
        self.move_by(direction * max(1, self.size.height - 2))

    def visible_range(self) -> tuple[int, int]:
        """First and last LSN on screen (the range to re-execute for watch columns)."""
        top = int(self.scroll_offset.y)
        first = self.lsn_at(top) or self.history.first_lsn
        bottom = min(self.row_count - 1, top + max(1, self.size.height - 1) - 1)
        last = self.lsn_at(bottom) or first
        return first, last

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y >= 1:
            target = self.lsn_at(int(self.scroll_offset.y) + offset.y - 1)
            if target is not None:
                self.cursor = target
