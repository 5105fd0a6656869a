"""The lmdb index beside the segments: a cache, never the truth.

It maps each frame's first LSN to where the frame lies, each frame's wall time to its first LSN,
and lists checkpoints. Everything in it can be rebuilt from the segments and the checkpoint
directory, so it is written without fsync (lmdb ``sync=False``): a machine crash may lose its
newest entries, which the next open finds (the ``covered`` mark lags the segments) and catches up.
Entries are idempotent (same key, same value), so a reader and the writer may both catch up.

py-lmdb refuses to open one environment twice in a process, and a process often holds a writer
and readers of the same log; environments are therefore shared (``_lmdbenv``).

A log this process may not write (an archived copy, ``chmod -R a-w``, a read-only mount) is still
read through an index: a private copy in a temporary directory, taken from the log's own index
when it has a readable one (else empty, which catch-up rebuilds from the segments). The copy is
shared by every reader of that log in the process and removed when the last one closes; nothing
is written beside the log. Rejected: opening the log's index with lmdb ``readonly=True`` (catch-up
must be able to add frames the index lacks, and rebuild one that is wrong) and a pure in-memory
index (a second implementation of this class to keep in step).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import lmdb

from ._frame import HEADER_SIZE
from ._lmdbenv import acquire_env, env_is_open, open_dbs, release_env

INDEX_DIR: Final = "index"
_MAP_SIZE: Final = 1 << 34  # address space only; the file grows as needed
_FRAME: Final = struct.Struct("<QQIIqII")  # segment, offset, count, epoch, wall, stored, raw
_COVERED: Final = struct.Struct("<QQQIq")  # segment, end offset, next lsn, max epoch, last wall
_KEY: Final = struct.Struct(">Q")
_TIME_KEY: Final = struct.Struct(">QQ")
_TIME_BIAS: Final = 1 << 63
_FENCE_MARK: Final = struct.Struct("<QI")  # fence entries the index was checked against, CRC


@dataclass(frozen=True, slots=True)
class FrameLoc:
    """Where one frame lies, as the index remembers it."""

    first_lsn: int
    segment: int
    offset: int
    record_count: int
    epoch: int
    wall_ns: int
    stored_size: int
    raw_size: int

    @property
    def last_lsn(self) -> int:
        return self.first_lsn + self.record_count - 1


@dataclass(frozen=True, slots=True)
class Coverage:
    """How far the index reaches: up to ``end_offset`` of segment ``segment``."""

    segment: int
    end_offset: int
    next_lsn: int
    max_epoch: int
    last_wall_ns: int


class LogIndex:
    """Frames by LSN and by time, plus the ``covered`` mark, for one log directory."""

    def __init__(self, log_dir: Path, *, private: bool = False) -> None:
        """``private``: use a private copy even where the log's own index may be written (a
        follower of a log whose writer may be paused inside a write of it, holding lmdb's
        writer lock: opening the shared index for writing would wait for it forever)."""
        self._source = log_dir / INDEX_DIR
        self.read_only = private or not may_write(self._source)
        """Whether the log's own index cannot be written, so a private copy is used instead."""
        self._path = _acquire_shadow(self._source) if self.read_only else self._source
        try:
            self._env = self._open_or_fall_back()
        except BaseException:
            if self.read_only:
                _release_shadow(self._source)
            raise
        self._frames, self._times, self._meta, self._checkpoints = open_dbs(
            self._env, b"frames", b"times", b"meta", b"checkpoints"
        )
        self._closed = False
        # Segment boundaries (previous first LSN, next first LSN) already found to agree with the
        # segments, so a reader polling a long log does not look them all up on every refresh.
        self.known_boundaries: set[tuple[int, int]] = set()

    def _open_or_fall_back(self) -> lmdb.Environment:
        try:
            return self._open_env()
        except (lmdb.ReadonlyError, PermissionError):
            if self.read_only:
                raise
            # os.access said yes and the file system said no (a read-only bind mount, ACLs).
            self.read_only = True
            self._path = _acquire_shadow(self._source)
            return self._open_or_fall_back()
        except lmdb.InvalidError:
            # The file is not an lmdb environment (damaged, or cut short by a crash). The index
            # is only a cache: start an empty one, which the caller's catch-up rebuilds.
            for name in ("data.mdb", "lock.mdb"):
                (self._path / name).unlink(missing_ok=True)
            return self._open_env()

    def _open_env(self) -> lmdb.Environment:
        return acquire_env(
            self._path,
            map_size=_MAP_SIZE,
            max_dbs=5,
            sync=False,
            metasync=False,
            readahead=False,
            max_readers=256,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            release_env(self._path)
            if self.read_only:
                _release_shadow(self._source)

    def log_id(self) -> str | None:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(b"log_id")
        return raw.decode() if raw is not None else None

    def coverage(self) -> Coverage | None:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(b"covered")
        return Coverage(*_COVERED.unpack(raw)) if raw is not None else None

    def reset(self, log_id: str) -> None:
        """Forget everything (the index is about to be rebuilt)."""
        self.known_boundaries.clear()
        with self._env.begin(write=True) as txn:
            for db in (self._frames, self._times, self._meta, self._checkpoints):
                txn.drop(db, delete=False)
            txn.put(b"log_id", log_id.encode(), db=self._meta)

    def add(self, locs: list[FrameLoc], coverage: Coverage) -> None:
        """Record frames and move the ``covered`` mark forward (never back) in one transaction.

        The entries are written even when another process already moved the mark further: after
        a rebuild under a live writer, the writer's newer mark does not mean the older frames,
        which only the rebuilding scan sees, are indexed.
        """
        with self._env.begin(write=True) as txn:
            raw = txn.get(b"covered", db=self._meta)
            stored = Coverage(*_COVERED.unpack(raw)) if raw is not None else None
            for loc in locs:
                txn.put(
                    _KEY.pack(loc.first_lsn),
                    _FRAME.pack(
                        loc.segment,
                        loc.offset,
                        loc.record_count,
                        loc.epoch,
                        loc.wall_ns,
                        loc.stored_size,
                        loc.raw_size,
                    ),
                    db=self._frames,
                )
                txn.put(
                    _TIME_KEY.pack(loc.wall_ns + _TIME_BIAS, loc.first_lsn), b"", db=self._times
                )
            if stored is not None and _position(stored) >= _position(coverage):
                return  # another process got as far or further
            txn.put(
                b"covered",
                _COVERED.pack(
                    coverage.segment,
                    coverage.end_offset,
                    coverage.next_lsn,
                    coverage.max_epoch,
                    coverage.last_wall_ns,
                ),
                db=self._meta,
            )

    def fence_mark(self) -> tuple[int, int] | None:
        """(entry count, CRC of those entries) of the fence this index was last made to honour."""
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(b"fence")
        return _FENCE_MARK.unpack(raw) if raw is not None else None

    def set_fence_mark(self, count: int, crc: int) -> None:
        with self._env.begin(write=True, db=self._meta) as txn:
            txn.put(b"fence", _FENCE_MARK.pack(count, crc))

    def truncate_from(self, lsn: int) -> None:
        """Forget every frame starting at or after ``lsn`` and move the mark back before them.

        Used when a takeover voided records from ``lsn`` on: entries for them may have been
        added while they still counted, and must never be served. Catch-up then rescans from
        the last frame kept (a few frames: only what was written since the takeover).
        """
        self.known_boundaries.clear()
        with self._env.begin(write=True) as txn:
            cur = txn.cursor(db=self._frames)
            doomed = []
            if cur.set_range(_KEY.pack(lsn)):
                doomed = [_to_loc(k, v) for k, v in cur]
            for loc in doomed:
                txn.delete(_KEY.pack(loc.first_lsn), db=self._frames)
                txn.delete(_TIME_KEY.pack(loc.wall_ns + _TIME_BIAS, loc.first_lsn), db=self._times)
            if not doomed:
                return
            cur = txn.cursor(db=self._frames)
            if not cur.last():
                txn.delete(b"covered", db=self._meta)
                return
            last = _to_loc(cur.key(), cur.value())
            txn.put(
                b"covered",
                _COVERED.pack(
                    last.segment,
                    last.offset + HEADER_SIZE + last.stored_size,
                    last.last_lsn + 1,
                    last.epoch,
                    last.wall_ns,
                ),
                db=self._meta,
            )

    def locate(self, lsn: int) -> FrameLoc | None:
        """The indexed frame holding ``lsn``, in O(log n)."""
        with self._env.begin(db=self._frames) as txn:
            cur = txn.cursor()
            if cur.set_range(_KEY.pack(lsn + 1)):
                if not cur.prev():
                    return None
            elif not cur.last():
                return None
            loc = _to_loc(cur.key(), cur.value())
        return loc if loc.first_lsn <= lsn <= loc.last_lsn else None

    def first_lsn(self) -> int | None:
        with self._env.begin(db=self._frames) as txn:
            cur = txn.cursor()
            return int(_KEY.unpack(cur.key())[0]) if cur.first() else None

    def frame_count(self) -> int:
        with self._env.begin(db=self._frames) as txn:
            return int(txn.stat(self._frames)["entries"])

    def first_lsn_at_or_after(self, wall_ns: int) -> int | None:
        """First LSN of the first frame written at or after ``wall_ns``, in O(log n)."""
        with self._env.begin(db=self._times) as txn:
            cur = txn.cursor()
            if not cur.set_range(_TIME_KEY.pack(max(0, wall_ns + _TIME_BIAS), 0)):
                return None
            return int(_TIME_KEY.unpack(cur.key())[1])

    def drop_below(self, lsn: int) -> None:
        """Forget frames that start below ``lsn`` (after a trim)."""
        with self._env.begin(write=True) as txn:
            cur = txn.cursor(db=self._frames)
            doomed = []
            for key, value in cur:
                loc = _to_loc(key, value)
                if loc.first_lsn >= lsn:
                    break
                doomed.append(loc)
            for loc in doomed:
                txn.delete(_KEY.pack(loc.first_lsn), db=self._frames)
                txn.delete(_TIME_KEY.pack(loc.wall_ns + _TIME_BIAS, loc.first_lsn), db=self._times)

    def all_frames(self) -> Iterator[FrameLoc]:
        """Every indexed frame, oldest first, read in one consistent snapshot."""
        with self._env.begin(db=self._frames) as txn:
            for key, value in txn.cursor():
                yield _to_loc(key, value)

    def checkpoints(self) -> dict[int, bytes]:
        """Checkpoint LSN -> the cached summary the caller stored."""
        with self._env.begin(db=self._checkpoints) as txn:
            return {_KEY.unpack(k)[0]: bytes(v) for k, v in txn.cursor()}

    def set_checkpoints(self, entries: dict[int, bytes]) -> None:
        """Replace the cached checkpoint list (the directory listing is the truth)."""
        with self._env.begin(write=True) as txn:
            txn.drop(self._checkpoints, delete=False)
            for lsn, summary in entries.items():
                txn.put(_KEY.pack(lsn), summary, db=self._checkpoints)


def may_write(index_dir: Path) -> bool:
    """Whether this process may create or change the lmdb files of ``index_dir``.

    Asks ``os.access`` (as root it says yes to a directory without write bits, as the kernel
    would let root write there too); a read-only file system also answers no.
    """
    if not index_dir.exists():
        return os.access(index_dir.parent, os.W_OK)
    if not os.access(index_dir, os.W_OK):
        return False
    return all(
        os.access(index_dir / name, os.W_OK)
        for name in ("data.mdb", "lock.mdb")
        if (index_dir / name).exists()
    )


_shadows: dict[Path, tuple[Path, int]] = {}
_shadows_lock = threading.Lock()


def _acquire_shadow(source: Path) -> Path:
    """A writable private copy of the index at ``source``, shared in this process (refcounted)."""
    key = source.resolve()
    with _shadows_lock:
        found = _shadows.get(key)
        if found is not None:
            _shadows[key] = (found[0], found[1] + 1)
            return found[0]
        shadow = Path(tempfile.mkdtemp(prefix="immortals-index-"))
        _copy_index(source, shadow)
        _shadows[key] = (shadow, 1)
        return shadow


def _copy_index(source: Path, into: Path) -> None:
    """Copy the index at ``source`` into the empty directory ``into``, if it can be read at all.

    lmdb's own copy takes one consistent snapshot. Opened without its lock file, which a
    read-only directory may lack or not let us touch; a writer of another user appending
    meanwhile can leave the copy behind or inconsistent, which catch-up detects as for any
    index (it is checked against the segments before anything in it is believed).
    """
    if not (source / "data.mdb").is_file():
        return  # no index yet: the empty copy is rebuilt from the segments
    try:
        env = lmdb.open(str(source), readonly=True, lock=False, max_dbs=5, map_size=_MAP_SIZE)
    except lmdb.Error:
        return  # damaged or unreadable: start empty, as for a damaged writable index
    try:
        env.copy(str(into))
    except lmdb.Error:
        for name in ("data.mdb", "lock.mdb"):
            (into / name).unlink(missing_ok=True)
    finally:
        env.close()


def replace_index(log_dir: Path, label: str) -> None:
    """Give the log a fresh index directory, a copy of the current one, and set the old aside.

    For a writer taking the log over from one that may be stopped (SIGSTOP past its lease)
    inside a write transaction of the index: that process holds lmdb's writer mutex until it
    dies, so opening the old index for writing would wait for it forever (the SIGSTOP tests
    found the takeover hanging there). The copy is read without lmdb's locks, from the last
    committed state, and is believed no more than any index: catch-up checks it against the
    segments and drops what the fence made void. The old directory is removed; a stopped
    process keeps its open files, so whatever it writes later lands in nothing anyone reads.
    """
    source = log_dir / INDEX_DIR
    if env_is_open(source):
        return  # this process's own writer or reader: it is not stopped, it is running this
    fresh = log_dir / f"{INDEX_DIR}.new-{label}"
    aside = log_dir / f"{INDEX_DIR}.void-{label}"
    for leftover in (fresh, aside):  # a taker that crashed halfway
        shutil.rmtree(leftover, ignore_errors=True)
    fresh.mkdir()
    _copy_index(source, fresh)
    with contextlib.suppress(FileNotFoundError):
        os.rename(source, aside)
    os.rename(fresh, source)
    shutil.rmtree(aside, ignore_errors=True)


def _release_shadow(source: Path) -> None:
    key = source.resolve()
    with _shadows_lock:
        shadow, refs = _shadows[key]
        if refs > 1:
            _shadows[key] = (shadow, refs - 1)
            return
        del _shadows[key]
    shutil.rmtree(shadow, ignore_errors=True)


def _position(cov: Coverage) -> tuple[int, int, int]:
    return cov.next_lsn, cov.segment, cov.end_offset


def _to_loc(key: bytes, value: bytes) -> FrameLoc:
    segment, offset, count, epoch, wall_ns, stored, raw = _FRAME.unpack(value)
    return FrameLoc(_KEY.unpack(key)[0], segment, offset, count, epoch, wall_ns, stored, raw)
