"""The time-travel debugger: move through an instance's history forward and backward.

Layout: the timeline on the left; on the right the handler's source, the state after the
selected step, and the step's effects; a status line at the bottom. Every move selects a step;
the step is re-executed by the replayer in a worker thread (a stale answer, for a step already
left behind, is dropped), so the UI never waits on replay.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static
from textual.worker import get_current_worker

from logformat import CorruptLogError, LogError
from runtime._errors import ImmortalsError

from ._dialogs import ErrorScreen, HelpScreen, Prompt
from ._effects import EffectsView
from ._history import Breakpoint, History, StepView, Watch
from ._logpoints import LogpointSet
from ._source import SourceView
from ._state import StateView
from ._status import StatusLine
from ._timeline import Timeline

MIN_WIDTH, MIN_HEIGHT = 80, 20


class DebuggerCommands(Provider):
    """Every debugger action by name, for the command palette (ctrl+p)."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, DebuggerApp)
        matcher = self.matcher(query)
        for name, action, help_text in app.palette_actions():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), _runner(app, action), help=help_text)


def _runner(app: App[Any], action: str) -> Callable[[], Any]:
    async def run() -> None:
        await app.run_action(action)

    return run


class DamageFound(Message):
    """Reading met damage the log's index did not know of: the history now ends before it."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__()


class DebuggerApp(App[None]):
    """``immortals debug``: an instance's whole history in a terminal UI."""

    TITLE = "immortals debug"
    COMMANDS: ClassVar[set[Any]] = App.COMMANDS | {DebuggerCommands}

    CSS = """
    #main { height: 1fr; }
    Timeline { width: 3fr; }
    #panes { width: 2fr; }
    #too-small {
        display: none; width: 100%; height: 100%; content-align: center middle;
        text-style: bold; color: $warning;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right_square_bracket", "jump(10)", "+10", show=False),
        Binding("left_square_bracket", "jump(-10)", "-10", show=False),
        Binding("right_curly_bracket", "jump(100)", "+100", show=False),
        Binding("left_curly_bracket", "jump(-100)", "-100", show=False),
        Binding("g,home", "first", "first", show=False),
        Binding("G,end", "last", "last", show=False),
        Binding("colon", "goto", "go to", show=False),
        Binding("f", "follow", "follow", show=False),
        Binding("s", "step_into", "lines", show=False),
        Binding("escape", "leave_lines", "leave lines", show=False),
        Binding("b", "add_breakpoint", "breakpoint", show=False),
        Binding("c", "continue(1)", "continue", show=False),
        Binding("C", "continue(-1)", "reverse-continue", show=False),
        Binding("x", "clear_breakpoints", "clear breakpoints", show=False),
        Binding("w", "add_watch", "watch", show=False),
        Binding("W", "where_changed", "where changed", show=False),
        Binding("l", "add_logpoint", "logpoint", show=False),
        Binding("L", "clear_logpoints", "clear logpoints", show=False),
        Binding("m", "mark", "mark", show=False),
        Binding("d", "toggle_diff", "diff", show=False),
        Binding("slash", "search", "search", show=False),
        Binding("F", "filter", "filter", show=False),
        Binding("n", "search_next(1)", "next match", show=False),
        Binding("N", "search_next(-1)", "previous match", show=False),
        Binding("question_mark", "help", "help", show=False),
        Binding("q", "quit", "quit", show=False),
    ]

    following: reactive[bool] = reactive(False)
    """Whether the cursor follows the end of a live, growing log."""
    diff_mode: reactive[bool] = reactive(False)
    """Whether the state pane lists changes instead of the whole state."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        app: str | None = None,
        home: str | os.PathLike[str] = ".immortals",
        index: bool = True,
    ) -> None:
        super().__init__()
        self.history: History | None = None
        self.open_error: str | None = None
        try:
            self.history = History(source, app=app, home=home)
        except (ImmortalsError, LogError) as exc:
            self.open_error = str(exc)
        self._init_session(index)
        self.logpoints = LogpointSet(source, app=app, home=home)
        self.logpoint_error: str | None = None
        """Why the last logpoint asked for was refused (also shown as a notice)."""

    def _init_session(self, index: bool) -> None:
        """What a session keeps besides its history (the merged view keeps the same)."""
        self.index = index
        self.view: StepView | None = None
        self.breakpoints: list[Breakpoint] = []
        self.watches: list[Watch] = []
        self.search_text = ""
        self.line_index: int | None = None  # stepping through the selected step's lines
        self.busy = ""
        self._poll: Any = None

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.history is None:
            return
        with Horizontal(id="main"):
            yield Timeline(self.history, id="timeline")
            with Vertical(id="panes"):
                yield SourceView(id="source")
                yield StateView(id="state")
                yield EffectsView(id="effects")
        yield Static(id="too-small")
        yield StatusLine(id="status")

    def on_mount(self) -> None:
        self._start_session()

    def _start_session(self) -> None:
        """Show the first step and start the background work (the merged view has its own:
        Textual calls every class's ``on_mount``, so subclasses override this instead)."""
        if self.history is None:
            self.push_screen(ErrorScreen(self.open_error or "unknown error"))
            return
        history = self.history
        history.on_damage = self._damage_met
        self.timeline.focus()
        if history.count == 0:
            self.state_view.show_message("the log holds no steps yet")
            self.effects_view.show_message("press f to follow it as it grows")
        problems = [p for p in (history.app_error, history.damage) if p]
        if history.app_error:
            message = f"{history.app_error}\nthe timeline still works; restart with --app to replay"
            self.state_view.show_message(message)
            self.source_view.show(None, set(), message)
            self.effects_view.show_message(message)
        for problem in problems:
            self.notify(problem, severity="error", timeout=10)
        if history.count:
            self.timeline.go(history.first_lsn)
            self._inspect(self.timeline.cursor)
        if self.index and history.replayer is not None and history.count:
            self._index()
        if history.is_live():
            self._start_polling()
        self._check_size()
        self._update_status()

    @property
    def timeline(self) -> Timeline:
        return self.query_one(Timeline)

    @property
    def source_view(self) -> SourceView:
        return self.query_one(SourceView)

    @property
    def state_view(self) -> StateView:
        return self.query_one(StateView)

    @property
    def effects_view(self) -> EffectsView:
        return self.query_one(EffectsView)

    def on_resize(self) -> None:
        self._check_size()

    @property
    def is_open(self) -> bool:
        """Whether there is a history to show (else the error screen is up)."""
        return self.history is not None

    def _check_size(self) -> None:
        if not self.is_open:
            return
        small = self.size.width < MIN_WIDTH or self.size.height < MIN_HEIGHT
        notice = self.query_one("#too-small", Static)
        notice.update(
            f"The terminal is too small ({self.size.width}×{self.size.height}); "
            f"immortals debug needs at least {MIN_WIDTH}×{MIN_HEIGHT}."
        )
        notice.display = small
        self.query_one("#main").display = not small

    def _damage_met(self, text: str) -> None:
        self.post_message(DamageFound(text))  # from any thread: post_message is thread-safe

    def on_damage_found(self, message: DamageFound) -> None:
        self._damage_shown(message.text)

    def _damage_shown(self, text: str) -> None:
        assert self.history is not None
        self.timeline.update_size()
        if self.timeline.cursor > self.history.last_lsn and self.history.count:
            self.timeline.go(self.history.last_lsn)
        self.notify(text, severity="error", timeout=10)
        self._update_status()

    def on_timeline_rows_loaded(self) -> None:
        self._update_status()

    # -- selecting and inspecting a step -----------------------------------------------------------

    def on_timeline_selected(self, message: Timeline.Selected) -> None:
        self.line_index = None
        self._update_status()
        self._inspect(message.lsn)
        self._refresh_watches()

    @work(thread=True, exclusive=True, group="inspect")
    def _inspect(self, lsn: int) -> None:
        assert self.history is not None
        if self.history.replayer is None:
            return
        mark = self.timeline.mark if self.diff_mode else None
        try:
            view = self.history.inspect(lsn, mark=mark)
            if self.history.cached_row(lsn) is None:
                # The selected row shows with its panes, whatever the rows workers are doing
                # (a jump in a long log could leave it unloaded behind one that never reported).
                self.history.load_rows(lsn)
        except (ImmortalsError, LogError) as exc:
            self.call_from_thread(self._show_failure, lsn, str(exc))
            return
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._show, lsn, view)
            self.call_from_thread(self.timeline.refresh)

    def _show(self, lsn: int, view: StepView) -> None:
        if lsn != self.timeline.cursor:
            return  # the user moved on meanwhile
        self.view = view
        ran = {line.line for line in view.trace}
        self.source_view.show(view.handler, ran, "no app code ran in this step")
        self._show_state()
        self.effects_view.show_step(view.step, self._logpoint_lines(lsn))

    def _logpoint_lines(self, lsn: int) -> list[str]:
        logpoints = getattr(self, "logpoints", None)  # the merged view has none
        return logpoints.lines_at(lsn) if logpoints is not None else []

    def _show_state(self) -> None:
        view = self.view
        if view is None:
            return
        mark = self.timeline.mark
        if self.diff_mode and view.diff_against_mark is not None and mark is not None:
            title = f"state: changes from step {mark} to step {view.step.lsn}"
            self.state_view.show_diff(view.diff_against_mark, title=title)
        elif self.diff_mode:
            title = f"state: changes made by step {view.step.lsn}"
            self.state_view.show_diff(view.step.state_diff, title=title)
        else:
            title = f"state after step {view.step.lsn}"
            self.state_view.show_state(view.state, view.step.state_diff, title=title)

    def _show_failure(self, lsn: int, message: str) -> None:
        if lsn != self.timeline.cursor:
            return
        self.view = None
        self.state_view.show_message(message)
        self.effects_view.show_message(message)
        self.source_view.show(None, set(), message)

    # -- moving ------------------------------------------------------------------------------------

    def action_jump(self, delta: int) -> None:
        self.timeline.move_by(delta)

    def action_first(self) -> None:
        self.timeline.move_by(-self.timeline.row_count)

    def action_last(self) -> None:
        self.timeline.move_by(self.timeline.row_count)

    def action_goto(self) -> None:
        self.push_screen(
            Prompt("Go to an LSN, or a wall time (UTC):", placeholder="1234  or  10:15:00"),
            self._goto,
        )

    def _goto(self, text: str | None) -> None:
        if not text or self.history is None:
            return
        lsn = self.parse_position(text)
        if lsn is None:
            self.notify(f"{text!r} is neither an LSN nor a time in this log", severity="warning")
            return
        self.timeline.go(lsn)

    def parse_position(self, text: str) -> int | None:
        """An LSN, or the first step at or after a wall time (full ISO, or a time of day)."""
        assert self.history is not None
        if text.isdigit():
            return int(text)
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            try:
                day = dt.datetime.fromtimestamp(
                    self.history.row(self.timeline.cursor).wall_ns / 1e9, tz=dt.UTC
                ).date()
                moment = dt.datetime.combine(day, dt.time.fromisoformat(text))
            except ValueError:
                return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return self.history.reader.seek_time(int(moment.timestamp() * 1e9))

    def action_follow(self) -> None:
        self.following = not self.following

    def watch_following(self, following: bool) -> None:
        if following:
            self._start_polling()
            self._poll_log()
        self._update_status()

    def _start_polling(self) -> None:
        """Look for new steps twice a second (a live log grows whether followed or not)."""
        if self._poll is None:
            self._poll = self.set_interval(0.5, self._poll_log)

    def _poll_log(self) -> None:
        history = self.history
        if history is None:
            return
        if history.refresh():
            self.timeline.update_size()
            self._update_status()
        if self.following:
            self.timeline.go(history.last_lsn)  # clears a filter that hides the newest step

    # -- line by line --------------------------------------------------------------------------------

    def action_step_into(self) -> None:
        if self.view is None or not self.view.trace:
            self.notify("no app code ran in this step", severity="warning")
            return
        self.line_index = 0
        self._show_line()

    def action_leave_lines(self) -> None:
        if self.line_index is not None:
            self.line_index = None
            if self.view is not None:
                self._show(self.timeline.cursor, self.view)

    def move_line(self, delta: int) -> bool:
        """Move within the traced lines; False when not stepping through lines."""
        if self.line_index is None or self.view is None:
            return False
        self.line_index = max(0, min(len(self.view.trace) - 1, self.line_index + delta))
        self._show_line()
        return True

    def _show_line(self) -> None:
        view = self.view
        assert view is not None and self.line_index is not None
        line = view.trace[self.line_index]
        self.source_view.current_line = line.line
        self.effects_view.show_line(line, self.line_index, len(view.trace), view.step)

    # -- breakpoints, watches, marks -----------------------------------------------------------------

    def action_add_breakpoint(self) -> None:
        self.push_screen(
            Prompt(
                "Break on 'method NAME', 'sender NAME', or a condition over state, input, effects:",
                placeholder='method inc   |   sender client   |   state["count"] > 10',
            ),
            self._add_breakpoint,
        )

    def _add_breakpoint(self, text: str | None) -> None:
        if not text:
            return
        word, _, rest = text.partition(" ")
        if word in ("method", "sender") and rest.strip():
            point = Breakpoint(word, rest.strip())  # type: ignore[arg-type]
        else:
            try:
                compile(text, "<breakpoint>", "eval")
            except SyntaxError as exc:
                self.notify(f"not a Python expression: {exc.msg}", severity="error")
                return
            point = Breakpoint("condition", text)
        self.breakpoints.append(point)
        self.notify(f"breakpoint: {point.describe()} (c continues, C reverse-continues)")

    def action_clear_breakpoints(self) -> None:
        self.breakpoints.clear()
        self.timeline.hits.clear()
        self.timeline.refresh()
        self.notify("breakpoints cleared")

    def action_continue(self, direction: int) -> None:
        if not self.breakpoints:
            self.notify("no breakpoints: add one with b", severity="warning")
            return
        self.busy = "searching…"
        self._update_status()
        self._continue(direction)

    @work(thread=True, exclusive=True, group="search")
    def _continue(self, direction: int) -> None:
        assert self.history is not None
        start = self.timeline.cursor
        try:
            found = self.history.find(
                list(self.breakpoints),
                start=start,
                direction="forward" if direction > 0 else "backward",
            )
        except (ImmortalsError, LogError) as exc:
            self.call_from_thread(self._search_done, None, str(exc))
            return
        self.call_from_thread(self._search_done, found, "no breakpoint hit that way")

    def _search_done(self, found: int | None, otherwise: str) -> None:
        self.busy = ""
        if found is None:
            self.notify(otherwise, severity="warning")
            self._update_status()
            return
        self.timeline.hits.add(found)
        self.timeline.go(found)

    def action_add_watch(self) -> None:
        self.push_screen(
            Prompt("Watch an expression over state:", placeholder='state["count"]'),
            self._add_watch,
        )

    def _add_watch(self, text: str | None) -> None:
        if not text:
            return
        try:
            watch = Watch(text)
        except SyntaxError as exc:
            self.notify(f"not a Python expression: {exc.msg}", severity="error")
            return
        self.watches.append(watch)
        self.timeline.watch_columns = [w.text for w in self.watches]
        self.timeline.watch_values = {}
        self._refresh_watches()

    def _refresh_watches(self) -> None:
        if self.watches and self.history is not None and self.history.replayer is not None:
            self._compute_watches(*self.timeline.visible_range())

    @work(thread=True, exclusive=True, group="watches")
    def _compute_watches(self, first: int, last: int) -> None:
        assert self.history is not None
        try:
            values = self.history.watch_values(first, last, list(self.watches))
        except (ImmortalsError, LogError):
            return
        self.call_from_thread(self._watches_done, values)

    def _watches_done(self, values: dict[int, list[str]]) -> None:
        self.timeline.watch_values.update(values)
        self.timeline.refresh()

    # -- logpoints: prints added to the past ----------------------------------------------------

    def action_add_logpoint(self) -> None:
        self.push_screen(
            Prompt(
                "Logpoint: a print added to the past (FILE:LINE EXPR):",
                placeholder="counter.py:17 self.count * 2",
            ),
            self._add_logpoint,
        )

    def _add_logpoint(self, text: str | None) -> None:
        if text:
            self.logpoint_error = None
            self.logpoints.cancel()  # the pass under way is for the set without this one
            self._run_logpoints(text)

    @work(thread=True, exclusive=True, group="logpoints")
    def _run_logpoints(self, spec: str | None) -> None:
        """Check ``spec`` (None: none to add) against the app's code versions, then re-execute
        the history for every logpoint; the columns fill while it runs."""
        from replayer import LogpointError

        logpoints = self.logpoints
        if spec is not None:
            try:
                logpoints.add(spec)
            except LogpointError as exc:
                self.call_from_thread(self._logpoint_refused, str(exc))
                return
            self.call_from_thread(self._logpoints_changed)
        ticker = self.call_from_thread(self.set_interval, 0.25, self._logpoints_progress)
        try:
            done = logpoints.run()
        finally:
            self.call_from_thread(ticker.stop)
        self.call_from_thread(self._logpoints_finished, done.error, done.notes)

    def _logpoint_refused(self, why: str) -> None:
        self.logpoint_error = why
        self.notify(why, severity="error", timeout=10)

    def _logpoints_changed(self) -> None:
        self.timeline.logpoint_columns = self.logpoints.titles()
        self.timeline.logpoint_cell = self.logpoints.cell
        self.timeline.refresh()

    def _logpoints_progress(self) -> None:
        progress = self.logpoints.progress()
        if progress is not None and progress[1]:
            self._set_busy(f"logpoints {100 * progress[0] // progress[1]}%")
        self.timeline.refresh()

    def _logpoints_finished(self, error: str | None, notes: list[str]) -> None:
        self._set_busy("")
        if error is not None:
            self._logpoint_refused(error)
        for note in notes:
            self.notify(note, severity="warning", timeout=10)
        self.timeline.refresh()
        if self.view is not None:
            self.effects_view.show_step(self.view.step, self._logpoint_lines(self.view.step.lsn))

    async def logpoints_done(self) -> None:
        """Wait for the logpoint pass under way (tests, and scripts driving the UI)."""
        await self.workers.wait_for_complete()

    def action_clear_logpoints(self) -> None:
        self.logpoints.clear()
        self._logpoints_changed()
        if self.view is not None:
            self.effects_view.show_step(self.view.step, [])

    def action_where_changed(self) -> None:
        if not self.watches:
            self.notify("no watch: add one with w", severity="warning")
            return
        self.busy = "searching…"
        self._update_status()
        self._where_changed(self.watches[-1])

    @work(thread=True, exclusive=True, group="search")
    def _where_changed(self, watch: Watch) -> None:
        assert self.history is not None
        try:
            found = self.history.where_changed(watch, start=self.timeline.cursor - 1)
        except (ImmortalsError, LogError) as exc:
            self.call_from_thread(self._search_done, None, str(exc))
            return
        message = f"{watch.text} did not change before this step"
        self.call_from_thread(self._search_done, found, message)

    def action_mark(self) -> None:
        timeline = self.timeline
        timeline.mark = None if timeline.mark == timeline.cursor else timeline.cursor
        self.notify(
            f"marked step {timeline.mark}: d shows the diff against it"
            if timeline.mark
            else "mark cleared"
        )

    def action_toggle_diff(self) -> None:
        self.diff_mode = not self.diff_mode
        if self.diff_mode and self.timeline.mark is not None:
            self._inspect(self.timeline.cursor)  # the diff against the mark needs a replay
        else:
            self._show_state()

    # -- search ---------------------------------------------------------------------------------------

    def action_search(self) -> None:
        self.push_screen(
            Prompt("Search method, sender and arguments:", value=self.search_text),
            self._search,
        )

    def _search(self, text: str | None) -> None:
        if text:
            self.search_text = text
            self.action_search_next(1)

    def action_search_next(self, direction: int) -> None:
        if not self.search_text:
            self.action_search()
            return
        self.busy = "searching…"
        self._update_status()
        self._search_rows(self.search_text, direction)

    @work(thread=True, exclusive=True, group="search")
    def _search_rows(self, text: str, direction: int) -> None:
        assert self.history is not None
        found = self.history.search(text, start=self.timeline.cursor, direction=direction)
        self.call_from_thread(self._search_done, found, f"no more steps mentioning {text!r}")

    def action_filter(self) -> None:
        self.push_screen(
            Prompt("Show only steps mentioning (method, sender, arguments; empty shows all):"),
            self._filter,
        )

    def _filter(self, text: str | None) -> None:
        if not text:
            self.timeline.set_filter(None)
            self.timeline.border_title = "timeline"
            return
        self.busy = "filtering…"
        self._update_status()
        self._compute_filter(text)

    @work(thread=True, exclusive=True, group="search")
    def _compute_filter(self, text: str) -> None:
        assert self.history is not None
        lsns = self.history.matching(text)
        self.call_from_thread(self._filter_done, text, lsns)

    def step_count(self) -> int:
        """How many steps the session shows in all (the merged view counts every log's)."""
        return self.history.count if self.history else 0

    def _filter_done(self, text: str, lsns: list[int]) -> None:
        self.busy = ""
        if not lsns:
            self.notify(f"no step mentions {text!r}", severity="warning")
            self._update_status()
            return
        total = self.step_count()
        self.timeline.border_title = f"timeline: {len(lsns):,} of {total:,} steps match {text!r}"
        self.timeline.set_filter(lsns)
        self._update_status()

    # -- background work and status ---------------------------------------------------------------

    @work(thread=True, group="index")
    def _index(self) -> None:
        history = self.history
        assert history is not None
        total = max(1, history.count)
        last_shown = [-1]

        def progress(lsn: int) -> None:
            percent = int(100 * (lsn - history.first_lsn + 1) / total)
            if percent != last_shown[0] and percent % 5 == 0:
                last_shown[0] = percent
                self.call_from_thread(self._set_busy, f"indexing {percent}%")

        try:
            history.index_in_background(progress)
        except CorruptLogError:
            pass  # the history now ends before the damage, which was announced once
        except (ImmortalsError, LogError) as exc:
            self.call_from_thread(self.notify, f"indexing stopped: {exc}", severity="warning")
        self.call_from_thread(self._set_busy, "")

    def _set_busy(self, text: str) -> None:
        self.busy = text
        self._update_status()

    def _update_status(self) -> None:
        history = self.history
        if history is None or not history.count:
            return
        lsn = self.timeline.cursor
        row = history.cached_row(lsn)
        if row is None:
            self.timeline.request_row(lsn)  # RowsLoaded brings the status back with the time
        checkpoints = [c for c in history.checkpoints if c <= lsn]
        self.query_one(StatusLine).show(
            lsn=lsn,
            last=history.last_lsn,
            wall_ns=row.wall_ns if row else 0,
            checkpoint=max(checkpoints) if checkpoints else None,
            live=history.is_live(),
            following=self.following,
            busy=self.busy,
        )

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def palette_actions(self) -> list[tuple[str, str, str]]:
        """(name, action, help) for the command palette."""
        return [
            ("Next step", "jump(1)", "select the next step"),
            ("Previous step", "jump(-1)", "select the previous step"),
            ("Forward 10 steps", "jump(10)", ""),
            ("Back 10 steps", "jump(-10)", ""),
            ("Forward 100 steps", "jump(100)", ""),
            ("Back 100 steps", "jump(-100)", ""),
            ("First step", "first", ""),
            ("Last step", "last", ""),
            ("Go to LSN or time", "goto", "an LSN, or a wall time in UTC"),
            ("Follow live log", "follow", "toggle following the end of a growing log"),
            ("Step into handler", "step_into", "walk the selected step's lines, with locals"),
            ("Add breakpoint", "add_breakpoint", "method, sender, or a condition"),
            ("Continue", "continue(1)", "to the next breakpoint hit"),
            ("Reverse-continue", "continue(-1)", "to the previous breakpoint hit"),
            ("Clear breakpoints", "clear_breakpoints", ""),
            ("Add watch", "add_watch", "an expression over state, as a timeline column"),
            ("Where did the watch change?", "where_changed", "previous step that changed it"),
            ("Add logpoint", "add_logpoint", "FILE:LINE EXPR, its value wherever that line ran"),
            ("Clear logpoints", "clear_logpoints", ""),
            ("Mark step", "mark", "diff other steps against this one"),
            ("Toggle diff", "toggle_diff", "show changes instead of the whole state"),
            ("Search", "search", "method, sender, arguments"),
            ("Filter", "filter", "show only the steps that mention a text"),
            ("Help", "help", "the key map"),
        ]

    def on_unmount(self) -> None:
        self._close_session()

    def _close_session(self) -> None:
        logpoints = getattr(self, "logpoints", None)  # the merged view has none
        if logpoints is not None:
            logpoints.cancel()
        if self.history is not None:
            self.history.close()
