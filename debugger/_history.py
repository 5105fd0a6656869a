"""What the debugger shows, gathered without any UI: timeline rows, step details, searches.

The timeline needs a one-line summary of any step among millions, at once: rows are read from
the log in blocks (decoding records, never re-executing) and kept in a bounded cache. Everything
about one step (state, diff, effects, the lines its handler ran) comes from the replayer, which
re-executes. Both are guarded by locks because the UI reads them from worker threads.

An app that cannot be imported still leaves the log readable: the timeline works and the panes
that need re-execution say why they are empty (``app_error``).

A damaged log opens up to the damage. Damage the index does not know of (a flipped byte in a frame
the index already covers) is only met when that frame is read; from then on the history ends
just before it (``last_lsn``), and ``on_damage`` is told once, in one line.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from logformat import CorruptLogError, LogError, LogReader, writer_is_live
from replayer import Change, Replayer, Step, TraceLine, diff_states
from replayer._replayer import open_log_dir
from replayer._trace import snapshot_value
from runtime._errors import ImmortalsError

BLOCK = 256  # timeline rows read at a time
MAX_BLOCKS = 64  # blocks kept (16k rows): plenty for scrolling back and forth


@dataclass(frozen=True, slots=True)
class Row:
    """One timeline row: what came in, from whom, and how many effects it had."""

    lsn: int
    wall_ns: int
    kind: str
    sender: str
    summary: str
    effects: int
    method: str = ""


@dataclass(frozen=True, slots=True)
class Handler:
    """The source of the function a step ran in (for the source pane)."""

    file: str
    first_line: int
    lines: list[str]
    function: str


@dataclass(slots=True)
class StepView:
    """Everything the panes show for one step."""

    step: Step
    state: Any
    trace: list[TraceLine]
    handler: Handler | None
    diff_against_mark: list[Change] | None = None


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """Stop where a method is called, a sender's input arrives, or a condition holds."""

    kind: Literal["method", "sender", "condition"]
    text: str

    def describe(self) -> str:
        return f"{self.kind} {self.text}"


@dataclass(slots=True)
class Watch:
    """An expression over ``state``, shown as a timeline column."""

    text: str
    code: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.code = compile(self.text, "<watch>", "eval")

    def value(self, state: Any) -> Any:
        try:
            return eval(self.code, {}, {"state": state})
        except Exception as exc:
            return f"<{type(exc).__name__}>"


def summarize(lsn: int, wall_ns: int, record: dict[str, Any]) -> Row:
    """A timeline row from a step record (decoding only; nothing is re-executed)."""
    inp = record.get("in", {})
    kind = str(inp.get("k", "?"))
    sender = str(inp.get("from") or ("outside" if kind == "call" else ""))
    method = ""
    if kind == "call":
        method = str(inp.get("m", ""))
        summary = f"{method}({', '.join(_short(a, 16) for a in inp.get('a', []))})"
    elif kind == "reply":
        outcome = _short(inp["ok"], 24) if "ok" in inp else "error " + _short(inp.get("err"), 24)
        summary = f"reply #{inp.get('re')}: {outcome}"
    elif kind == "timer":
        summary = f"timer #{inp.get('tid')}"
    elif kind == "upgrade":
        summary = f"upgrade to {inp.get('to')}"
    elif kind == "effect":
        outcome = _short(inp["ok"], 24) if "ok" in inp else "error " + _short(inp.get("err"), 24)
        summary = f"side effect #{inp.get('eid')}: {outcome}"
    elif kind == "start":
        summary = "start"
    else:
        summary = _short(inp, 40)
    effects = sum(len(record.get(key, ())) for key in ("out", "emit", "rep", "tim", "fx"))
    return Row(lsn, wall_ns, kind, sender, summary, effects, method)


def _holds(code: Any, scope: dict[str, Any]) -> bool:
    """Whether a breakpoint condition holds; one that raises here does not hold here.

    ``state["balance"] > 10`` raises KeyError at the steps before the key exists; the user asked
    where it holds, not to stop the search there. (``Replayer.find`` itself raises, so a bug in
    a script's predicate is not hidden; a typed condition is tried at every step by design.)
    """
    try:
        return bool(eval(code, {}, scope))
    except Exception:
        return False


