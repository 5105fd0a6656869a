"""Snapshots of an instance's state taken while replaying, so that going back costs little.

Time travel means reaching any step quickly: the state after step n is the nearest snapshot at
or before n plus a short replay. Checkpoints are rare (every 64 MiB or minute by default), so
the replayer also keeps its own snapshots, every ``every`` steps it passes through. They are
held packed (the log's value codec), in memory up to ``max_bytes`` (least recently used go
first), and optionally spilled to disk beside the log's index, where a later session finds them.

A snapshot only means something for one log and one code version: different code replays the
same inputs to different states. The disk folder is named after both.

A log this process may not write (an archived, read-only copy) gets its folder in a temporary
directory of the process instead, removed at exit: the debugger's background indexer and its
interactive replayer still share their snapshots, and nothing is written beside the log.
"""

from __future__ import annotations

import atexit
import bisect
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import zstandard

SPILL_DIR = "replay-cache"
SNAPSHOT_LAYOUT = "checkpoint-payload-1"  # what a snapshot holds: a runtime checkpoint payload
_SUFFIX = ".snap"


class SnapshotCache:
    """Packed replica snapshots (checkpoint payloads) by LSN: bounded in memory, optionally mirrored on disk."""

    def __init__(
        self,
        *,
        every: int = 1000,
        max_bytes: int = 256 << 20,
        spill_to: Path | None = None,
    ) -> None:
        if every < 1:
            raise ValueError("snapshots must be taken at least every 1 step")
        self.every = every
        self.max_bytes = max_bytes
        self._memory: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lsns: list[int] = []  # sorted: every LSN held in memory or on disk
        self._on_disk: set[int] = set()
        self._spill = spill_to
        if spill_to is not None:
            try:
                spill_to.mkdir(parents=True, exist_ok=True)
            except OSError:
                self._spill = None  # a read-only log: snapshots stay in memory
        self.rescan()

    def rescan(self) -> None:
        """Pick up snapshots another replayer of the same log and code spilled meanwhile."""
        if self._spill is None:
            return
        try:
            names = [entry.name for entry in self._spill.iterdir()]
        except OSError:
            return
        for name in names:
            stem = name.removesuffix(_SUFFIX)
            if name.endswith(_SUFFIX) and stem.isdigit() and int(stem) not in self._on_disk:
                self._on_disk.add(int(stem))
                if int(stem) not in self._memory:
                    bisect.insort(self._lsns, int(stem))

    def __len__(self) -> int:
        return len(self._lsns)

    def wants(self, lsn: int) -> bool:
        """Whether a snapshot after step ``lsn`` should be taken: one in every ``every`` steps,
        the first the replayer is asked about from each multiple of ``every`` on.

        Not only at the multiples: a snapshot needs a quiescent replica, and an instance that
        awaits one call at a time is suspended after every other step, so a multiple could
        fall on a suspended step every time (the front and middle of a call chain never got
        one, and every jump there replayed from the start).
        """
        window = lsn - lsn % self.every
        if window == 0:
            return False
        index = bisect.bisect_right(self._lsns, lsn)
        return index == 0 or self._lsns[index - 1] < window

    def put(self, lsn: int, packed: bytes) -> None:
        if lsn in self._memory:
            return
        self._memory[lsn] = packed
        self._bytes += len(packed)
        if lsn not in self._on_disk:
            bisect.insort(self._lsns, lsn)
            if self._spill is not None:
                self._write(lsn, packed)
        while self._bytes > self.max_bytes and len(self._memory) > 1:
            old, data = self._memory.popitem(last=False)
            self._bytes -= len(data)
            if old not in self._on_disk:
                self._lsns.remove(old)

    def nearest(self, lsn: int) -> int | None:
        """The greatest LSN at or below ``lsn`` with a snapshot, or None."""
        i = bisect.bisect_right(self._lsns, lsn)
        return self._lsns[i - 1] if i else None

    def below(self, lsn: int) -> list[int]:
        """Every snapshot LSN strictly below ``lsn``, ascending."""
        return self._lsns[: bisect.bisect_left(self._lsns, lsn)]

    def get(self, lsn: int) -> bytes | None:
        packed = self._memory.get(lsn)
        if packed is not None:
            self._memory.move_to_end(lsn)
            return packed
        if lsn in self._on_disk and self._spill is not None:
            try:
                data = (self._spill / f"{lsn:020d}{_SUFFIX}").read_bytes()
                return zstandard.ZstdDecompressor().decompress(data)
            except (OSError, zstandard.ZstdError):
                self._on_disk.discard(lsn)  # damaged or removed: it is only a cache
                self._lsns.remove(lsn)
        return None

    def _write(self, lsn: int, packed: bytes) -> None:
        assert self._spill is not None
        final = self._spill / f"{lsn:020d}{_SUFFIX}"
        tmp = final.with_suffix(".tmp")
        try:
            tmp.write_bytes(zstandard.ZstdCompressor(level=1).compress(packed))
            os.replace(tmp, final)  # never seen half-written; no fsync: it is a cache
        except OSError:
            return  # a full or read-only disk costs speed, not correctness
        self._on_disk.add(lsn)


def spill_folder(log_dir: Path, log_id: str, code_version: str) -> Path:
    """Where snapshots of this log replayed by this code version live on disk.

    Beside the log when this process may write there, else in a temporary directory of the
    process (see the module docstring).
    """
    # The payload version is part of the key: snapshots of another layout are never read back.
    key = hashlib.sha256(f"{log_id}\0{code_version}\0{SNAPSHOT_LAYOUT}".encode()).hexdigest()[:16]
    beside = log_dir / SPILL_DIR
    writable = os.access(beside, os.W_OK) if beside.exists() else os.access(log_dir, os.W_OK)
    return beside / key if writable else _private_root() / key


_private: list[Path] = []
_private_lock = threading.Lock()


def _private_root() -> Path:
    """This process's own folder for snapshots of read-only logs (made once, removed at exit)."""
    with _private_lock:
        if not _private:
            _private.append(Path(tempfile.mkdtemp(prefix="immortals-replay-cache-")))
            atexit.register(shutil.rmtree, _private[0], ignore_errors=True)
        return _private[0]
