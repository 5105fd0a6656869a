"""Running one recorded input through some code, without stopping at a difference.

The replay executor checks each non-deterministic value against the record and raises at the
first mismatch. Here the code at hand runs in live mode instead, with its clock, uuids and seeds
fed from the step's record, kind by kind and in recorded order (code that asks for one reading
more than was recorded gets a stand-in derived from the step, so runs stay deterministic), and
what it produced is compared afterwards, all of it (``_compare``). Prints stay quiet, as in
replay. The streams follow the recorded step, like ``Replica.apply``: the recorded history is
what the peers saw.

Rejected: passing ``recorded=`` and catching ``NondeterminismError`` (the error carries only
the first difference, and the step's produced record is lost with it).
"""

from __future__ import annotations

import linecache
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replayer._trace import TraceLine, tracing
from runtime import _sandbox as sandbox
from runtime._executor import Sources
from runtime._replica import Replica

_HERE = str(Path(__file__).resolve().parent)


class _Feed:
    """The recorded non-deterministic values of one step, handed out per kind."""

    def __init__(self, nd: list[Any], lsn: int, wall_ns: int) -> None:
        self.queues: dict[str, deque[Any]] = {}
        for kind, value in nd:
            self.queues.setdefault(kind, deque()).append(value)
        self.lsn = lsn
        self.now = wall_ns / 1e9
        self.extra = 0

    def take(self, kind: str) -> Any:
        queue = self.queues.get(kind)
        if queue:
            value = queue.popleft()
            if kind == "now":
                self.now = float(value)
            return value
        self.extra += 1  # asked for more than was recorded: a deterministic stand-in
        if kind == "now":
            return self.now
        if kind == "uuid":
            return uuid.UUID(int=(self.lsn << 32) | self.extra).bytes
        return self.lsn * 1_000_003 + self.extra

    def sources(self) -> Sources:
        return Sources(
            clock=lambda: float(self.take("now")),
            new_uuid=lambda: uuid.UUID(bytes=bytes(self.take("uuid"))),
            new_seed=lambda: int(self.take("seed")),
        )


@dataclass(frozen=True, slots=True)
class Ran:
    """What one input produced (``record``; None if the code raised out of the step)."""

    record: dict[str, Any] | None
    error: str | None
    lines: list[CountedLine] | None = None


@dataclass(frozen=True, slots=True)
class CountedLine:
    """A traced line, with how many of each effect the step had produced when it was reached."""

    line: TraceLine
    counts: dict[str, int]

    @property
    def text(self) -> str:
        return linecache.getline(self.line.file, self.line.line).strip()


def run_step(
    replica: Replica, recorded: dict[str, Any], lsn: int, wall_ns: int, *, trace: bool = False
) -> Ran:
    """Execute ``recorded["in"]`` with the code ``replica`` holds; never raises for the code's
    sake (an exception out of the executor becomes ``Ran.error``)."""
    executor = replica.executor
    executor.sources = _Feed(list(recorded.get("nd", ())), lsn, wall_ns).sources()
    lines: _CountingLines | None = _CountingLines(replica) if trace else None
    token = sandbox.enter(None)  # guarded here first, so the executor's print tag stays quiet
    try:
        if lines is not None:
            with tracing(lines):
                produced = executor.execute(recorded["in"], lsn=lsn)
        else:
            produced = executor.execute(recorded["in"], lsn=lsn)
        error = None
    except Exception as exc:
        produced, error = None, f"{type(exc).__name__}: {exc}"
    finally:
        sandbox.leave(token)
    replica.streams.apply(recorded)
    return Ran(produced, error, lines.counted if lines is not None else None)


_COUNTED = {"nd": "nd", "out": "out", "emit": "emits", "rep": "replies", "tim": "timers"}


class _CountingLines(list[TraceLine]):
    """The list ``tracing`` appends to: also notes the effect counts at each line, so the line
    that produced a given effect can be found afterwards. Lines of this package (the feed's
    sources) are left out."""

    def __init__(self, replica: Replica) -> None:
        super().__init__()
        self.replica = replica
        self.counted: list[CountedLine] = []

    def append(self, line: TraceLine) -> None:
        if line.file.startswith(_HERE):
            return
        super().append(line)
        self.counted.append(CountedLine(line, self._counts()))

    def _counts(self) -> dict[str, int]:
        app = self.replica.executor.app
        ctx = app.__dict__.get("_imm_ctx") if app is not None else None
        if ctx is None:
            return {}
        counts = {key: len(getattr(ctx, attr)) for key, attr in _COUNTED.items()}
        for key, items in (ctx.rare or {}).items():
            counts[key] = len(items)
        return counts


def effect_line(lines: list[CountedLine], key: str, index: int) -> CountedLine | None:
    """The last line run before the step had produced effect ``key[index]`` (the line that
    produced it); the step's last line if it never did (a missing effect, or a result, which
    is made after the handler returns)."""
    for j, counted in enumerate(lines):
        if counted.counts.get(key, 0) > index:
            return lines[j - 1] if j > 0 else counted
    return lines[-1] if lines else None


def parting_lines(
    old: list[CountedLine], new: list[CountedLine], upto: CountedLine | None
) -> tuple[CountedLine, CountedLine] | None:
    """The first lines, one per version, where the two runs of a step execute different source
    text (compared up to ``upto`` in the new run); None if they ran the same text throughout."""
    old_lines = [c for c in old if c.line.event == "line"]
    new_lines = [c for c in new if c.line.event == "line"]
    for i, n in enumerate(new_lines):
        o = old_lines[i] if i < len(old_lines) else None
        if o is None or o.text != n.text:
            return (o or (old_lines[-1] if old_lines else n)), n
        if n is upto:
            break
    return None
