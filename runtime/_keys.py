"""Outside callers' idempotency keys, remembered for a retention time: an lmdb index into the log.

The coordinator keeps the newest results in memory (``result_cache`` of them, also in
checkpoints). A retry can come later than that many newer calls, so the node also keeps this
index: key -> (LSN of the call, LSN of its result, wall time), under ``LOG/keys/``. Like the
log's own index it is a cache: the log holds every call and result, so a missing or stale index
is caught up from the log (only the retention window of it) when the instance starts. Entries
older than the retention time are ignored and purged: a key is then forgotten, as payment APIs
forget theirs after a day (Stripe keeps keys 24 hours).

Purging walks a second, time-ordered set of entries (``_BY_TIME`` + wall time + key), oldest
first, and stops at the first that is still within retention: its cost is the number of keys
that expired, not the number remembered, and each append purges a bounded batch. (It used to
scan every key at each start, which made a restart, and a live upgrade's pause, grow with the
calls of the last day: 135 ms at 46k keys.)

It is written on the log thread after each durable append that holds outside calls, without
fsync (a crash loses at most entries the next start catches up from the log).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb

from logformat import LogReader, acquire_env, pack_value, release_env, unpack_value

from ._schema import MAIN_KEY, StepRecord

DEFAULT_RETENTION = 24 * 3600.0
_COVERED = b"\x00covered"  # the last LSN indexed; no packed key starts with a zero byte
_TIMED = b"\x00by-time"  # present once the index keeps the time-ordered entries below
_BY_TIME = b"\x00@"  # + wall time in ns (8 bytes, big-endian) + packed key -> b""
PURGE_BATCH = 256  # expired keys dropped at most per purge (a start, an append)


class KeyIndex:
    """Key -> where its call and result are in the log, for ``retention`` seconds."""

    def __init__(self, log_dir: Path, *, retention: float = DEFAULT_RETENTION) -> None:
        self.path = log_dir / "keys"
        self.retention = retention
        self._env = acquire_env(self.path, map_size=1 << 30, max_dbs=0, sync=False)
        with self._env.begin(write=True) as txn:
            if txn.get(_TIMED) is None:  # an index of the earlier layout: rebuilt from the log
                txn.drop(self._env.open_db(), delete=False)
                txn.put(_TIMED, b"1")

    def close(self) -> None:
        release_env(self.path)

    # -- writing -----------------------------------------------------------------------------------

    def add(self, first_lsn: int, records: Iterable[StepRecord], wall: float | None = None) -> None:
        """Index the outside calls and results of durable steps ``first_lsn, first_lsn + 1...``."""
        now = time.time() if wall is None else wall
        lsn = first_lsn - 1
        with self._env.begin(write=True) as txn:
            for lsn, record in enumerate(records, start=first_lsn):
                _index_step(txn, lsn, record, now)
            if lsn >= first_lsn:
                txn.put(_COVERED, lsn.to_bytes(8, "little"))
                self._purge(txn, PURGE_BATCH + 2 * (lsn - first_lsn + 1))  # keeps pace

    def mark(self, lsn: int) -> None:
        """Say the index covers the log up to ``lsn``, whose steps since the last ``add`` hold
        no outside key: without it, an instance that is only ever called by its peers would
        have its whole log read again at each start (300k steps: 6 s)."""
        with self._env.begin(write=True) as txn:
            raw = txn.get(_COVERED)
            if raw is None or int.from_bytes(raw, "little") < lsn:
                txn.put(_COVERED, lsn.to_bytes(8, "little"))

    def catch_up(self, reader: LogReader) -> int:
        """Index what the log holds beyond the covered mark (within the retention window);
        returns how many steps were read."""
        with self._env.begin() as txn:
            raw = txn.get(_COVERED)
        covered = int.from_bytes(raw, "little") if raw else 0
        if covered > reader.last_lsn:  # the index is ahead of the log: it is not to be trusted
            self._clear()
            covered = 0
        start = max(covered + 1, reader.first_lsn)
        if covered == 0:
            window = reader.seek_time(int((time.time() - self.retention) * 1e9))
            start = max(start, window or reader.last_lsn + 1)
        count = 0
        with self._env.begin(write=True) as txn:
            for record in reader.records(start) if start <= reader.last_lsn else ():
                _index_step(txn, record.lsn, record.value, record.wall_ns / 1e9)
                count += 1
            if reader.last_lsn:
                txn.put(_COVERED, reader.last_lsn.to_bytes(8, "little"))
            self._purge(txn, PURGE_BATCH)
        return count

    def purge(self, limit: int | None = None) -> int:
        """Drop entries older than the retention time (at most ``limit``); how many."""
        with self._env.begin(write=True) as txn:
            return self._purge(txn, limit)

    def _purge(self, txn: lmdb.Transaction, limit: int | None) -> int:
        oldest = time.time() - self.retention
        bound = _BY_TIME + _wall_ns(oldest).to_bytes(8, "big")
        cursor = txn.cursor()
        dropped = 0
        found = cursor.set_range(_BY_TIME)
        while found and dropped != limit:
            entry = bytes(cursor.key())
            if not entry.startswith(_BY_TIME) or entry >= bound:
                break
            packed = entry[len(_BY_TIME) + 8 :]
            raw = txn.get(packed)
            if raw is not None and unpack_value(bytes(raw))[2] < oldest:
                txn.delete(packed)  # a newer result moved it on: then only this entry goes
            found = cursor.delete()  # and moves to the next entry
            dropped += 1
        return dropped

    def _clear(self) -> None:
        with self._env.begin(write=True) as txn:
            txn.drop(self._env.open_db(), delete=False)
            txn.put(_TIMED, b"1")

    # -- reading -------------------------------------------------------------------------------------

    def find(self, key: Any) -> tuple[int, int] | None:
        """(call LSN, result LSN or 0 if it has none yet) of ``key``, if within retention."""
        with self._env.begin() as txn:
            raw = txn.get(pack_value(key))
        if raw is None:
            return None
        call_lsn, result_lsn, wall = unpack_value(raw)
        if wall < time.time() - self.retention:
            return None
        return int(call_lsn), int(result_lsn)


def _index_step(txn: lmdb.Transaction, lsn: int, record: StepRecord, wall: float) -> None:
    inp: dict[str, Any] = record["in"]  # type: ignore[assignment]
    stamp = _wall_ns(wall).to_bytes(8, "big")
    if inp.get("k") == "call" and "id" in inp and "from" not in inp:
        packed = pack_value(inp["id"])
        txn.put(packed, pack_value([lsn, 0, wall]))
        txn.put(_BY_TIME + stamp + packed, b"")
    for key, _ok, _value in record.get("rep", ()):
        if key == MAIN_KEY:
            continue
        packed = pack_value(key)
        raw = txn.get(packed)
        call_lsn = unpack_value(bytes(raw))[0] if raw is not None else lsn
        txn.put(packed, pack_value([call_lsn, lsn, wall]))
        txn.put(_BY_TIME + stamp + packed, b"")


def _wall_ns(wall: float) -> int:
    return max(0, int(wall * 1e9))
