"""The debugger over several instances: one causally ordered timeline, every instance at the
selected step's consistent cut, and keys that follow messages across instances.

It is :class:`DebuggerApp` with a :class:`MergedHistory` in place of one history: the
timeline's positions are merged positions, and every action that asked one history asks the
merged one (which asks each instance's history in turn). Keys of its own: ``>`` follows a
sent message to the step that received it (again: the step's next message), ``<`` goes back
to the step that sent this step's input, ``%`` goes between a call and the step that got its
reply, ``y`` ("why") walks the causal chain backward one hop per press, ``1``-``9`` hide or
show an instance's rows. Following a live log is a one-log feature: the merged view reads
the logs as they were when it opened.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual.worker import get_current_worker

from logformat import CorruptLogError, LogError
from runtime._errors import ImmortalsError

from ._app import DebuggerApp
from ._causal import Hop
from ._dialogs import HelpScreen, Prompt
from ._effects import EffectsView
from ._history import StepView
from ._merged import CutState, MergedHistory, MergedWatch
from ._merged_timeline import MERGED_MARKS, MergedTimeline
from ._source import SourceView
from ._state import StateView
from ._status import StatusLine

MERGED_KEYS: list[tuple[str, str]] = [
    (">", "follow a message this step sent to the step that received it (again: the next one)"),
    ("<", "back to the step that sent this step's input (a call or a reply)"),
    ("%", "between a call and the step that received its reply"),
    ("y", "why: the previous hop of the causal chain (a message, a timer, a side effect)"),
    ("1-9", "hide or show the rows of instance 1-9 (in the order given)"),
    (":", "go to NAME:LSN (a step of an instance) or N (a position in the merged timeline)"),
    ("w", "a watch may name an instance: server.count (its value at or before each row)"),
]
"""The merged view's own keys, for the help screen (listed before the one-log keys)."""


