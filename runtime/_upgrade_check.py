"""The check a restart with new code runs before it upgrades: recent history through the new code.

Before an instance takes new code, the steps since its last checkpoint are re-executed with that
code, from the checkpoint's state migrated to it, each with its recorded input and recorded
non-determinism, and what the new code does is compared with what the log says happened. The
answer is one summary line, and a policy (``--upgrade-check``) decides whether it refuses the
start: ``strict`` refuses any difference, ``warn`` never refuses, and the default refuses only
when the new code *raises* where the recorded code did not (a crash in waiting), since a
changed result is often the point of the change. ``off`` skips the check.

The check also compares the state's *shape* with the new code's: the state as the new code
would get it (migrated, if the new class has a migration for the running version) against what
the new ``__init__`` builds. An attribute the new ``__init__`` sets that the state lacks, or one
that holds another kind of value (a number where a dict is made), is a state shape changed
without a migration: the new code would fail on its first call to read it, so the default and
strict policies refuse it.

This is the small, in-process sibling of ``immortals upgrade test``, which checks any range of
any number of logs and explains every difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ._api import Immortal
from ._errors import ImmortalsError
from ._executor import Executor, compare_effects
from ._replica import Replica
from ._schema import CheckpointPayload, StepRecord
from ._versions import migrate_state

POLICIES: Final = ("strict", "warn", "off", "default")
MAX_CHECKED: Final = 100_000  # steps re-executed at most (the oldest after the checkpoint)


@dataclass(slots=True)
class CheckSummary:
    first: int = 0
    last: int = 0
    equal: int = 0
    differ: int = 0
    newly_raising: int = 0
    examples: list[str] = field(default_factory=list)  # the first few differences, one line each
    shape: list[str] = field(default_factory=list)  # how the state does not fit the new code

    @property
    def checked(self) -> int:
        return self.equal + self.differ

    def line(self) -> str:
        text = self._steps_line()
        if self.shape:
            text += (
                f"; the state does not fit the new code: {'; '.join(self.shape[:3])} (declare a "
                "new `version` and a `migrate` classmethod that reshapes the state)"
            )
        return text

    def _steps_line(self) -> str:
        if not self.checked:
            return "no recorded steps to check the new code against"
        span = f"steps {self.first}..{self.last}"
        text = f"the new code re-executes {span} of history: {self.equal} the same, {self.differ} differ"
        if self.newly_raising:
            text += f" ({self.newly_raising} now raise where the recorded code did not)"
        if self.examples:
            text += f"; first: {self.examples[0]}"
        return text

    def refuses(self, policy: str) -> bool:
        if self.shape and policy in ("strict", "default"):
            return True
        if policy == "strict":
            return self.differ > 0
        if policy in ("warn", "off"):
            return False
        return self.newly_raising > 0


def check_new_code(
    new_cls: type[Immortal],
    *,
    name: str,
    start: tuple[CheckpointPayload, int] | None,
    from_version: int | None,
    records: Iterable[tuple[int, StepRecord]],
) -> CheckSummary:
    """Re-execute ``records`` with ``new_cls`` from ``start`` (a checkpoint's payload and LSN,
    or None for the log's beginning) and count what differs from the log."""
    replica = Replica(new_cls, name=name)
    executor = replica.executor
    if start is not None:
        payload, _lsn = start
        replica.restore(payload)
        executor.adopt(new_cls, from_version)
    summary = CheckSummary()
    for count, (lsn, record) in enumerate(records):
        if count >= MAX_CHECKED:
            break
        if record["in"]["k"] == "upgrade":
            break  # the recorded history switches code here: the check ends with it
        summary.first = summary.first or lsn
        summary.last = lsn
        produced: dict[str, Any] | None = None
        try:
            produced = executor.execute(
                record["in"],  # type: ignore[arg-type]
                lsn=lsn,
                recorded=record,  # type: ignore[arg-type]
                compare=False,
            )
            compare_effects(record, produced, lsn=lsn, instance=name)  # type: ignore[arg-type]
        except ImmortalsError as exc:
            summary.differ += 1
            if _raises_newly(record, produced):
                summary.newly_raising += 1
            if len(summary.examples) < 3:
                summary.examples.append(f"LSN {lsn}: {_short(exc)}")
        else:
            summary.equal += 1
        replica.streams.apply(record)  # type: ignore[arg-type]  # the log's numbering goes on
    return summary


def shape_problems(
    new_cls: type[Immortal], state: dict[str, Any], from_version: int | None, *, name: str
) -> list[str]:
    """How ``state`` (of the running version ``from_version``), once migrated for ``new_cls``,
    falls short of the shape ``new_cls.__init__`` builds: attributes it lacks, and attributes
    holding another kind of value. Attributes the new code no longer sets are not a problem.
    MigrationError if the migration raises."""
    migrated = migrate_state(new_cls, state, from_version)
    try:
        expected = Executor(new_cls, name=name).initial_state()
    except ImmortalsError:
        return []  # an __init__ that cannot run here says nothing about the state's shape
    problems = []
    for attribute, value in expected.items():
        if attribute not in migrated:
            problems.append(f"it has no {attribute!r}, which the new __init__ sets")
            continue
        want, have = _kind(value), _kind(migrated[attribute])
        if want is not None and have is not None and want != have:
            problems.append(f"{attribute!r} holds a {have}, the new __init__ makes a {want}")
    return problems


_KINDS: Final[dict[type, str]] = {
    bool: "number",
    int: "number",
    float: "number",
    str: "str",
    bytes: "bytes",
    list: "list",
    tuple: "list",  # a checkpoint gives tuples back as lists
    dict: "dict",
    set: "set",
    frozenset: "set",
}


def _kind(value: Any) -> str | None:
    """The kind of value an attribute holds, for shape comparison (None: it fits any)."""
    if value is None:
        return None
    return _KINDS.get(type(value), type(value).__qualname__)


def _failures(record: Any) -> int:
    if not isinstance(record, dict):
        return 0
    failed = sum(1 for entry in record.get("rep", ()) if entry[1] is False)
    failed += sum(1 for m in record.get("out", ()) if m[2] == "r" and m[4] is False)
    return failed + len(record.get("fail", ()))


def _raises_newly(recorded: StepRecord, produced: Any) -> bool:
    return produced is not None and _failures(produced) > _failures(recorded)


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    cut = text.find(". The handler depends")
    text = text[:cut] if cut > 0 else text
    return text if len(text) <= 160 else text[:157] + "..."
