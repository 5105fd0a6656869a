"""Re-execute an instance's recorded history offline, with given code, sending nothing.

The replayer drives the same deterministic executor the live runtime uses, in replay mode: each
logged input is executed again and every effect it produces (calls sent, replies, emits, timers,
non-deterministic values requested) is compared with what the log recorded. Nothing leaves the
process: the effects are data to look at.

Moving through history is built on one operation, "position the executor after step n": start
from the nearest state known at or before n (a snapshot this replayer took earlier, a
checkpoint, or the beginning of the log) and replay forward. Stepping forward from where the
executor is costs one step; everything else costs at most ``snapshot_every`` steps once the
region has been replayed once.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from logformat import LogReader, Record, pack_value, unpack_value
from runtime._api import Immortal
from runtime._apps import LoadedApp, load_app
from runtime._codestore import CodeBundle, ModuleCompiler, declared_version
from runtime._errors import AppLoadError, CheckpointFormatError, ImmortalsError, NondeterminismError
from runtime._executor import app_state
from runtime._home import DEFAULT_HOME, resolve_log
from runtime._replica import Replica
from runtime._schema import checkpoint_payload, is_call, message_fields, read_checkpoint
from runtime._versions import CodeBook

from ._cache import SnapshotCache, spill_folder
from ._diff import Change, diff_states
from ._trace import TraceLine, snapshot_value, tracing

Direction = Literal["forward", "backward"]
Predicate = Callable[[Any, dict[str, Any], dict[str, Any]], Any] | Callable[[Any], Any]
"""What :meth:`Replayer.find` accepts: a function of ``(state, input, effects)`` or of ``state``."""


class ReplayError(ImmortalsError):
    """A replay cannot be done as asked (an LSN outside the log, no state to start from)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One re-executed step: its input, what it consumed and produced, and how state changed.

    ``effects`` holds what the step produced, by kind: ``calls`` (``[target, seq, method,
    args, wants_reply]``), ``replies`` (``[to, seq, re, ok, value]`` for replies to instances,
    ``[key, ok, value]`` for outside callers and ``main``), ``emits``, ``timers``
    (``[timer id, due time]``, plus ``method, args`` for a timer callback), ``cancelled``
    (timer ids), ``side_effects`` (``[effect id, key, function name]``) and ``failures``
    (``[type, message, lsn]`` of a post or timer callback that raised). ``nondeterminism`` is the list of ``[kind, value]`` the step's
    handlers asked for (clock readings, random seeds, uuids), in order.
    """

    lsn: int
    wall_ns: int
    input: dict[str, Any]
    nondeterminism: list[Any]
    effects: dict[str, list[Any]]
    state_diff: list[Change] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "lsn": self.lsn,
            "wall_ns": self.wall_ns,
            "input": self.input,
            "nondeterminism": self.nondeterminism,
            "effects": self.effects,
            "state_diff": [c.to_json() for c in self.state_diff],
        }


@dataclass(frozen=True, slots=True)
class Divergence:
    """A step whose re-execution did not reproduce the log: where, in what, and both versions."""

    lsn: int
    what: str
    expected: Any
    actual: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "lsn": self.lsn,
            "what": self.what,
            "expected": self.expected,
            "actual": self.actual,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :meth:`Replayer.verify` over ``first_lsn..last_lsn``."""

    first_lsn: int
    last_lsn: int
    steps: int
    divergences: list[Divergence]

    @property
    def ok(self) -> bool:
        return not self.divergences


@dataclass(frozen=True, slots=True)
class Trace:
    """The lines of app code one step ran, in order, and the step itself."""

    step: Step
    lines: list[TraceLine]