def _short(value: Any, limit: int) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class History:
    """One instance's log, opened for the debugger."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        app: str | None = None,
        home: str | os.PathLike[str] = ".immortals",
        snapshot_every: int = 1000,
    ) -> None:
        """``snapshot_every``: how far apart the background index spills snapshots (a jump
        replays at most that many steps); the merged view, which replays one instance per
        cut, asks for them closer."""
        self.log_dir: Path = open_log_dir(source, home)
        self.snapshot_every = snapshot_every
        self.reader = LogReader(self.log_dir)
        self.instance = self.reader.meta.instance
        self.app_spec = app or self.reader.meta.app
        self._rows: OrderedDict[int, list[Row]] = OrderedDict()
        self._rows_lock = threading.Lock()
        self.replay_lock = threading.Lock()
        self.indexing = False  # a background replay is spilling snapshots right now
        self.app_error: str | None = None
        self.replayer: Replayer | None = None
        try:
            self.replayer = Replayer(
                self.log_dir, app=app, spill=True, snapshot_every=snapshot_every
            )
        except ImmortalsError as exc:
            self.app_error = str(exc)
        self.checkpoints: set[int] = set()
        self.upgrades: set[int] = set()
        self._end: int | None = None  # the last readable LSN, once reading met damage
        self._found_damage: str | None = None
        self.on_damage: Callable[[str], None] | None = None
        """Called (from any thread) with one line when reading meets damage not known before."""
        self._load_marks()

    # -- the log -----------------------------------------------------------------------------------

    @property
    def first_lsn(self) -> int:
        return self.reader.first_lsn

    @property
    def last_lsn(self) -> int:
        end = self.reader.last_lsn
        return end if self._end is None else min(end, self._end)

    @property
    def count(self) -> int:
        return max(0, self.last_lsn - self.first_lsn + 1)

    @property
    def damage(self) -> str | None:
        """A one-line description of damage that ends the readable log, if any."""
        if self._found_damage is not None:
            return self._found_damage
        found = self.reader.damage
        if not found:
            return None
        path, damage = found[0]
        if damage.kind == "torn-tail":
            return (
                f"{path.name}: the last write was cut short ({damage.reason}); the instance's "
                "next start cuts it off"
            )
        return self._damage_text(path.name, damage.offset, damage.reason, damage.first_lsn)

    def _damage_text(self, file: str, offset: int, reason: str, first: int | None) -> str:
        where = f"{file} byte {offset}: {reason}"
        at = f" at LSN {first}" if first is not None else ""
        shown = (
            f"steps {self.first_lsn}..{self.last_lsn} are shown"
            if self.count
            else "no step before it can be shown"
        )
        return f"the log is damaged{at} ({where}); {shown}; `immortals log verify` tells more"

    def note_damage(self, exc: CorruptLogError) -> None:
        """End the history before the damaged frame ``exc`` names (reading met it)."""
        if exc.first_lsn is None:
            return
        end = exc.first_lsn - 1
        if self._end is not None and self._end <= end:
            return  # already known, or damage further back already ends the history
        self._end = end
        self._found_damage = self._damage_text(
            Path(exc.file).name, exc.offset, exc.reason, exc.first_lsn
        )
        if self.on_damage is not None:
            self.on_damage(self._found_damage)

    @contextmanager
    def _noting_damage(self) -> Iterator[None]:
        """Note damage met inside the block (see :meth:`note_damage`) and raise it on."""
        try:
            yield
        except CorruptLogError as exc:
            self.note_damage(exc)
            raise

    def is_live(self) -> bool:
        return writer_is_live(self.log_dir)

    def refresh(self) -> bool:
        """Read what a live writer appended; True if the log grew."""
        before = self.last_lsn
        with self._rows_lock:
            self.reader.refresh()
            last_block = (before - self.first_lsn) // BLOCK
            self._rows.pop(last_block, None)  # it may have been partial
        if self.replayer is not None:
            with self.replay_lock:
                self.replayer.refresh()
        self._load_marks()
        return self.last_lsn > before

    def _load_marks(self) -> None:
        try:
            self.checkpoints = {c.lsn for c in self.reader.checkpoints()}
        except LogError:
            self.checkpoints = set()
        self.upgrades = {v.from_lsn for v in self.reader.meta.versions if v.from_lsn > 1}

    # -- timeline rows -----------------------------------------------------------------------------

    def cached_row(self, lsn: int) -> Row | None:
        """The row for ``lsn`` if its block is loaded (the UI thread never waits for disk)."""
        block = self._rows.get((lsn - self.first_lsn) // BLOCK)
        if block is None:
            return None
        index = (lsn - self.first_lsn) % BLOCK
        return block[index] if index < len(block) else None

    def load_rows(self, lsn: int) -> None:
        """Read the block of rows holding ``lsn`` (worker threads call this)."""
        number = (lsn - self.first_lsn) // BLOCK
        with self._rows_lock:
            if number in self._rows:
                self._rows.move_to_end(number)
                return
            start = self.first_lsn + number * BLOCK
            end = min(self.last_lsn, start + BLOCK - 1)
            rows: list[Row] = []
            try:
                for r in self.reader.records(start, end):
                    rows.append(summarize(r.lsn, r.wall_ns, r.value))
            except CorruptLogError as exc:
                self.note_damage(exc)  # the rows before the damage stay
            self._rows[number] = rows
            while len(self._rows) > MAX_BLOCKS:
                self._rows.popitem(last=False)

    def row(self, lsn: int) -> Row:
        """The row for ``lsn``, reading it if needed."""
        found = self.cached_row(lsn)
        if found is None:
            self.load_rows(lsn)
            found = self.cached_row(lsn)
        assert found is not None
        return found

    def matching(self, needle: str) -> list[int]:
        """Every step whose row mentions ``needle`` (method, sender, arguments), ascending."""
        needle = needle.lower()
        found = []
        for lsn in range(self.first_lsn, self.last_lsn + 1):
            row = self.row(lsn)
            if needle in f"{row.kind} {row.sender} {row.summary}".lower():
                found.append(lsn)
        return found

    def search(self, needle: str, *, start: int, direction: int) -> int | None:
        """The next (direction 1) or previous (-1) step whose row mentions ``needle``.

        Matches the method, the sender and the arguments' text, case-insensitively. Reads rows,
        never re-executes: a search over a million steps takes seconds, not minutes.
        """
        needle = needle.lower()
        lsn = start + direction
        while self.first_lsn <= lsn <= self.last_lsn:
            row = self.row(lsn)
            if needle in f"{row.kind} {row.sender} {row.summary}".lower():
                return lsn
            lsn += direction
        return None

    # -- one step ----------------------------------------------------------------------------------

    def inspect(self, lsn: int, *, mark: int | None = None) -> StepView:
        """Re-execute step ``lsn``: its effects, state, diff, and the lines its handler ran."""
        replayer = self._require_replayer()
        with self.replay_lock, self._noting_damage():
            if self.indexing:
                replayer.cache.rescan()  # use what the background indexer has spilled so far
            trace = replayer.trace(lsn)
            state = replayer.current_state()
            against = None
            if mark is not None and mark != lsn:
                against = diff_states(replayer.state_at(mark), state)
        return StepView(
            trace.step, state, trace.lines, self._handler(trace.step, trace.lines), against
        )

    def _handler(self, step: Step, lines: list[TraceLine]) -> Handler | None:
        assert self.replayer is not None
        cls = self.replayer.app_class_at(step.lsn)  # the code that ran then, not today's file
        name = lines[0].function if lines else str(step.input.get("m", ""))
        if step.input.get("k") == "start" and not lines:
            name = "__init__"
        fn = getattr(cls, name, None)
        if fn is None:
            return None
        try:
            source, first = inspect.getsourcelines(inspect.unwrap(fn))
            file = inspect.getsourcefile(fn) or "?"
        except (OSError, TypeError):
            return None
        return Handler(file, first, [line.rstrip("\n") for line in source], name)

    def state_at(self, lsn: int) -> Any:
        replayer = self._require_replayer()
        with self.replay_lock, self._noting_damage():
            return replayer.state_at(lsn)

    def state_and_changes(
        self, lsn: int, *, against: int | None = None
    ) -> tuple[Any, list[Change]]:
        """The state after step ``lsn`` and what changed: made by that step, or (``against``)
        since step ``against``. Before the first step (``lsn`` below it) the state is None.

        The merged view shows every instance at a cut this way, so each is diffable alone.
        """
        replayer = self._require_replayer()
        with self.replay_lock, self._noting_damage():
            if self.indexing:
                replayer.cache.rescan()
            if lsn < self.first_lsn:
                state, changes = None, []
            else:
                changes = replayer.step(lsn).state_diff
                state = replayer.current_state()
            if against is not None and against != lsn:
                before = replayer.state_at(against) if against >= self.first_lsn else None
                changes = diff_states(before, state)
        return state, changes

    def record(self, lsn: int) -> dict[str, Any]:
        """The step record of ``lsn`` as logged (decoded, not re-executed)."""
        with self._rows_lock, self._noting_damage():
            value: dict[str, Any] = self.reader.read(lsn).value
        return value

    def find(
        self,
        breakpoints: list[Breakpoint],
        *,
        start: int,
        direction: Literal["forward", "backward"],
    ) -> int | None:
        """The next or previous step where any breakpoint holds."""
        replayer = self._require_replayer()
        conditions = [
            compile(b.text, "<breakpoint>", "eval") for b in breakpoints if b.kind == "condition"
        ]
        methods = {b.text for b in breakpoints if b.kind == "method"}
        senders = {b.text for b in breakpoints if b.kind == "sender"}

        def hit(state: Any, inp: dict[str, Any], effects: dict[str, Any]) -> bool:
            if inp.get("k") == "call" and inp.get("m") in methods:
                return True
            if (inp.get("from") or "outside") in senders:
                return True
            scope = {"state": state, "input": inp, "effects": effects}
            return any(_holds(code, scope) for code in conditions)

        with self.replay_lock, self._noting_damage():
            return replayer.find(hit, start=start, direction=direction)

    def where_changed(self, watch: Watch, *, start: int) -> int | None:
        """The last step at or before ``start`` at which the watched value changed."""
        replayer = self._require_replayer()
        with self.replay_lock, self._noting_damage():
            return replayer.find_change(watch.value, start=start + 1, direction="backward")

    def watch_values(self, first: int, last: int, watches: list[Watch]) -> dict[int, list[str]]:
        """Each watch's value after every step in ``first..last`` (re-executes that range)."""
        replayer = self._require_replayer()
        values: dict[int, list[str]] = {}
        with self.replay_lock, self._noting_damage():
            for step in replayer.steps(first, last, diff=False):
                state = replayer.current_state()
                values[step.lsn] = [_short(snapshot_value(w.value(state)), 14) for w in watches]
        return values

    def index_in_background(self, progress: Callable[[int], None]) -> None:
        """Replay the whole log once with a second replayer, spilling snapshots to disk.

        After it, any step's state is one short replay away. It runs on its own replayer so the
        user can keep moving meanwhile; the interactive replayer picks the snapshots up.
        """
        if self.replayer is None or not self.count:
            return
        self.indexing = True
        try:
            with (
                self._noting_damage(),
                Replayer(
                    self.log_dir,
                    app=self.replayer.app.spec,
                    spill=True,
                    snapshot_every=self.snapshot_every,
                ) as indexer,
            ):
                indexer.verify(to_lsn=self.last_lsn, progress=progress)
        finally:
            self.indexing = False
        with self.replay_lock:
            self.replayer.cache.rescan()

    def _require_replayer(self) -> Replayer:
        if self.replayer is None:
            raise ImmortalsError(self.app_error or "the app could not be loaded")
        return self.replayer

    def close(self) -> None:
        self.reader.close()
        if self.replayer is not None:
            self.replayer.close()