class MergedDebuggerApp(DebuggerApp):
    """``immortals debug NAME NAME...`` or ``--all``: several instances in one timeline."""

    TITLE = "immortals debug (merged)"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("greater_than_sign", "follow_message", "follow message", show=False),
        Binding("less_than_sign", "follow_back", "back to sender", show=False),
        Binding("percent_sign", "call_and_reply", "call / reply", show=False),
        Binding("y", "why", "why", show=False),
        *[Binding(str(k), f"toggle_instance({k})", show=False) for k in range(1, 10)],
    ]

    def __init__(
        self,
        sources: Sequence[str | os.PathLike[str]],
        *,
        home: str | os.PathLike[str] = ".immortals",
        index: bool = True,
    ) -> None:
        App.__init__(self)
        self.history = None
        self.merged: MergedHistory | None = None
        self.open_error: str | None = None
        try:
            self.merged = MergedHistory(sources, home=home)
        except (ImmortalsError, LogError) as exc:
            self.open_error = str(exc)
        self._init_session(index)
        self.cut: list[CutState] = []
        self.cut_at: int | None = None
        """The merged position whose cut :attr:`cut` is (tests and the benchmark wait on it)."""
        self.merged_watches: list[MergedWatch] = []
        self._followed: dict[int, int] = {}  # position -> how many of its messages followed

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.merged is None:
            return
        with Horizontal(id="main"):
            yield MergedTimeline(self.merged, id="timeline")
            with Vertical(id="panes"):
                yield SourceView(id="source")
                yield StateView(id="state")
                yield EffectsView(id="effects")
        yield Static(id="too-small")
        yield StatusLine(id="status")

    def _start_session(self) -> None:
        if self.merged is None:
            from ._dialogs import ErrorScreen

            self.push_screen(ErrorScreen(self.open_error or "unknown error"))
            return
        merged = self.merged
        for history in merged.histories:
            history.on_damage = self._damage_met
            for problem in (history.app_error, history.damage):
                if problem:
                    self.notify(f"{history.instance}: {problem}", severity="error", timeout=10)
        self.timeline.focus()
        if merged.count:
            self.timeline.go(1)
            self._inspect(self.timeline.cursor)
        else:
            self.state_view.show_message("the logs hold no steps yet")
        self._merge_rest()
        self._check_size()
        self._update_status()

    @property
    def merged_timeline(self) -> MergedTimeline:
        return self.query_one(MergedTimeline)

    @property
    def is_open(self) -> bool:
        return self.merged is not None

    def _damage_shown(self, text: str) -> None:
        self.notify(text, severity="error", timeout=10)
        self._update_status()

    # -- background: the merge, then each instance's snapshots ---------------------------------------

    @work(thread=True, group="index")
    def _merge_rest(self) -> None:
        merged = self.merged
        assert merged is not None
        total = max(1, merged.total)
        shown = [-1]

        def progress(count: int) -> None:
            percent = 100 * count // total
            if percent // 5 != shown[0]:
                shown[0] = percent // 5
                self.call_from_thread(self._merge_grew)

        merged.build(progress)  # damage ends an instance's history there (and is announced)
        self.call_from_thread(self._merge_grew)
        if not self.index:
            return
        for history in merged.histories:
            if merged.closed:
                return
            if history.replayer is None or not history.count:
                continue
            self.call_from_thread(self._set_busy, f"indexing {history.instance}")
            try:
                history.index_in_background(lambda _lsn: None)
            except CorruptLogError:
                pass
            except (ImmortalsError, LogError) as exc:
                self.call_from_thread(
                    self.notify, f"indexing {history.instance} stopped: {exc}", severity="warning"
                )
        self.call_from_thread(self._set_busy, "")

    def _merge_grew(self) -> None:
        timeline = self.merged_timeline
        if timeline.hidden:
            timeline.show_instances(timeline.hidden)
        timeline.update_size()
        timeline.border_title = timeline.default_title()
        self._update_status()

    # -- selecting a step: its own panes, and every instance at its cut ------------------------------

    @work(thread=True, exclusive=True, group="inspect")
    def _inspect(self, lsn: int) -> None:
        merged = self.merged
        assert merged is not None
        position = lsn
        ref = merged.step(position)
        history = merged.history(ref.instance)
        if merged.cached_row(position) is None:
            merged.load_rows(position)  # the selected row shows with its panes, whatever else loads
        mark = self.timeline.mark if self.diff_mode else None
        view: StepView | None = None
        failure = None
        try:
            if history.replayer is not None:
                view = history.inspect(ref.lsn)
            else:
                failure = history.app_error or "the app could not be loaded"
            selected = (view.state, view.step.state_diff) if view is not None else None
            cut = merged.cut_states(position, mark=mark, selected=selected)
        except (ImmortalsError, LogError) as exc:
            self.call_from_thread(self._show_failure, position, str(exc))
            return
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._show_cut, position, view, cut, failure)

    def _show_cut(
        self, position: int, view: StepView | None, cut: list[CutState], failure: str | None
    ) -> None:
        if position != self.timeline.cursor:
            return  # the user moved on meanwhile
        self.cut = cut
        self.cut_at = position
        self.timeline.refresh()
        self._update_status()
        if view is not None:
            self._show(position, view)
        else:
            message = failure or "no step"
            self.source_view.show(None, set(), message)
            self.effects_view.show_message(message)
            self._show_state()

    def _show_failure(self, lsn: int, message: str) -> None:
        super()._show_failure(lsn, message)
        if lsn == self.timeline.cursor:
            self.notify(message, severity="error")  # the panes say it too; a toast is seen

    def _show(self, lsn: int, view: StepView) -> None:
        if lsn != self.timeline.cursor:
            return
        self.view = view
        ran = {line.line for line in view.trace}
        self.source_view.show(view.handler, ran, "no app code ran in this step")
        self._show_state()
        self.effects_view.show_step(view.step)

    def _show_state(self) -> None:
        merged = self.merged
        if merged is None or not self.cut:
            return
        selected = merged.step(self.timeline.cursor)
        mark = self.timeline.mark
        if self.diff_mode and mark is not None:
            title = f"every instance: changes from the cut of #{mark} to this cut"
        elif self.diff_mode:
            title = (
                "every instance: changes made by its newest step in the cut at "
                f"{selected.instance} step {selected.lsn}"
            )
        else:
            title = f"consistent cut at {selected.instance} step {selected.lsn}"
        colours = {name: merged.colour(name) for name in merged.names}
        self.state_view.show_cut(self.cut, title=title, diff=self.diff_mode, colours=colours)

    # -- following messages --------------------------------------------------------------------------

    def _hop(self, hop: Hop) -> None:
        merged = self.merged
        assert merged is not None
        position = merged.hop_position(hop)
        if position is None:
            self.notify(hop.why, severity="warning" if not hop.in_flight else "error")
            return
        if position not in (self.timeline.only or [position]):
            self.merged_timeline.show_instances(set())  # the user asked for that step
        self.notify(hop.why)
        self.timeline.go(position)

    def action_follow_message(self) -> None:
        merged = self.merged
        if merged is None or not merged.count:
            return
        position = self.timeline.cursor
        nth = self._followed.get(position, 0)
        hop = merged.forward(position, nth)
        count = merged.sent_count(position)
        if count > 1:
            self._followed[position] = nth + 1
            hop = Hop(hop.step, f"message {nth % count + 1} of {count}: {hop.why}", hop.in_flight)
        self._hop(hop)

    def action_follow_back(self) -> None:
        if self.merged is not None and self.merged.count:
            self._hop(self.merged.back(self.timeline.cursor))

    def action_call_and_reply(self) -> None:
        if self.merged is not None and self.merged.count:
            self._hop(self.merged.pair(self.timeline.cursor))

    def action_why(self) -> None:
        if self.merged is not None and self.merged.count:
            self._hop(self.merged.why(self.timeline.cursor))

    def action_toggle_instance(self, number: int) -> None:
        merged = self.merged
        if merged is None or number > len(merged.names):
            return
        name = merged.names[number - 1]
        hidden = set(self.merged_timeline.hidden) ^ {name}
        if len(hidden) == len(merged.names):
            self.notify("at least one instance stays shown", severity="warning")
            return
        self.merged_timeline.show_instances(hidden)
        self.notify(f"{name} {'hidden' if name in hidden else 'shown'}")
        self._update_status()

    # -- moving --------------------------------------------------------------------------------------

    def action_goto(self) -> None:
        self.push_screen(
            Prompt(
                "Go to NAME:LSN, or a position N in the merged timeline:", placeholder="server:42"
            ),
            self._goto,
        )

    def _goto(self, text: str | None) -> None:
        if not text or self.merged is None:
            return
        position = self.merged.position_of(text)
        if position is None:
            self.notify(f"{text!r} is neither NAME:LSN nor a merged position", severity="warning")
            return
        if self.timeline.only is not None and position not in self.timeline.only:
            self.merged_timeline.show_instances(set())
        self.timeline.go(position)

    def action_follow(self) -> None:
        self.notify("following a live log works with one log open", severity="warning")

    def action_add_logpoint(self) -> None:
        self.notify(
            "a logpoint runs over one instance's history: open it alone (immortals debug NAME), "
            "or use immortals replay NAME --logpoint FILE:LINE:EXPR",
            severity="warning",
        )

    def action_clear_logpoints(self) -> None:
        self.action_add_logpoint()

    # -- breakpoints, watches, searches --------------------------------------------------------------

    @work(thread=True, exclusive=True, group="search")
    def _continue(self, direction: int) -> None:
        assert self.merged is not None
        try:
            found = self.merged.find(
                list(self.breakpoints),
                start=self.timeline.cursor,
                direction="forward" if direction > 0 else "backward",
            )
        except (ImmortalsError, LogError) as exc:
            self.call_from_thread(self._search_done, None, str(exc))
            return
        self.call_from_thread(self._search_done, found, "no breakpoint hit that way")

    def _add_watch(self, text: str | None) -> None:
        if not text or self.merged is None:
            return
        try:
            watch = self.merged.watch(text)
        except SyntaxError as exc:
            self.notify(f"not a Python expression: {exc.msg}", severity="error")
            return
        self.merged_watches.append(watch)
        self.watches.append(watch.watch)  # so the one-log checks ("no watch") see it
        self.timeline.watch_columns = [w.text for w in self.merged_watches]
        self.timeline.watch_values = {}
        self._refresh_watches()

    def _refresh_watches(self) -> None:
        if self.merged_watches and self.merged is not None:
            self._compute_watches(*self.timeline.visible_range())

    @work(thread=True, exclusive=True, group="watches")
    def _compute_watches(self, first: int, last: int) -> None:
        assert self.merged is not None
        try:
            values = self.merged.watch_values(first, last, list(self.merged_watches))
        except (ImmortalsError, LogError):
            return
        self.call_from_thread(self._watches_done, values)

    def action_where_changed(self) -> None:
        if not self.merged_watches:
            self.notify("no watch: add one with w", severity="warning")
            return
        self.busy = "searching…"
        self._update_status()
        self._where_changed_merged(self.merged_watches[-1])

    @work(thread=True, exclusive=True, group="search")
    def _where_changed_merged(self, watch: MergedWatch) -> None:
        assert self.merged is not None
        try:
            found = self.merged.where_changed(watch, position=self.timeline.cursor)
        except (ImmortalsError, LogError) as exc:
            self.call_from_thread(self._search_done, None, str(exc))
            return
        message = f"{watch.text} did not change before this step"
        self.call_from_thread(self._search_done, found, message)

    @work(thread=True, exclusive=True, group="search")
    def _search_rows(self, text: str, direction: int) -> None:
        assert self.merged is not None
        found = self.merged.search(text, start=self.timeline.cursor, direction=direction)
        self.call_from_thread(self._search_done, found, f"no more steps mentioning {text!r}")

    @work(thread=True, exclusive=True, group="search")
    def _compute_filter(self, text: str) -> None:
        assert self.merged is not None
        positions = self.merged.matching(text)
        self.call_from_thread(self._filter_done, text, positions)

    def step_count(self) -> int:
        return self.merged.count if self.merged else 0

    # -- status and help -----------------------------------------------------------------------------

    def _update_status(self) -> None:
        merged = self.merged
        if merged is None or not merged.count:
            return
        position = self.timeline.cursor
        ref = merged.step(position)
        row = merged.cached_row(position)
        if row is None:
            self.timeline.request_row(position)
        self.query_one(StatusLine).show_merged(
            position=position,
            merged=merged.count,
            total=merged.total,
            instance=ref.instance,
            lsn=ref.lsn,
            wall_ns=row.wall_ns if row else 0,
            busy=self.busy,
        )

    def action_help(self) -> None:
        self.push_screen(HelpScreen(MERGED_KEYS, MERGED_MARKS))

    def palette_actions(self) -> list[tuple[str, str, str]]:
        merged = [
            ("Follow message", "follow_message", "to the step that received a sent message"),
            ("Back to sender", "follow_back", "to the step that sent this step's input"),
            ("Call and reply", "call_and_reply", "between a call and the step that got its reply"),
            ("Why", "why", "the previous hop of the causal chain"),
        ]
        one_log = [
            a
            for a in super().palette_actions()
            if a[1] not in ("follow", "add_logpoint", "clear_logpoints")
        ]
        return merged + one_log

    def _close_session(self) -> None:
        if self.merged is not None:
            self.merged.close()
