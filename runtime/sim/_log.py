"""A simulated log: what survives a crash, decided by the seed.

It keeps what a real log keeps (durable step records, checkpoints, the ``released`` mark) and
loses what a real one can lose: an append that had not finished when the process died is gone,
or only a prefix of its records survived (a large append is several frames, and a torn last
frame is cut on open), or all of it without its checkpoint. The ``released`` mark is written
without fsync, so after a crash it may be older than the last one written.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from logformat import decode_checkpoint, pack_value, seal_checkpoint

from .._actions import Append
from .._schema import StepRecord


@dataclass
class SimLog:
    records: list[StepRecord] = field(default_factory=list)  # durable; records[i] is LSN i + 1
    checkpoints: dict[int, bytes] = field(default_factory=dict)  # LSN -> checkpoint file bytes
    released: int = 0  # what a restart reads back
    released_written: int = 0  # the newest value written (may not survive a crash)
    pending: Append | None = None
    torn: int = 0  # appends cut short by a crash

    @property
    def last_lsn(self) -> int:
        return len(self.records)

    def begin(self, batch: Append) -> int:
        """Start an append; returns the bytes it writes (the driver reports them when done)."""
        if batch.first_lsn != self.last_lsn + 1:
            raise AssertionError(f"append at {batch.first_lsn}, log ends at {self.last_lsn}")
        self.pending = batch
        return sum(len(pack_value(r)) for r in batch.records)

    def finish(self) -> None:
        """The pending append is durable."""
        batch = self.pending
        assert batch is not None
        self.pending = None
        self.records.extend(batch.records)
        self._keep_checkpoint(batch)

    def write_released(self, lsn: int, rng: random.Random) -> None:
        self.released_written = lsn
        if rng.random() < 0.7:  # the page cache reached the disk before anything went wrong
            self.released = lsn

    def crash(self, rng: random.Random) -> str:
        """The process died: decide what of the unfinished append survived."""
        batch, self.pending = self.pending, None
        if rng.random() < 0.5:
            self.released = self.released_written
        if batch is None:
            return "idle"
        roll = rng.random()
        if roll < 0.4:
            return "append lost"
        if roll < 0.7:
            kept = rng.randrange(0, len(batch.records) + 1)
            self.records.extend(batch.records[:kept])
            self.torn += 1
            return f"append torn after {kept} of {len(batch.records)} records"
        self.records.extend(batch.records)
        if batch.checkpoint is not None and roll < 0.85:
            return "append durable, its checkpoint lost"
        self._keep_checkpoint(batch)
        return "append durable, not yet reported"

    def _keep_checkpoint(self, batch: Append) -> None:
        if batch.checkpoint is not None:
            codec, packed = batch.checkpoint
            self.checkpoints[batch.last_lsn] = seal_checkpoint(batch.last_lsn, codec, packed)

    def newest_checkpoint(self) -> tuple[int, Any] | None:
        usable = [lsn for lsn in self.checkpoints if lsn <= self.last_lsn]
        if not usable:
            return None
        lsn = max(usable)
        return lsn, decode_checkpoint(self.checkpoints[lsn], where=f"checkpoint {lsn}")
