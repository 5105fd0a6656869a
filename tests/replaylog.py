"""Record an instance's history in-process, the way a live instance logs it, for replay tests.

A live Node executes each input with the executor (live mode: real non-determinism drawn from
``sources``) and appends the step record it returns; checkpoints hold the executor's snapshot
under ``"exec"``. This does the same without processes or sockets, and also returns the live
state after every step, which is what replay must reproduce.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

from logformat import LogMeta, LogWriter
from replayer._trace import snapshot_value
from runtime._apps import load_app
from runtime._executor import Executor, Sources, app_state
from runtime._schema import checkpoint_payload
from runtime._streams import Streams


def fixed_sources() -> Sources:
    """Deterministic stand-ins for the clock, uuids and seeds, so recorded logs are stable."""
    ticks = itertools.count()
    ids = itertools.count(1)
    return Sources(
        clock=lambda: 1_700_000_000.0 + next(ticks) * 0.25,
        new_uuid=lambda: uuid.UUID(int=next(ids)),
        new_seed=lambda: 42,
    )


class Recorder:
    """Executes inputs live and logs every step; ``states[lsn]`` is the state after ``lsn``."""

    def __init__(
        self, log_dir: Path, app: str, *, name: str = "server", wall_start_ns: int = 0
    ) -> None:
        self.wall_start_ns = wall_start_ns
        loaded = load_app(app)
        self.executor = Executor(loaded.cls, name=name, sources=fixed_sources())
        self.writer = LogWriter.open(
            log_dir, create=LogMeta(name, app, loaded.code_version), sync=False
        )
        self.states: list[Any] = [None]
        self.records: list[dict[str, Any]] = [{}]
        self.step({"k": "start"})

    @property
    def lsn(self) -> int:
        return len(self.states) - 1

    def step(self, inp: dict[str, Any]) -> dict[str, Any]:
        lsn = self.lsn + 1
        record = self.executor.execute(inp, lsn=lsn)
        self.writer.append([record], wall_ns=self.wall_start_ns + 1_000_000 * lsn)
        app = self.executor.app
        self.states.append(snapshot_value(app_state(app)) if app is not None else None)
        self.records.append(record)
        return record

    def call(self, method: str, *args: Any) -> dict[str, Any]:
        return self.step({"k": "call", "id": f"key-{self.lsn + 1}", "m": method, "a": list(args)})

    def checkpoint(self) -> bool:
        """Write a checkpoint after the current step if the instance is quiescent."""
        if not self.executor.quiescent:
            return False
        snap = checkpoint_payload(self.executor.snapshot(), Streams().snapshot())
        self.writer.write_checkpoint(self.lsn, snap)
        return True

    def close(self) -> None:
        self.writer.close()
