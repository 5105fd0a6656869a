"""An instance's deterministic state, and the one function that applies a recorded step to it.

A replica is what a log determines: the executor (app state, random generator, stream numbers,
timers, suspended handlers) and the streams (what was executed from each peer, what was sent and
not yet acknowledged, outside callers' results). Recovery, the replayer and a standby that
follows a log all move a replica forward the same way, with :meth:`Replica.apply`; the live
coordinator uses :meth:`Replica.execute`, which records instead of comparing.
"""

from __future__ import annotations

from typing import Any

from ._api import Immortal
from ._errors import NondeterminismError
from ._executor import Executor, Sources, compare_effects
from ._schema import CheckpointPayload, StepRecord, checkpoint_payload
from ._streams import DEFAULT_RESULT_CACHE, Streams


class Replica:
    """Executor plus streams of one instance, moved forward one step at a time.

    ``keep_streams=False`` leaves the streams as they were restored: :meth:`apply` re-executes
    and checks each step without the exactly-once bookkeeping, which only a checkpoint reads
    (what was received from each peer, outside callers' results and their fingerprints). A
    one-pass replay that takes no checkpoint (the logpoint pass) runs about twice as fast so
    on a log of outside calls; :meth:`checkpoint` then refuses."""

    __slots__ = ("executor", "keep_streams", "streams")

    def __init__(
        self,
        app_cls: type[Immortal],
        *,
        name: str,
        sources: Sources | None = None,
        result_cache: int = DEFAULT_RESULT_CACHE,
        keep_streams: bool = True,
    ) -> None:
        self.executor = Executor(app_cls, name=name, sources=sources)
        self.streams = Streams(result_cache=result_cache)
        self.keep_streams = keep_streams

    def execute(self, inp: dict[str, Any], lsn: int) -> StepRecord:
        """Execute a new input live; the returned record is what the log must store."""
        record: StepRecord = self.executor.execute(inp, lsn=lsn)  # type: ignore[assignment]
        self.streams.apply(record)  # type: ignore[arg-type]
        return record

    def apply(self, record: StepRecord, lsn: int) -> StepRecord:
        """Re-execute a recorded step; returns what the code produced (NondeterminismError if
        that differs from the record)."""
        produced: StepRecord = self.executor.execute(  # type: ignore[assignment]
            record["in"],  # type: ignore[arg-type]
            lsn=lsn,
            recorded=record,  # type: ignore[arg-type]
        )
        if self.keep_streams:
            self.streams.apply(record)  # type: ignore[arg-type]
        return produced

    def accept(self, record: StepRecord, lsn: int) -> NondeterminismError | None:
        """Re-execute a recorded step and take what the code does, even where that differs
        from the record (returned; None when it does not): the state is the re-execution's,
        while the streams move on as the log says, since its outputs are what the world saw.
        The escape hatch for a log whose recorded code does not reproduce it."""
        produced = self.executor.execute(
            record["in"],  # type: ignore[arg-type]
            lsn=lsn,
            recorded=record,  # type: ignore[arg-type]
            compare=False,
        )
        self.streams.apply(record)  # type: ignore[arg-type]
        try:
            compare_effects(record, produced, lsn=lsn, instance=self.executor.name)  # type: ignore[arg-type]
        except NondeterminismError as exc:
            return exc
        return None

    @property
    def quiescent(self) -> bool:
        """No handler suspended mid-await: only then can a checkpoint be taken."""
        return self.executor.quiescent

    def checkpoint(self) -> CheckpointPayload:
        if not self.keep_streams:
            raise RuntimeError("a replica that does not keep its streams has no checkpoint")
        return checkpoint_payload(self.executor.snapshot(), self.streams.snapshot())

    def restore(self, payload: CheckpointPayload) -> None:
        self.executor.restore(payload["exec"])
        self.streams.restore(payload["streams"])
