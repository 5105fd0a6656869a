"""Logpoints in the debugger: prints added to the past, computed in the background.

The debugger asks for a logpoint (``counter.py:12 self.count * 2``) and shows, for every step in
which that line ran, what a print there would have printed: as a timeline column and in the
step's effects pane. The values come from one re-execution of the whole history
(``replayer.LogpointRun``), which takes seconds on a long log, so it runs on a worker thread
with its progress in the status line; adding or clearing a logpoint cancels the pass under way
and starts another for the new set. No UI here: the app calls :meth:`LogpointSet.run` on a
thread and reads the results (and the progress) while it runs.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from replayer import HitTable, Logpoint, LogpointRun


@dataclass(slots=True)
class Pass:
    """One re-execution for the logpoints as they were when it started."""

    logpoints: list[Logpoint]
    table: HitTable = field(default_factory=HitTable)  # filled as the pass goes
    notes: list[str] = field(default_factory=list)
    finished: bool = False
    error: str | None = None


class LogpointSet:
    """The debugger's logpoints and the newest pass over them."""

    def __init__(
        self, source: str | os.PathLike[str], *, app: str | None, home: str | os.PathLike[str]
    ) -> None:
        self._source, self._app, self._home = source, app, home
        self.logpoints: list[Logpoint] = []
        self.current: Pass | None = None
        self._lock = threading.Lock()
        self._running: LogpointRun | None = None

    def add(self, spec: str) -> Logpoint:
        """Parse ``spec``, check it against every code version of the log, and add it
        (LogpointError with the reason if it is not one, or its line is in no version).
        Compiles the versions: call it on a worker thread."""
        logpoint = Logpoint.parse(spec)
        LogpointRun(self._source, [logpoint], app=self._app, home=self._home).close()
        self.logpoints.append(logpoint)
        return logpoint

    def clear(self) -> None:
        self.logpoints = []
        self.cancel()
        with self._lock:
            self.current = None

    def cancel(self) -> None:
        """Stop the pass under way at its next progress point (from any thread)."""
        with self._lock:
            running = self._running
        if running is not None:
            running.cancel()

    def titles(self) -> list[str]:
        return [str(logpoint) for logpoint in self.logpoints]

    def cell(self, lsn: int, index: int) -> str:
        """What logpoint ``index``'s column shows at step ``lsn``: what its print would have
        printed there ("" where its line did not run, or not yet known)."""
        found = self.current
        if found is None or index >= len(found.logpoints):
            return ""
        return found.table.cell(lsn, index)

    def lines_at(self, lsn: int) -> list[str]:
        """The step's logpoint output, one line per time a line ran, as the pane shows it."""
        found = self.current
        if found is None:
            return []
        return [f"{found.logpoints[hit.logpoint]}  ->  {hit.text}" for hit in found.table.at(lsn)]

    def progress(self) -> tuple[int, int] | None:
        """Steps done and in all of the pass under way; None when none runs."""
        found = self.current
        if found is None or found.finished:
            return None
        return found.table.done, found.table.total

    def run(self) -> Pass:
        """Re-execute the history for the logpoints as they are now; the result becomes
        ``current`` (also while it runs, so columns fill as it goes and ``progress`` tells how
        far it is). Blocking: call it on a worker thread. A LogpointError (no line in any version, an expression with an effect)
        ends the pass with ``error`` set."""
        from replayer import LogpointError

        this = Pass(list(self.logpoints))
        with self._lock:
            self.current = this
        if not this.logpoints:
            this.finished = True
            return this
        try:
            run = LogpointRun(self._source, this.logpoints, app=self._app, home=self._home)
        except LogpointError as exc:
            this.error, this.finished = str(exc), True
            return this
        with self._lock:
            self._running = run
        try:
            this.notes = list(run.notes)
            this.table.fill(run, every=2048)
            this.finished = not run.cancelled
        except LogpointError as exc:
            this.error, this.finished = str(exc), True
        finally:
            with self._lock:
                self._running = None
            run.close()
        return this