def effects_of(record: dict[str, Any]) -> dict[str, list[Any]]:
    """A step record's effects, sorted by kind (see :class:`Step`)."""
    calls: list[Any] = []
    replies: list[Any] = []
    for message in record.get("out", ()):
        target, seq, _kind, a, b, c = message_fields(message)
        (calls if is_call(message) else replies).append([target, seq, a, b, c])
    replies.extend(record.get("rep", ()))
    return {
        "calls": calls,
        "replies": replies,
        "emits": list(record.get("emit", ())),
        "timers": list(record.get("tim", ())),
        "cancelled": list(record.get("tcx", ())),
        "side_effects": list(record.get("fx", ())),
        "failures": list(record.get("fail", ())),
    }


def resolve_app(spec: str, log_dir: Path) -> LoadedApp:
    """The app a log was written by: ``spec`` as given, else relative to the home's project.

    A log records the app the way ``immortals run`` was given it, often a path relative to
    where that ran. Homes usually live in that project folder (``./.immortals``), so the
    folder holding the home is the second place to look.
    """
    try:
        return load_app(spec)
    except AppLoadError as first:
        target, _, name = spec.rpartition(":")
        if not target.endswith(".py") or os.path.isabs(target):
            raise
        project = log_dir.resolve().parent.parent.parent  # HOME/logs/NAME -> HOME's folder
        candidate = project / target
        if not candidate.is_file():
            raise AppLoadError(
                f"{first}; the log was written by app {spec!r}: pass --app path/to/file.py:Class"
            ) from None
        return load_app(f"{candidate}:{name}")


def open_log_dir(source: str | os.PathLike[str], home: str | os.PathLike[str]) -> Path:
    """A log directory from a path, or from an instance name under ``home``."""
    return resolve_log(os.fspath(source), home)  # the same rule as every `immortals log` command


