"""The retroactive test of one log: recorded inputs through new code, compared step by step.

Three passes over the log, each a plain forward replay (a coroutine suspended mid-await cannot
be copied, so "go back one step" is never available):

1. **check**: from the starting state (the newest checkpoint before the range, migrated to the
   new code's version, or the log's start), run every recorded input through the new code and
   compare what it produced with the record (``_compare``). After a divergence the new code's
   state is no longer history's, and the replay goes on with it anyway: later steps are
   checked too, and counted.
2. **trace** (only when something diverged): the same replay again, new code and recorded code
   side by side, under the line tracer at the listed divergent steps only (tracing every step
   would slow the whole check for the few steps anyone reads). It finds the first line where
   the two versions ran different source text, else the line of the new code that produced the
   differing effect.
3. **migration** (``--check-migration``): for each checkpoint in range, migrate-then-new-code
   and recorded-code-then-migrate, up to the next checkpoint or the end, must agree on effects
   and on the state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from logformat import LogReader
from replayer._trace import snapshot_value
from runtime._apps import LoadedApp
from runtime._codestore import declared_version as app_version
from runtime._errors import ImmortalsError
from runtime._executor import app_state
from runtime._replica import Replica
from runtime._schema import read_checkpoint
from runtime._versions import migrate_state

from ._compare import FieldDiff, effect_diffs, state_diffs
from ._old import OldCodeError, old_app_for
from ._rules import AllowRule, mark_allowed, step_method
from ._step import CountedLine, Ran, effect_line, parting_lines, run_step


class UpgradeError(ImmortalsError):
    """A retroactive test cannot run as asked (an LSN outside the log, no state to start from,
    the recorded code missing for ``--check-migration``)."""


@dataclass(frozen=True, slots=True)
class SourceLine:
    """A line of app code: where, in which function, and its text."""

    file: str
    line: int
    function: str
    text: str

    @classmethod
    def of(cls, counted: CountedLine | None) -> SourceLine | None:
        if counted is None:
            return None
        t = counted.line
        return cls(t.file, t.line, t.function, counted.text)

    def __str__(self) -> str:
        return f"{_relative(self.file)}:{self.line} in {self.function}(): {self.text}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function, "text": self.text}


@dataclass(slots=True)
class StepDivergence:
    """A step whose new-code run differs from the recorded one (or, ``check="migration"``, a
    point where migrating and replaying do not commute)."""

    lsn: int
    input: dict[str, Any]
    diffs: list[FieldDiff]
    allowed: bool
    method: str | None = None
    check: str = "effects"
    new_line: SourceLine | None = None
    old_line: SourceLine | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "lsn": self.lsn,
            "check": self.check,
            "input": self.input,
            "method": self.method,
            "allowed": self.allowed,
            "diffs": [d.to_json() for d in self.diffs],
            "new_line": self.new_line.to_json() if self.new_line else None,
            "old_line": self.old_line.to_json() if self.old_line else None,
            "note": self.note,
        }


@dataclass(slots=True)
class InstanceResult:
    """The outcome of one log's retroactive test (counts over ``first_lsn..last_lsn``)."""

    instance: str
    log_dir: Path
    app: str
    old_app: str | None
    old_code_note: str | None
    first_lsn: int
    last_lsn: int
    start_from: int  # the checkpoint the replay started from (0: the log's start)
    from_version: int | None
    to_version: int | None
    steps: int = 0
    equal: int = 0
    diverged: int = 0
    allowed: int = 0
    divergences: list[StepDivergence] = field(default_factory=list)
    allowed_divergences: list[StepDivergence] = field(default_factory=list)
    diverged_lsns: list[int] = field(default_factory=list)
    allowed_lsns: list[int] = field(default_factory=list)
    migration: list[StepDivergence] | None = None  # None: not checked
    boundaries: list[int] = field(default_factory=list)  # checkpoints splitting the range

    @property
    def migration_failures(self) -> list[StepDivergence]:
        return [m for m in self.migration or () if not m.allowed]

    @property
    def ok(self) -> bool:
        return self.diverged == 0 and not self.migration_failures

    def segments(self) -> list[tuple[int, int]]:
        """The checked range cut at its checkpoints: ``[(first, last), ...]``."""
        cuts = [self.first_lsn - 1, *self.boundaries, self.last_lsn]
        return [(a + 1, b) for a, b in pairwise(cuts) if a < b]

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "log": str(self.log_dir),
            "app": self.app,
            "old_app": self.old_app,
            "old_code_note": self.old_code_note,
            "first_lsn": self.first_lsn,
            "last_lsn": self.last_lsn,
            "start_from_checkpoint": self.start_from,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "ok": self.ok,
            "steps": self.steps,
            "equal": self.equal,
            "diverged": self.diverged,
            "allowed": self.allowed,
            "diverged_lsns": self.diverged_lsns,
            "allowed_lsns": self.allowed_lsns,
            "divergences": [d.to_json() for d in self.divergences],
            "allowed_divergences": [d.to_json() for d in self.allowed_divergences],
            "migration": None if self.migration is None else [m.to_json() for m in self.migration],
        }


