"""Several instances' logs as one history for the debugger, without any UI.

One :class:`History` per log does what it does for one log (rows, re-execution, searches);
:class:`debugger._causal.CausalMerge` orders their steps and links them. This module is the
glue between the two: a merged position (1, 2, 3, ... in the causal order) is the unit the
merged timeline moves by, and each is turned into an instance and an LSN to ask that
instance's history. The merge reads every log once, from its own readers, in a background
thread; the first screen needs only the first few hundred merged steps.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from logformat import CorruptLogError, LogReader, Record
from replayer import Change
from runtime._errors import ImmortalsError

from ._causal import CausalMerge, Hop, Links, StepRef, step_links
from ._history import BLOCK, Breakpoint, History, Row, Watch

FIRST_MERGE = 2048  # steps merged before the first screen (a screen shows about 40)
CHUNK = 8192  # steps merged per turn of the background merge
MIN_SNAPSHOT_EVERY = 100  # a cut replays each instance: n instances get snapshots 1000 / n apart
CUTS_KEPT = 256  # instances' states at a cut kept (see MergedHistory.cut_states)

COLOURS = ["#61afef", "#e5c07b", "#98c379", "#c678dd", "#e06c75", "#56b6c2", "#d19a66"]
"""One colour per instance, in the order given (the timeline's tag and the state pane)."""


@dataclass(frozen=True, slots=True)
class MergedRow(Row):
    """A row of the merged timeline: ``lsn`` is the merged position; the step is
    ``instance``'s ``step_lsn``."""

    instance: str = ""
    step_lsn: int = 0
    colour: int = 0


@dataclass(slots=True)
class CutState:
    """One instance at a consistent cut: its state after step ``lsn`` (0: before any)."""

    instance: str
    lsn: int
    state: Any
    changes: list[Change]
    selected: bool
    error: str | None = None


class InstanceWatch(Watch):
    """``server.count``: an expression over one instance's state, whose attributes are names
    (``count``) besides ``state`` itself."""

    def value(self, state: Any) -> Any:
        scope = dict(state) if isinstance(state, dict) else {}
        scope["state"] = state
        try:
            return eval(self.code, {}, scope)
        except Exception as exc:
            return f"<{type(exc).__name__}>"


@dataclass(frozen=True, slots=True)
class MergedWatch:
    """A watch of the merged view: of one named instance, or (``instance`` None) of the
    instance of each row."""

    text: str
    instance: str | None
    watch: Watch


class MergedHistory:
    """Several logs, opened for the debugger as one causally ordered history."""

    def __init__(
        self,
        sources: Sequence[str | os.PathLike[str]],
        *,
        home: str | os.PathLike[str] = ".immortals",
    ) -> None:
        self.histories: list[History] = []
        every = max(MIN_SNAPSHOT_EVERY, 1000 // max(1, len(sources)))
        try:
            for source in sources:
                history = History(source, home=home, snapshot_every=every)
                if any(h.instance == history.instance for h in self.histories):
                    history.close()
                    raise ImmortalsError(
                        f"the instance {history.instance} is given twice ({source})"
                    )
                self.histories.append(history)
        except BaseException:
            self.close()
            raise
        self.names = [h.instance for h in self.histories]
        self._by_name = {h.instance: h for h in self.histories}
        self._readers: list[LogReader] = []
        self.closed = False
        self.merge = CausalMerge({h.instance: self._records(h) for h in self.histories})
        self.merge.advance(FIRST_MERGE)
        self._in_flight: set[int] | None = None
        self._cuts: OrderedDict[tuple[str, int, int | None], tuple[Any, list[Change]]] = (
            OrderedDict()
        )

    def _records(self, history: History) -> Iterator[Record]:
        """``history``'s records for the merge, from a reader of its own (the merge thread
        must not share the UI's reader), up to where the log ended when it was opened."""
        reader = LogReader(history.log_dir)
        self._readers.append(reader)
        end = history.last_lsn
        try:
            yield from reader.records(history.first_lsn, end)
        except CorruptLogError as exc:
            history.note_damage(exc)  # the merge ends this instance's history before it

    def history(self, name: str) -> History:
        return self._by_name[name]

    def colour(self, name: str) -> str:
        return COLOURS[self.names.index(name) % len(COLOURS)]

    # -- the interface the timeline reads (positions for LSNs) -------------------------------------

    @property
    def first_lsn(self) -> int:
        return 1

    @property
    def last_lsn(self) -> int:
        return self.merge.count

    @property
    def count(self) -> int:
        return self.merge.count

    checkpoints: frozenset[int] = frozenset()  # per instance: see marker()
    upgrades: frozenset[int] = frozenset()

    def step(self, position: int) -> StepRef:
        return self.merge.at(position)

    def cached_row(self, position: int) -> MergedRow | None:
        if not 1 <= position <= self.merge.count:
            return None
        ref = self.merge.at(position)
        row = self._by_name[ref.instance].cached_row(ref.lsn)
        if row is None:
            return None
        return MergedRow(
            position,
            row.wall_ns,
            row.kind,
            row.sender,
            row.summary,
            row.effects,
            row.method,
            instance=ref.instance,
            step_lsn=ref.lsn,
            colour=self.merge.instance_at(position),
        )

    def load_rows(self, position: int) -> None:
        """Read the rows of the block of merged positions holding ``position``: each
        instance's rows among them come from that instance's block cache."""
        first = (position - 1) // BLOCK * BLOCK + 1
        last = min(self.merge.count, first + BLOCK - 1)
        spans: dict[str, tuple[int, int]] = {}
        for p in range(first, last + 1):
            ref = self.merge.at(p)
            lo, hi = spans.get(ref.instance, (ref.lsn, ref.lsn))
            spans[ref.instance] = (min(lo, ref.lsn), max(hi, ref.lsn))
        for name, (lo, hi) in spans.items():
            history = self._by_name[name]
            for lsn in range(lo, hi + 1, BLOCK):
                history.load_rows(lsn)
            history.load_rows(hi)

    def row(self, position: int) -> MergedRow:
        found = self.cached_row(position)
        if found is None:
            self.load_rows(position)
            found = self.cached_row(position)
        assert found is not None
        return found

    def marker(self, position: int) -> Literal["", "C", "U", "~"]:
        """What the timeline's marker column shows: a message never received (``~``), a
        checkpoint or an upgrade of the row's instance."""
        ref = self.merge.at(position)
        if self._in_flight is None and self.merge.done:
            self._in_flight = {
                p
                for step, _message in self.merge.in_flight()
                if (p := self.merge.position(step)) is not None
            }
        if self._in_flight and position in self._in_flight:
            return "~"
        history = self._by_name[ref.instance]
        if ref.lsn in history.upgrades:
            return "U"
        if ref.lsn in history.checkpoints:
            return "C"
        return ""

    def position_of(self, text: str) -> int | None:
        """``NAME:LSN`` (a step of an instance) or ``N`` (a merged position)."""
        name, sep, lsn = text.rpartition(":")
        if sep and name in self._by_name and lsn.strip().isdigit():
            return self.merge.position(StepRef(name, int(lsn)))
        if text.isdigit() and 1 <= int(text) <= self.merge.count:
            return int(text)
        return None

    # -- building in the background ----------------------------------------------------------------

    def build(self, progress: Callable[[int], None] | None = None) -> None:
        """Merge the rest (a worker thread calls this; the UI reads what is merged so far).

        Stops when the history is closed: its readers must not be closed under a merge.
        """
        while not self.closed and self.merge.advance(CHUNK):
            if progress is not None:
                progress(self.merge.count)

    @property
    def total(self) -> int:
        """Every step of every log: what the merge reaches when done."""
        return sum(h.count for h in self.histories)

    # -- the cut -----------------------------------------------------------------------------------

    def cut_states(
        self,
        position: int,
        *,
        mark: int | None = None,
        selected: tuple[Any, list[Change]] | None = None,
    ) -> list[CutState]:
        """Every instance at the consistent cut of the step at ``position``, with what its
        newest step in the cut changed, or (``mark``) what changed since the mark's cut.

        ``selected``: the selected step's state and changes, when the caller has just
        re-executed it (the step's own panes do), so it is not replayed twice. Results are
        kept for the last few hundred (instance, step) pairs: following a message back and
        forth moves only some instances' cuts.
        """
        here = self.merge.at(position)
        cut = self.merge.cut(here)
        since = self.merge.cut(self.merge.at(mark)) if mark is not None else None
        states = []
        for history in self.histories:
            name = history.instance
            lsn = cut[name]
            against = since[name] if since is not None else None
            key = (name, lsn, against)
            try:
                if name == here.instance and selected is not None and against is None:
                    state, changes = selected
                elif key in self._cuts:
                    state, changes = self._cuts[key]
                    self._cuts.move_to_end(key)
                else:
                    state, changes = history.state_and_changes(lsn, against=against)
            except ImmortalsError as exc:
                states.append(CutState(name, lsn, None, [], name == here.instance, str(exc)))
                continue
            self._cuts[key] = (state, changes)
            while len(self._cuts) > CUTS_KEPT:
                self._cuts.popitem(last=False)
            states.append(CutState(name, lsn, state, changes, name == here.instance))
        return states

    # -- following messages ------------------------------------------------------------------------

    def links(self, position: int) -> tuple[StepRef, Links]:
        ref = self.merge.at(position)
        return ref, step_links(self._by_name[ref.instance].record(ref.lsn))

    def forward(self, position: int, nth: int = 0) -> Hop:
        """From a step that sent messages: the step that received its ``nth`` message (modulo
        how many it sent)."""
        ref, links = self.links(position)
        if not links.sent:
            return Hop(None, "this step sent no message to an instance")
        return self.merge.receiver(ref.instance, links.sent[nth % len(links.sent)])

    def sent_count(self, position: int) -> int:
        return len(self.links(position)[1].sent)

    def back(self, position: int) -> Hop:
        """From a step that received a message (a call or a reply): the step that sent it."""
        return self.merge.sender_of(self.merge.at(position))

    def pair(self, position: int) -> Hop:
        """Call and reply: from a step that received a reply, the step that made the call;
        from a step that made a call, the step that received its reply."""
        ref, links = self.links(position)
        if links.kind == "reply" and links.sender is not None:
            return self.merge.call_of_reply(ref, links.re, links.sender)
        calls = [m for m in links.sent if m.kind == "c" and m.wants_reply]
        if calls:
            return self.merge.reply_of_call(ref.instance, calls[0])
        return Hop(None, "this step neither made a call nor received a reply")

    def why(self, position: int) -> Hop:
        """The previous hop of the causal chain: what made this step happen."""
        ref, links = self.links(position)
        return self.merge.why(ref, links)

    def hop_position(self, hop: Hop) -> int | None:
        return self.merge.position(hop.step) if hop.step is not None else None

    # -- breakpoints, watches, searches across the merged timeline ---------------------------------

    def _start_in(self, name: str, position: int, direction: str) -> int:
        """Where ``name``'s own search starts for a merged search from ``position``."""
        lsn = self.merge.latest_at(name, position)
        if direction == "backward" and lsn:
            here = self.merge.at(position)
            return lsn if here == StepRef(name, lsn) else lsn + 1
        return lsn

    def _nearest(self, found: list[int | None], position: int, direction: str) -> int | None:
        if direction == "forward":
            after = [p for p in found if p is not None and p > position]
            return min(after) if after else None
        before = [p for p in found if p is not None and p < position]
        return max(before) if before else None

    def find(
        self,
        breakpoints: list[Breakpoint],
        *,
        start: int,
        direction: Literal["forward", "backward"],
    ) -> int | None:
        """The nearest merged position after (before) ``start`` where a breakpoint holds in
        its instance: each instance searches its own log from where the cursor stands in it."""
        found = []
        for history in self.histories:
            if history.replayer is None:
                continue
            name = history.instance
            lsn = history.find(
                breakpoints, start=self._start_in(name, start, direction), direction=direction
            )
            if lsn is not None:
                found.append(self.merge.position(StepRef(name, lsn)))
        return self._nearest(found, start, direction)

    def watch(self, text: str) -> MergedWatch:
        """``NAME.EXPR`` watches instance NAME; any other text, each row's own instance."""
        name, sep, rest = text.partition(".")
        if sep and name in self._by_name and rest.strip():
            return MergedWatch(text, name, InstanceWatch(rest.strip()))
        return MergedWatch(text, None, Watch(text))

    def watch_values(
        self, first: int, last: int, watches: list[MergedWatch]
    ) -> dict[int, list[str]]:
        """Each watch's value at every merged position in ``first..last``: a named instance's
        after its newest step at or before the row; otherwise the row's instance's after it."""
        last = min(last, self.merge.count)
        values: dict[int, list[str]] = {p: ["-"] * len(watches) for p in range(first, last + 1)}
        for history in self.histories:
            if history.replayer is None:
                continue
            name = history.instance
            mine = [i for i, w in enumerate(watches) if w.instance in (None, name)]
            wanted: dict[int, list[tuple[int, int]]] = {}  # lsn -> [(position, watch index)]
            for p in range(first, last + 1):
                here = self.merge.at(p)
                for i in mine:
                    if watches[i].instance is None and here.instance != name:
                        continue
                    lsn = here.lsn if here.instance == name else self.merge.latest_at(name, p)
                    if lsn:
                        wanted.setdefault(lsn, []).append((p, i))
            if not wanted:
                continue
            computed = history.watch_values(
                min(wanted), max(wanted), [watches[i].watch for i in mine]
            )
            for lsn, places in wanted.items():
                shown = computed.get(lsn)
                for p, i in places:
                    if shown is not None:
                        values[p][i] = shown[mine.index(i)]
        return values

    def where_changed(self, watch: MergedWatch, *, position: int) -> int | None:
        """The merged position of the last step before ``position`` that changed the watched
        value (of the named instance, or of the selected step's instance)."""
        here = self.merge.at(position)
        name = watch.instance or here.instance
        lsn = self.merge.latest_at(name, position)
        start = lsn - 1 if here == StepRef(name, lsn) else lsn
        if start < self._by_name[name].first_lsn:
            return None
        found = self._by_name[name].where_changed(watch.watch, start=start)
        return self.merge.position(StepRef(name, found)) if found is not None else None

    def matching(self, needle: str) -> list[int]:
        """Merged positions whose row mentions ``needle`` (see :meth:`History.matching`)."""
        found: list[int] = []
        for history in self.histories:
            for lsn in history.matching(needle):
                p = self.merge.position(StepRef(history.instance, lsn))
                if p is not None:
                    found.append(p)
        return sorted(found)

    def search(self, needle: str, *, start: int, direction: int) -> int | None:
        """The next (previous) merged position whose row mentions ``needle``."""
        needle = needle.lower()
        p = start + direction
        while 1 <= p <= self.merge.count:
            row = self.row(p)
            if needle in f"{row.instance} {row.kind} {row.sender} {row.summary}".lower():
                return p
            p += direction
        return None

    def close(self) -> None:
        """Close every log; a merge running in another thread finishes its chunk first."""
        self.closed = True
        merge = getattr(self, "merge", None)
        if merge is not None:
            with merge.lock:  # held by advance() while it reads
                for reader in self._readers:
                    reader.close()
        for history in self.histories:
            with history.replay_lock:  # a re-execution in a worker finishes first
                history.close()