class Replayer:
    """An instance's recorded history, re-executable with given code.

    ``source`` is a log directory or an instance name under ``home``. ``app`` is
    ``path/file.py:Class`` or ``module:Class``; by default the app named in the log's metadata.
    Snapshots are taken every ``snapshot_every`` steps passed and kept in memory up to
    ``cache_bytes``; with ``spill=True`` they are also written beside the log's index, where
    the next replayer of the same log and code finds them. ``compile_module`` compiles the
    app's sources instead of plain ``compile`` (the logpoint pass inserts its evaluations so);
    the code versions are still the log's, so do not spill snapshots of such a replay.
    ``keep_streams=False`` skips the exactly-once bookkeeping that only snapshots read (see
    ``runtime._replica.Replica``): for one pass that takes none, about twice as fast on a log
    of outside calls; no snapshot is then taken.

    Raises ``AppLoadError`` when the app cannot be imported, ``NotALogError`` or
    ``CorruptLogError`` for a missing or damaged log. Stepping through history raises
    :class:`runtime.NondeterminismError` when the code does not reproduce the log (use
    :meth:`verify` to list every such step instead).
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        app: str | None = None,
        home: str | os.PathLike[str] = DEFAULT_HOME,
        snapshot_every: int = 1000,
        cache_bytes: int = 256 << 20,
        spill: bool = False,
        allow_pickle: bool = False,
        compile_module: ModuleCompiler | None = None,
        keep_streams: bool = True,
    ) -> None:
        self.log_dir = open_log_dir(source, home)
        self.reader = LogReader(self.log_dir)
        meta = self.reader.meta
        if app is not None:  # this code for the whole history
            self.app = load_app(app)
            self.code = CodeBook(
                self.log_dir, meta, forced=self.app.cls, compile_module=compile_module
            )
        else:  # each step with the code that ran it, from the log's code store
            self.code = CodeBook(
                self.log_dir,
                meta,
                at_hand=lambda: resolve_app(meta.app, self.log_dir).cls,
                compile_module=compile_module,
            )
            self.code.load_all()
            latest = self.code.app_for(meta.code_version)
            self.app = LoadedApp(
                meta.app,
                latest,
                CodeBundle(meta.code_version, lambda: b"", declared_version(latest)),
            )
        self.instance = meta.instance
        self.allow_pickle = allow_pickle
        self.keep_streams = keep_streams
        spill_to = spill_folder(self.log_dir, meta.log_id, self.app.code_version) if spill else None
        self.cache = SnapshotCache(every=snapshot_every, max_bytes=cache_bytes, spill_to=spill_to)
        self._replica: Replica | None = None
        self._position = -1  # the replica holds the state after this step (-1: none yet)
        self._checkpoints: list[int] | None = None

    # -- the log ---------------------------------------------------------------------------------

    @property
    def first_lsn(self) -> int:
        return self.reader.first_lsn

    @property
    def last_lsn(self) -> int:
        return self.reader.last_lsn

    def refresh(self) -> None:
        """See steps appended since opening (a live instance's log keeps growing)."""
        self.reader.refresh()
        self._checkpoints = None

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state -------------------------------------------------------------------------------------

    def state_at(self, lsn: int) -> Any:
        """The instance's state after step ``lsn``, as plain data (a detached copy).

        None before the instance's first step (its ``__init__`` runs in step 1, the start).
        """
        self._check_lsn(lsn, allow_before_first=True)
        self._seek(lsn)
        return self.current_state()

    def current_state(self) -> Any:
        """The state where the replayer stands now (after :meth:`position`)."""
        app = self._app()
        return None if app is None else snapshot_value(app_state(app))

    def _app(self) -> Any:
        """The app object where the replayer stands (None before the first start)."""
        return self._replica.executor.app if self._replica is not None else None

    @property
    def position(self) -> int:
        """The step the replayer's state is after (``first_lsn - 1``: before any step)."""
        return self._position

    # -- steps -------------------------------------------------------------------------------------

    def steps(
        self, from_lsn: int | None = None, to_lsn: int | None = None, *, diff: bool = True
    ) -> Iterator[Step]:
        """Re-execute ``from_lsn..to_lsn`` (default: the whole log), one :class:`Step` each.

        With ``diff=False`` the state is not compared around each step (faster for long runs).
        """
        start, end = self._range(from_lsn, to_lsn)
        self._seek(start - 1)
        before = self.current_state() if diff else None
        for record in self.reader.records(start, end):
            produced = self._execute(record.value, record.lsn)
            after = self.current_state() if diff else None
            changes = diff_states(before, after) if diff else []
            before = after
            yield self._step(record.lsn, record.wall_ns, record.value, produced, changes)

    def executed(
        self, from_lsn: int | None = None, to_lsn: int | None = None
    ) -> Generator[tuple[Record, dict[str, Any]], None, None]:
        """Re-execute ``from_lsn..to_lsn``, yielding each step's log record and the record its
        re-execution produced, nothing else: no :class:`Step`, no state copied. The fastest way
        through history (the logpoint pass rides on it); the caller may stop at any step."""
        start, end = self._range(from_lsn, to_lsn)
        self._seek(start - 1)
        for record in self.reader.records(start, end):
            yield record, self._execute(record.value, record.lsn)

    def step(self, lsn: int) -> Step:
        """Re-execute step ``lsn`` alone (from the state just before it)."""
        return next(self.steps(lsn, lsn))

    def _step(
        self,
        lsn: int,
        wall_ns: int,
        recorded: dict[str, Any],
        produced: dict[str, Any],
        changes: list[Change],
    ) -> Step:
        return Step(
            lsn,
            wall_ns,
            recorded["in"],
            list(produced.get("nd", ())),
            effects_of(produced),
            changes,
        )

    # -- verification ------------------------------------------------------------------------------

    def verify(
        self,
        from_lsn: int | None = None,
        to_lsn: int | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Re-execute a range and list every step whose effects differ from the log's.

        Unlike :meth:`steps`, a divergence does not stop the replay: the new code's state goes
        on from there, so later, independent divergences are found too. ``progress`` is called
        with each LSN done.
        """
        start, end = self._range(from_lsn, to_lsn)
        self._seek(start - 1)
        replica = self._replica
        assert replica is not None
        divergences: list[Divergence] = []
        count = 0
        for record in self.reader.records(start, end):
            try:
                replica.apply(record.value, record.lsn)
            except NondeterminismError as exc:
                divergences.append(Divergence(exc.lsn, exc.what, exc.expected, exc.actual))
            if not divergences:
                self._position = record.lsn
                self._maybe_snapshot(record.lsn)
            count += 1
            if progress is not None:
                progress(record.lsn)
        if divergences:
            # The state went where the new code took it, not where the log says: forget it.
            self._replica, self._position = None, -1
        return VerifyReport(start, end, count, divergences)

    # -- tracing -----------------------------------------------------------------------------------

    def trace(self, lsn: int) -> Trace:
        """Re-execute step ``lsn`` under a line tracer: every line of app code it ran, in order.

        Each :class:`TraceLine` has the file, line, function and the locals just before the
        line ran, so a user can walk through the handler forward and backward.
        """
        self._check_lsn(lsn)
        self._seek(lsn - 1)
        before = self.current_state()
        record = self.reader.read(lsn)
        lines: list[TraceLine] = []
        with tracing(lines):
            produced = self._execute(record.value, lsn)
        changes = diff_states(before, self.current_state())
        return Trace(self._step(lsn, record.wall_ns, record.value, produced, changes), lines)

    # -- searching ---------------------------------------------------------------------------------

    def find(
        self,
        predicate: Predicate,
        *,
        start: int | None = None,
        direction: Direction = "forward",
    ) -> int | None:
        """The first step after ``start`` (or last before it, going backward) where the
        predicate is true; None if there is none.

        The predicate is ``predicate(state)`` or ``predicate(state, input, effects)``: which one
        is read from its signature, once, before anything is replayed (a predicate that takes
        neither is a ``TypeError`` at once). ``state`` is the state after the step: read it, do
        not change it. ``start`` defaults to the replayer's position (forward) or to the end of
        the log (backward). An exception inside the predicate propagates, with a note naming
        the step: hiding it would turn a typo into "no such step". Guard a key that only exists
        later yourself (``state.get("balance", 0) > 10``).
        """
        call = _predicate_caller(predicate)

        def hit(lsn: int, record: dict[str, Any], produced: dict[str, Any]) -> bool:
            app = self._app()
            state = app_state(app) if app is not None else None
            try:
                return bool(call(state, record["in"], effects_of(produced)))
            except Exception as exc:
                exc.add_note(f"raised by the find() predicate at LSN {lsn}")
                raise

        return self._search(hit, start, direction)

    def find_change(
        self,
        expression: Callable[[Any], Any],
        *,
        start: int | None = None,
        direction: Direction = "forward",
    ) -> int | None:
        """The next (or previous) step at which ``expression(state)`` changed value.

        "Where did this change?": watch ``lambda s: s["balance"]`` and go backward. A step
        where the expression raises has the value ``None`` there.
        """

        def value_now() -> Any:
            app = self._app()
            if app is None:
                return None
            try:
                return snapshot_value(expression(app_state(app)))
            except Exception:
                return None

        previous: list[Any] = []

        def changed(lsn: int, record: dict[str, Any], produced: dict[str, Any]) -> bool:
            now = value_now()
            was = previous[0] if previous else _UNSET
            previous[:] = [now]
            return was is not _UNSET and was != now

        def reset() -> None:
            previous[:] = [value_now()]

        return self._search(changed, start, direction, on_window=reset)

    def _search(
        self,
        hit: Callable[[int, dict[str, Any], dict[str, Any]], bool],
        start: int | None,
        direction: Direction,
        on_window: Callable[[], None] | None = None,
    ) -> int | None:
        if direction not in ("forward", "backward"):
            raise ReplayError(f"direction must be 'forward' or 'backward', not {direction!r}")
        if direction == "forward":
            begin = self._position if start is None else start
            begin = max(begin, self.first_lsn - 1)
            if begin >= self.last_lsn:
                return None
            self._check_lsn(begin, allow_before_first=True)
            self._seek(begin)
            if on_window is not None:
                on_window()
            for record in self.reader.records(begin + 1, self.last_lsn):
                produced = self._execute(record.value, record.lsn)
                if hit(record.lsn, record.value, produced):
                    return record.lsn
            return None
        # Backward: replay the windows between known states, newest first; the last hit in
        # the first window that has one is the answer.
        high = self.last_lsn if start is None else min(start - 1, self.last_lsn)
        while high >= self.first_lsn:
            anchor = self._anchor_below(high)
            self._seek(anchor)
            if on_window is not None:
                on_window()
            found = None
            for record in self.reader.records(anchor + 1, high):
                produced = self._execute(record.value, record.lsn)
                if hit(record.lsn, record.value, produced):
                    found = record.lsn
            if found is not None:
                return found
            high = anchor
        return None

    # -- positioning -------------------------------------------------------------------------------

    def _range(self, from_lsn: int | None, to_lsn: int | None) -> tuple[int, int]:
        start = self.first_lsn if from_lsn is None else from_lsn
        end = self.last_lsn if to_lsn is None else to_lsn
        self._check_lsn(start)
        self._check_lsn(end)
        if start > end:
            raise ReplayError(
                f"the range {start}..{end} is empty: the first step is after the last"
            )
        return start, end

    def _check_lsn(self, lsn: int, *, allow_before_first: bool = False) -> None:
        low = self.first_lsn - 1 if allow_before_first else self.first_lsn
        if not low <= lsn <= self.last_lsn:
            raise ReplayError(
                f"LSN {lsn} is outside the log of {self.instance!r}, which holds steps "
                f"{self.first_lsn}..{self.last_lsn}"
            )

    def _anchor_below(self, lsn: int) -> int:
        """The newest LSN strictly below ``lsn`` whose state can be had without replaying."""
        candidates = [self.first_lsn - 1] if self.first_lsn == 1 else []
        cached = self.cache.nearest(lsn - 1)
        if cached is not None:
            candidates.append(cached)
        candidates += [c for c in self._checkpoint_lsns() if c < lsn]
        if not candidates:
            raise ReplayError(
                f"no state to start from before LSN {lsn}: the log was trimmed to start at "
                f"{self.first_lsn} and no checkpoint at or before it loads"
            )
        return max(candidates)

    def _seek(self, lsn: int) -> None:
        """Make the replica hold the state after step ``lsn``."""
        if self._replica is not None and self._position <= lsn:
            best_known = max(self.cache.nearest(lsn) or -1, self._newest_checkpoint_lsn(lsn))
            if best_known <= self._position or lsn - self._position < self.cache.every:
                self._replay_to(lsn)  # going forward from here is the shortest way
                return
        self._restore(lsn)
        self._replay_to(lsn)

    def _checkpoint_lsns(self) -> list[int]:
        if self._checkpoints is None:
            self._checkpoints = [c.lsn for c in self.reader.checkpoints()]
        return self._checkpoints

    def _newest_checkpoint_lsn(self, lsn: int) -> int:
        lsns = [c for c in self._checkpoint_lsns() if c <= lsn]
        return max(lsns) if lsns else -1

    def _restore(self, lsn: int) -> None:
        """Load the newest known state at or before ``lsn``: cache, checkpoint, or the start."""
        cached = self.cache.nearest(lsn)
        checkpoint = self._newest_checkpoint_lsn(lsn)
        if cached is not None and cached >= checkpoint:
            packed = self.cache.get(cached)
            if packed is not None:
                try:
                    self._load(unpack_value(packed), cached, where=f"snapshot at LSN {cached}")
                    return
                except CheckpointFormatError:
                    pass  # a snapshot spilled by another version: fall back to a checkpoint
        if checkpoint >= 0:
            found = self.reader.newest_checkpoint(at_or_below=lsn, allow_pickle=self.allow_pickle)
            if found is not None:
                at, snap, _skipped = found
                self._load(snap, at, where=f"checkpoint at LSN {at} of {self.log_dir}")
                return
        if self.first_lsn != 1:
            raise ReplayError(
                f"no state to start from at LSN {lsn}: the log was trimmed to start at "
                f"{self.first_lsn} and no checkpoint at or before it loads"
            )
        self._replica = self._new_replica(1)
        self._position = 0

    def app_class_at(self, lsn: int) -> type[Immortal]:
        """The app class that ran (or, with ``app=``, replays) step ``lsn``."""
        return self.code.app_at(max(lsn, 1))

    def _new_replica(self, lsn: int) -> Replica:
        """A replica running the code of step ``lsn``, which takes upgrade steps after it."""
        replica = Replica(
            self.app_class_at(lsn), name=self.instance, keep_streams=self.keep_streams
        )
        replica.executor.code_for = self.code.app_for
        return replica

    def _load(self, payload: Any, lsn: int, *, where: str) -> None:
        replica = self._new_replica(lsn)
        replica.restore(read_checkpoint(payload, where=where))
        self._replica = replica
        self._position = lsn

    def _replay_to(self, lsn: int) -> None:
        if self._position >= lsn:
            return
        for record in self.reader.records(self._position + 1, lsn):
            self._execute(record.value, record.lsn)

    def _execute(self, recorded: dict[str, Any], lsn: int) -> dict[str, Any]:
        """Re-execute one step from the state after ``lsn - 1``; snapshot it if it is due."""
        replica = self._replica
        assert replica is not None and self._position == lsn - 1
        try:
            produced: dict[str, Any] = replica.apply(recorded, lsn)  # type: ignore[arg-type, assignment]
        except BaseException:
            self._replica, self._position = None, -1  # its state is not the recorded one
            raise
        self._position = lsn
        self._maybe_snapshot(lsn)
        return produced

    def _maybe_snapshot(self, lsn: int) -> None:
        replica = self._replica
        if (
            replica is not None
            and self.cache.wants(lsn)
            and replica.keep_streams
            and replica.quiescent
        ):
            # Only the streams' numbers: acknowledgements are not logged, so a replayed outbox
            # holds every message the instance ever sent, and outside callers' results run to
            # 100,000 entries; a snapshot grew with the history (restoring one at step 270,000
            # of a call chain took 0.3 s, indexing it was quadratic). Nothing a replayer does
            # reads either; checkpoints are written by the node from its own streams, not here.
            streams = {"seq_in": dict(replica.streams.seq_in)}
            payload = checkpoint_payload(replica.executor.snapshot(), streams)
            self.cache.put(lsn, pack_value(payload))


_UNSET = object()

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _takes_positionally(signature: inspect.Signature, count: int) -> bool:
    """Whether a function of ``signature`` can be called with exactly ``count`` positional
    arguments (and nothing else)."""
    required = 0
    most: float = 0
    for p in signature.parameters.values():
        if p.kind in _POSITIONAL:
            most += 1
            required += p.default is p.empty
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            most = float("inf")
        elif p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty:
            return False  # a required keyword-only argument: find() never passes one
    return required <= count <= most


def _predicate_caller(predicate: Predicate) -> Callable[[Any, dict[str, Any], Any], Any]:
    """``predicate`` as a function of (state, input, effects), whichever form it was written in.

    Decided from the signature, once: calling it and catching ``TypeError`` would also catch
    the ``TypeError`` of a bug inside it and silently try the other form. A function of three
    arguments wins when both would fit (``lambda *args: ...``). Without a readable signature
    (some builtins) the full form is assumed.
    """
    if not callable(predicate):
        raise TypeError(f"find() needs a function, not {type(predicate).__name__}")
    try:
        signature = inspect.signature(predicate)
    except (TypeError, ValueError):
        return predicate  # type: ignore[return-value]
    if _takes_positionally(signature, 3):
        return predicate  # type: ignore[return-value]
    if _takes_positionally(signature, 1):
        one: Callable[[Any], Any] = predicate  # type: ignore[assignment]
        return lambda state, _inp, _effects: one(state)
    name = getattr(predicate, "__name__", type(predicate).__name__)
    raise TypeError(
        f"find() needs a predicate of (state) or of (state, input, effects); "
        f"{name}{signature} takes neither"
    )