def check_log(
    log_dir: Path,
    new: LoadedApp,
    *,
    from_lsn: int | None = None,
    to_lsn: int | None = None,
    allow: list[AllowRule] | None = None,
    max_divergences: int = 5,
    check_migration: bool = False,
    old_app: str | None = None,
    allow_pickle: bool = False,
    progress: Callable[[int], None] | None = None,
) -> InstanceResult:
    """Run the retroactive test of the log in ``log_dir`` with ``new`` (see the module doc)."""
    with LogReader(log_dir) as reader:
        return _Test(reader, log_dir, new, allow or [], allow_pickle, old_app).run(
            from_lsn, to_lsn, max_divergences, check_migration, progress
        )


class _Test:
    def __init__(
        self,
        reader: LogReader,
        log_dir: Path,
        new: LoadedApp,
        rules: list[AllowRule],
        allow_pickle: bool,
        old_spec: str | None,
    ) -> None:
        self.reader = reader
        self.log_dir = log_dir
        self.new = new
        self.rules = rules
        self.allow_pickle = allow_pickle
        self.old_spec = old_spec
        self.instance = reader.meta.instance
        self.old: LoadedApp | None = None
        self.old_version: int | None = None

    def run(
        self,
        from_lsn: int | None,
        to_lsn: int | None,
        max_divergences: int,
        check_migration: bool,
        progress: Callable[[int], None] | None,
    ) -> InstanceResult:
        first, last = self.reader.first_lsn, self.reader.last_lsn
        if last < first:
            raise UpgradeError(f"the log of {self.instance!r} ({self.log_dir}) holds no steps")
        start = first if from_lsn is None else from_lsn
        end = last if to_lsn is None else to_lsn
        for lsn in (start, end):
            if not first <= lsn <= last:
                raise UpgradeError(
                    f"LSN {lsn} is outside the log of {self.instance!r}, which holds steps "
                    f"{first}..{last}"
                )
        if start > end:
            raise UpgradeError(f"the range {start}..{end} is empty: --from is after --to")
        anchor = self._anchor(start - 1, first)
        note = None
        try:
            self.old = old_app_for(self.log_dir, anchor + 1, override=self.old_spec)
            self.old_version = app_version(self.old.cls)
        except OldCodeError as exc:
            if check_migration:
                raise UpgradeError(f"--check-migration needs the recorded code: {exc}") from None
            note = str(exc)
        checkpoints = [c.lsn for c in self.reader.checkpoints()]
        result = InstanceResult(
            self.instance,
            self.log_dir,
            self.new.spec,
            self.old.spec if self.old else None,
            note,
            start,
            end,
            anchor,
            self.old_version,
            app_version(self.new.cls),
            boundaries=[c for c in checkpoints if start <= c < end],
        )
        self._check(result, anchor, max_divergences, progress)
        listed = result.divergences + result.allowed_divergences
        if listed:
            self._trace(anchor, listed)
        if check_migration:
            points = [anchor] + [c for c in checkpoints if anchor < c < end]
            result.migration = self._migration(points, end, result, max_divergences)
        return result

    # -- starting states ---------------------------------------------------------------------

    def _anchor(self, lsn: int, first: int) -> int:
        """The newest checkpoint that loads at or before ``lsn``; 0 for the log's start."""
        found = self.reader.newest_checkpoint(at_or_below=lsn, allow_pickle=self.allow_pickle)
        if found is not None:
            return found[0]
        if first != 1:
            raise UpgradeError(
                f"no state to start from before LSN {lsn + 1}: the log of {self.instance!r} "
                f"starts at {first} and no checkpoint at or before it loads"
            )
        return 0

    def _replica(self, at: int, app: LoadedApp, *, migrate: bool) -> Replica:
        """A replica of ``app`` holding the state after checkpoint ``at`` (0: the start),
        migrated to ``app``'s version when ``migrate``."""
        replica = Replica(app.cls, name=self.instance)
        if at == 0:
            return replica
        snap = self.reader.load_checkpoint(at, allow_pickle=self.allow_pickle)
        payload = read_checkpoint(snap, where=f"checkpoint at LSN {at} of {self.log_dir}")
        if migrate and payload["exec"].get("app") is not None:
            payload = copy.copy(payload)
            payload["exec"] = dict(payload["exec"])
            payload["exec"]["app"] = migrate_state(
                app.cls, payload["exec"]["app"], self.old_version
            )
        replica.restore(payload)
        return replica

    # -- pass 1: check -----------------------------------------------------------------------

    def _check(
        self,
        result: InstanceResult,
        anchor: int,
        max_divergences: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        replica = self._replica(anchor, self.new, migrate=True)
        for record in self.reader.records(anchor + 1, result.last_lsn):
            if record.value["in"].get("k") == "upgrade":
                continue  # the recorded history switched code here; NEW is the code under test
            method = step_method(record.value["in"], replica.executor.callbacks)
            ran = run_step(replica, record.value, record.lsn, record.wall_ns)
            if progress is not None:
                progress(record.lsn)
            if record.lsn < result.first_lsn:
                continue  # brought forward from the checkpoint, not asked about
            result.steps += 1
            diffs = _diffs(record.value, ran)
            if not diffs:
                result.equal += 1
                continue
            marked, allowed = mark_allowed(diffs, self.rules, method)
            divergence = StepDivergence(record.lsn, record.value["in"], marked, allowed, method)
            if allowed:
                result.allowed += 1
                result.allowed_lsns.append(record.lsn)
                if len(result.allowed_divergences) < max_divergences:
                    result.allowed_divergences.append(divergence)
            else:
                result.diverged += 1
                result.diverged_lsns.append(record.lsn)
                if len(result.divergences) < max_divergences:
                    result.divergences.append(divergence)

    # -- pass 2: trace -----------------------------------------------------------------------

    def _trace(self, anchor: int, listed: list[StepDivergence]) -> None:
        wanted: dict[int, list[StepDivergence]] = {}
        for d in listed:
            wanted.setdefault(d.lsn, []).append(d)
        new = self._replica(anchor, self.new, migrate=True)
        old = self._replica(anchor, self.old, migrate=False) if self.old else None
        for record in self.reader.records(anchor + 1, max(wanted)):
            trace = record.lsn in wanted
            ran_new = run_step(new, record.value, record.lsn, record.wall_ns, trace=trace)
            ran_old = (
                run_step(old, record.value, record.lsn, record.wall_ns, trace=trace)
                if old is not None
                else None
            )
            for d in wanted.get(record.lsn, ()):
                _place(d, ran_new, ran_old)

    # -- pass 3: migration -------------------------------------------------------------------

    def _migration(
        self, points: list[int], end: int, result: InstanceResult, max_divergences: int
    ) -> list[StepDivergence]:
        assert self.old is not None
        already = set(result.diverged_lsns) | set(result.allowed_lsns)
        found: list[StepDivergence] = []
        for i, at in enumerate(points):
            upto = points[i + 1] if i + 1 < len(points) else end
            new = self._replica(at, self.new, migrate=True)
            old = self._replica(at, self.old, migrate=False)
            last_input: dict[str, Any] = {}
            for record in self.reader.records(at + 1, upto):
                if record.value["in"].get("k") == "upgrade":
                    continue  # as in _check: both sides keep their own code here
                method = step_method(record.value["in"], new.executor.callbacks)
                ran_new = run_step(new, record.value, record.lsn, record.wall_ns)
                ran_old = run_step(old, record.value, record.lsn, record.wall_ns)
                last_input = record.value["in"]
                if record.lsn in already or record.lsn < result.first_lsn:
                    continue
                if ran_old.record is None:
                    continue  # the recorded code itself fails here: nothing to commute with
                diffs = _diffs(ran_old.record, ran_new)
                if diffs and len(found) < max_divergences:
                    marked, allowed = mark_allowed(diffs, self.rules, method)
                    found.append(
                        StepDivergence(
                            record.lsn,
                            record.value["in"],
                            marked,
                            allowed,
                            method,
                            check="migration",
                            note=f"effects after migrating the checkpoint at LSN {at}",
                        )
                    )
            expected = _migrated_state(self.new, old, self.old_version)
            actual = _state(new)
            if expected is None and actual is None:
                continue
            diffs = state_diffs(expected, actual)
            if diffs:
                marked, allowed = mark_allowed(diffs, self.rules, None)
                where = f"the checkpoint at LSN {at}" if at else "the log's start"
                found.append(
                    StepDivergence(
                        upto,
                        last_input,
                        marked,
                        allowed,
                        check="migration",
                        note=(
                            f"state after step {upto}: recorded code then migrate (expected) vs "
                            f"migrate at {where} then new code (actual)"
                        ),
                    )
                )
        return found


def _diffs(recorded: dict[str, Any], ran: Ran) -> list[FieldDiff]:
    if ran.record is None:
        return [FieldDiff(("error",), "error", "added", None, ran.error)]
    return effect_diffs(recorded, ran.record)


def _state(replica: Replica) -> Any:
    app = replica.executor.app
    return None if app is None else snapshot_value(app_state(app))


def _migrated_state(new: LoadedApp, old: Replica, old_version: int | None) -> Any:
    state = _state(old)
    return None if state is None else snapshot_value(migrate_state(new.cls, state, old_version))


def _place(d: StepDivergence, ran_new: Ran, ran_old: Ran | None) -> None:
    """Set where the versions part for one divergence, from the two traced runs."""
    new_lines = ran_new.lines or []
    first = next((x for x in d.diffs if not x.allowed), d.diffs[0])
    key = str(first.path[0])
    index = first.path[1] if len(first.path) > 1 and isinstance(first.path[1], int) else 0
    produced = effect_line(new_lines, key, index)
    old_lines = ran_old.lines if ran_old is not None else None
    if old_lines:
        part = parting_lines(old_lines, new_lines, produced)
        if part is not None:
            d.old_line, d.new_line = SourceLine.of(part[0]), SourceLine.of(part[1])
            return
        d.old_line = SourceLine.of(effect_line(old_lines, key, index))
    d.new_line = SourceLine.of(produced)


def _relative(file: str) -> str:
    try:
        return str(Path(file).resolve().relative_to(Path.cwd()))
    except ValueError:
        return file
