"""A simulated log: what survives a crash, decided by the seed.

It keeps what a real log keeps (durable step records, checkpoints, the ``released`` mark) and
loses what a real one can lose: an append that had not finished when the process died is gone,
or only a prefix of its records survived (a large append is several frames, and a torn last
frame is cut on open), or all of it without its checkpoint. The ``released`` mark is written
without fsync, so after a crash it may be older than the last one written.

Several processes may write one log for a while: a primary paused past its lease (a zombie)
and the standby that took over. A takeover first records that its epoch claims the log, then
fixes the takeover point (the first LSN after the durable records it saw); from then on an
append of a lower epoch at or after that point is void: the log ignores it, as the real log's
fence does. An append of the zombie that lands between the claim and the takeover point is an
ordinary durable step (the new primary replays it).
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
    pending: dict[int, Append] = field(default_factory=dict)  # writer epoch -> its append
    torn: int = 0  # appends cut short by a crash
    claims: list[list[int | None]] = field(default_factory=list)  # [epoch, takeover LSN]
    voided: int = 0  # appends of a fenced epoch that the log ignored

    # -- fencing -------------------------------------------------------------------------------

    def claim(self, epoch: int) -> None:
        """A takeover at ``epoch`` claims the log (its takeover point is not fixed yet)."""
        self.claims.append([epoch, None])

    def fix_takeover(self, epoch: int) -> int:
        """The takeover at ``epoch`` saw every durable record: lower epochs may write no more
        at or after the LSN returned."""
        point = self.last_lsn + 1
        for claim in self.claims:
            if claim[0] == epoch:
                claim[1] = point
        return point

    def claimed_above(self, epoch: int) -> int | None:
        """The highest epoch above ``epoch`` that claimed the log, if any did."""
        higher = [e for e, _ in self.claims if e is not None and e > epoch]
        return max(higher) if higher else None

    def void(self, epoch: int, first_lsn: int) -> bool:
        return any(
            e is not None and e > epoch and x is not None and first_lsn >= x for e, x in self.claims
        )

    # -- appends -------------------------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        return len(self.records)

    def begin(self, batch: Append, epoch: int = 0) -> int:
        """Start an append by the writer at ``epoch``; returns the bytes it writes (the driver
        reports them when done)."""
        stale = self.claimed_above(epoch) is not None
        if batch.first_lsn != self.last_lsn + 1 and not stale:
            raise AssertionError(f"append at {batch.first_lsn}, log ends at {self.last_lsn}")
        self.pending[epoch] = batch
        return sum(len(pack_value(r)) for r in batch.records)

    def _lands(self, epoch: int, batch: Append) -> bool:
        """Whether an append of ``epoch`` may land now (else it is void)."""
        if self.void(epoch, batch.first_lsn) or batch.first_lsn != self.last_lsn + 1:
            self.voided += 1
            return False
        return True

    def finish(self, epoch: int = 0) -> None:
        """The pending append of ``epoch`` completed (durable, or void if fenced)."""
        batch = self.pending.pop(epoch)
        if not self._lands(epoch, batch):
            return
        self.records.extend(batch.records)
        self._keep_checkpoint(batch)

    def write_checkpoint(self, lsn: int, codec: int, packed: bytes) -> None:
        """A checkpoint file written from outside the appends (a standby's)."""
        self.checkpoints[lsn] = seal_checkpoint(lsn, codec, packed)

    def write_released(self, lsn: int, rng: random.Random) -> None:
        self.released_written = lsn
        if rng.random() < 0.7:  # the page cache reached the disk before anything went wrong
            self.released = lsn

    def crash(self, rng: random.Random, epoch: int = 0) -> str:
        """The process at ``epoch`` died: decide what of its unfinished append survived."""
        batch = self.pending.pop(epoch, None)
        if rng.random() < 0.5:
            self.released = self.released_written
        if batch is None:
            return "idle"
        if not self._lands(epoch, batch):
            return "append void (fenced)"
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
