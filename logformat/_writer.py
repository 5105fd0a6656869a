"""The single writer of a log: recovery on open, group-commit appends, checkpoints, trim.

Only one process may write a log. An OS file lock (``LOCK``, via ``flock``) enforces that on one
machine and is dropped by the kernel the instant the holder dies, SIGKILL included, so a restart
can take over at once. Epochs fence writers that a lock cannot see (another machine on shared
storage): every frame carries its writer's epoch and no append may go below the newest one.

Durability: one :meth:`LogWriter.append` is one ``write`` of all its frames and one
``fdatasync`` (enough, because only data and the file size change; a new segment also fsyncs the
directory). ``sync=False`` skips both fsyncs, for tests and for unprotected baselines.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ._checkpoint import (
    CheckpointInfo,
    checkpoint_is_sound,
    encode_checkpoint,
    list_checkpoint_files,
    write_checkpoint_file,
)
from ._errors import (
    CorruptLogError,
    FencedError,
    LogError,
    LogLockedError,
    MissingRecordsError,
    TrimRefusedError,
)
from ._files import SegmentFile, catch_up, checkpoint_infos, list_segments, missing_records
from ._frame import HEADER_SIZE, FrameEncoder
from ._index import Coverage, FrameLoc, LogIndex
from ._meta import LogMeta, fsync_dir, read_meta, write_meta
from ._segment import SEGMENT_HEADER_SIZE, Damage, encode_segment_header, segment_name

DEFAULT_SEGMENT_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
LOCK_NAME: Final = "LOCK"

_fsync = getattr(os, "fdatasync", os.fsync)


@dataclass(frozen=True, slots=True)
class Appended:
    """What one :meth:`LogWriter.append` made durable.

    ``first_lsn..last_lsn`` are the LSNs its records got (for an empty append, ``last_lsn`` is
    ``first_lsn - 1`` and nothing was written). ``bytes_written`` is every byte the call wrote to
    segment files: all of its frames, plus the header of the new segment when the append filled
    the current one and rolled over. Summed over appends it is the growth of the segment files.
    """

    first_lsn: int
    last_lsn: int
    bytes_written: int


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the log for writing found and did."""

    next_lsn: int
    max_epoch: int
    truncated: Damage | None
    truncated_file: Path | None
    index_rebuilt: bool
    frames_scanned: int
    seconds: float

    def describe(self) -> str:
        if self.truncated is None:
            return "log is whole"
        d = self.truncated
        return (
            f"cut a torn tail of {d.end_offset - d.offset} bytes at byte {d.offset} of "
            f"{self.truncated_file} ({d.reason})"
        )


@dataclass(frozen=True, slots=True)
class TrimReport:
    """What :meth:`LogWriter.trim` removed."""

    first_lsn: int
    segments_removed: list[Path]
    checkpoints_removed: list[Path]


def acquire_lock(log_dir: Path) -> int:
    """Take the log's writer lock or raise LogLockedError; returns the fd that holds it."""
    fd = os.open(log_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogLockedError(
            f"{log_dir} is being written by another live process; stop it first"
        ) from None
    return fd


class LogWriter:
    """Appends records to one log directory. Create it with :meth:`open`."""

    def __init__(
        self,
        log_dir: Path,
        *,
        epoch: int,
        meta: LogMeta,
        lock_fd: int,
        sync: bool,
        segment_size: int,
        max_frame_bytes: int,
        fault_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.path = log_dir
        self.meta = meta
        self.epoch = epoch
        self.sync = sync
        self._lock_fd = lock_fd
        self._segment_size = segment_size
        self._max_frame_bytes = max_frame_bytes
        self._fault_hook = fault_hook
        self._encoder = FrameEncoder()
        self._index = LogIndex(log_dir)
        self._fd = -1
        self._segment: SegmentFile | None = None
        self._offset = 0
        self.next_lsn = 1
        self.max_epoch = 0
        self._last_wall_ns = 0
        self.recovery: RecoveryReport | None = None

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        epoch: int = 1,
        create: LogMeta | None = None,
        sync: bool = True,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        fault_hook: Callable[[str], None] | None = None,
    ) -> LogWriter:
        """Open (or, given ``create``, create) the log at ``path`` for appending.

        Takes the writer lock, cuts a torn tail back to the last whole frame, brings the index up
        to date, and refuses an ``epoch`` older than one already in the log. Damage in the middle
        raises CorruptLogError: appending after it would bury it.
        """
        log_dir = Path(path)
        if create is not None and not (log_dir / "meta.json").exists():
            log_dir.mkdir(parents=True, exist_ok=True)
            meta = dataclasses.replace(create, created_ns=create.created_ns or time.time_ns())
            if not meta.versions:
                meta = meta.with_version(1, meta.app, meta.code_version)
            write_meta(log_dir, meta)
        meta = read_meta(log_dir)
        lock_fd = acquire_lock(log_dir)
        writer = cls(
            log_dir,
            epoch=epoch,
            meta=meta,
            lock_fd=lock_fd,
            sync=sync,
            segment_size=segment_size,
            max_frame_bytes=max_frame_bytes,
            fault_hook=fault_hook,
        )
        try:
            writer._recover()
        except BaseException:
            writer.close()
            raise
        return writer

    def _recover(self) -> None:
        started = time.perf_counter()
        state = catch_up(self.path, self._index, self.meta.log_id, whole_frame=True)
        truncated: Damage | None = None
        truncated_file: Path | None = None
        segments = list_segments(self.path)
        # Before anything is cut or created: records lost with whole segments (or the end of the
        # newest one) must never be written over by new records with the same LSNs.
        for file, damage in state.damage:
            if damage.kind == "missing":
                raise MissingRecordsError(
                    damage.reason,
                    file=str(file),
                    first_lsn=damage.first_lsn or state.next_lsn,
                    last_lsn=damage.last_lsn or state.next_lsn,
                )
        lost = missing_records(self.path, self.meta, state.next_lsn)
        if lost is not None:
            file, damage = lost
            assert damage.first_lsn is not None and damage.last_lsn is not None
            raise MissingRecordsError(
                damage.reason, file=str(file), first_lsn=damage.first_lsn, last_lsn=damage.last_lsn
            )
        for file, damage in state.damage:
            is_last_segment = bool(segments) and file == segments[-1].path
            if damage.kind == "torn-tail" and is_last_segment:
                truncated, truncated_file = damage, file
                if damage.offset < SEGMENT_HEADER_SIZE:
                    # A crash while creating a new segment: it holds no frames yet.
                    os.unlink(file)
                    fsync_dir(self.path)
                    continue
                with open(file, "r+b") as f:
                    f.truncate(damage.offset)
                    f.flush()
                    os.fsync(f.fileno())
            else:
                raise CorruptLogError(
                    damage.reason,
                    file=str(file),
                    offset=damage.offset,
                    first_lsn=damage.first_lsn,
                    last_lsn=damage.last_lsn,
                )
        self.next_lsn = state.next_lsn
        self.max_epoch = state.max_epoch
        self._last_wall_ns = state.last_wall_ns
        if self.epoch < self.max_epoch:
            raise FencedError(
                f"epoch {self.epoch} is older than epoch {self.max_epoch} already in {self.path}; "
                "a newer writer has taken over this log"
            )
        segments = list_segments(self.path)
        if segments:
            self._open_segment(segments[-1], create=False)
        else:
            self._open_segment(SegmentFile(self.next_lsn, self.path / segment_name(self.next_lsn)))
        self._remove_unfinished_checkpoints()
        self.recovery = RecoveryReport(
            self.next_lsn,
            self.max_epoch,
            truncated,
            truncated_file,
            state.rebuilt,
            state.frames_scanned,
            time.perf_counter() - started,
        )

    def _open_segment(self, seg: SegmentFile, *, create: bool = True) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        if create:
            fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, encode_segment_header(seg.first_lsn))
            if self.sync:
                os.fsync(fd)
                fsync_dir(self.path)
        else:
            fd = os.open(seg.path, os.O_WRONLY)
        self._fd = fd
        self._segment = seg
        self._offset = os.lseek(fd, 0, os.SEEK_END)

    # -- appending -----------------------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        """LSN of the newest durable record (0 for an empty log)."""
        return self.next_lsn - 1

    def append(self, records: Sequence[Any], *, wall_ns: int | None = None) -> Appended:
        """Make ``records`` durable as LSNs ``next_lsn ...``; returns an :class:`Appended`.

        One call is one group commit: its records go in one frame (several if larger than
        ``max_frame_bytes``), one write and one fsync. The result gives the LSN range written and
        the bytes it added to segment files. Raises ValueCodecError, before anything is written,
        if a record cannot be encoded.
        """
        first_lsn = self.next_lsn
        if not records:
            return Appended(first_lsn, first_lsn - 1, 0)
        if self._fd < 0:
            raise LogError(f"{self.path}: the writer is closed")
        if self.epoch < self.max_epoch:
            raise FencedError(
                f"epoch {self.epoch} is older than epoch {self.max_epoch} already durable"
            )
        now = time.time_ns() if wall_ns is None else wall_ns
        now = max(now, self._last_wall_ns)  # keep frame times monotonic for the time index
        frames, locs = self._encode(records, now)
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        assert self._segment is not None
        written = 0
        view = memoryview(data)
        if self._fault_hook is not None:  # crash tests: stop with half a frame on disk
            written = os.write(self._fd, view[: len(data) // 2])
            self._fault_hook("mid-frame")
        while written < len(data):
            written += os.write(self._fd, view[written:])
        if self.sync:
            _fsync(self._fd)
        self._offset += len(data)
        self.next_lsn += len(records)
        self.max_epoch = max(self.max_epoch, self.epoch)
        self._last_wall_ns = now
        self._index.add(
            locs,
            Coverage(self._segment.first_lsn, self._offset, self.next_lsn, self.max_epoch, now),
        )
        added = len(data)
        if self._offset >= self._segment_size:
            self._open_segment(SegmentFile(self.next_lsn, self.path / segment_name(self.next_lsn)))
            added += self._offset  # the new segment's header (the offset just after it)
        return Appended(first_lsn, self.next_lsn - 1, added)

    def _encode(self, records: Sequence[Any], wall_ns: int) -> tuple[list[bytes], list[FrameLoc]]:
        assert self._segment is not None
        frames: list[bytes] = []
        locs: list[FrameLoc] = []
        lsn = self.next_lsn
        offset = self._offset
        for group in self._split(self._encoder.pack_each(records)):
            raw = b"".join(group)
            frame = self._encoder.encode(
                raw, first_lsn=lsn, record_count=len(group), epoch=self.epoch, wall_ns=wall_ns
            )
            locs.append(
                FrameLoc(
                    lsn,
                    self._segment.first_lsn,
                    offset,
                    len(group),
                    self.epoch,
                    wall_ns,
                    len(frame) - HEADER_SIZE,
                    len(raw),
                )
            )
            frames.append(frame)
            lsn += len(group)
            offset += len(frame)
        return frames, locs

    def _split(self, packed: list[bytes]) -> list[list[bytes]]:
        """Cut a large append into frames of at most ``max_frame_bytes`` raw each."""
        groups: list[list[bytes]] = []
        current: list[bytes] = []
        total = 0
        for item in packed:
            if current and total + len(item) > self._max_frame_bytes:
                groups.append(current)
                current, total = [], 0
            current.append(item)
            total += len(item)
        groups.append(current)
        return groups

    # -- checkpoints, metadata, trim -----------------------------------------------------------

    def write_checkpoint(self, lsn: int, state: Any, *, use_pickle: bool = False) -> Path:
        """Store ``state`` as the snapshot after step ``lsn`` (durable before it returns)."""
        return self.write_checkpoint_bytes(
            lsn, encode_checkpoint(lsn, state, use_pickle=use_pickle)
        )

    def write_checkpoint_bytes(self, lsn: int, data: bytes) -> Path:
        """Store already encoded checkpoint bytes (encode them off the hot path)."""
        if not 0 <= lsn <= self.last_lsn:
            raise LogError(f"checkpoint LSN {lsn} is beyond the log's end ({self.last_lsn})")
        path = write_checkpoint_file(
            self.path, lsn, data, sync=self.sync, fault_hook=self._fault_hook
        )
        return path

    def checkpoints(self) -> list[CheckpointInfo]:
        """Sound checkpoints, oldest first."""
        return checkpoint_infos(self.path, self._index)

    def _remove_unfinished_checkpoints(self) -> None:
        # Leftover temporary files are checkpoints a crash interrupted: never valid.
        folder = self.path / "checkpoints"
        if folder.is_dir():
            for tmp in folder.glob("*.tmp"):
                tmp.unlink(missing_ok=True)

    def record_code_version(self, app: str, code_version: str) -> None:
        """Note in the metadata that steps from ``next_lsn`` on run ``app`` at ``code_version``."""
        if self.meta.app == app and self.meta.code_version == code_version:
            return
        self.meta = self.meta.with_version(self.next_lsn, app, code_version)
        write_meta(self.path, self.meta)

    def trim(self, below: int, *, require_checkpoint: bool = True) -> TrimReport:
        """Drop whole segments holding only LSNs below ``below``, and checkpoints made useless.

        With ``require_checkpoint`` (the default) it refuses to leave a log that no checkpoint
        can be recovered from: the first kept LSN must follow some checkpoint.
        """
        return trim_segments(self.path, self._index, below, require_checkpoint=require_checkpoint)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._index.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the fd releases the flock
            self._lock_fd = -1

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def trim_segments(
    log_dir: Path, index: LogIndex, below: int, *, require_checkpoint: bool = True
) -> TrimReport:
    """The trim shared by :meth:`LogWriter.trim` and :func:`trim_log` (caller holds the lock)."""
    segments = list_segments(log_dir)
    doomed = [
        seg for seg, following in itertools.pairwise(segments) if following.first_lsn <= below
    ]
    new_first = segments[len(doomed)].first_lsn if segments else 1
    checkpoints = list_checkpoint_files(log_dir)
    if (
        doomed
        and require_checkpoint
        and not any(lsn >= new_first - 1 and checkpoint_is_sound(p) for lsn, p in checkpoints)
    ):
        raise TrimRefusedError(
            f"trimming below LSN {below} would leave no sound checkpoint to recover from (the "
            f"log would start at LSN {new_first}, so a checkpoint at LSN {new_first - 1} or "
            "later that loads is needed); write a checkpoint first"
        )
    removed_checkpoints = [p for lsn, p in checkpoints if lsn < new_first - 1] if doomed else []
    for seg in doomed:
        seg.path.unlink()
    for path in removed_checkpoints:
        path.unlink()
    if doomed:
        fsync_dir(log_dir)
        index.drop_below(new_first)
    return TrimReport(new_first, [s.path for s in doomed], removed_checkpoints)


def trim_log(
    path: str | os.PathLike[str], below: int, *, require_checkpoint: bool = True
) -> TrimReport:
    """Trim a log no process is writing (takes the writer lock for the duration)."""
    log_dir = Path(path)
    read_meta(log_dir)
    lock_fd = acquire_lock(log_dir)
    index = LogIndex(log_dir)
    try:
        return trim_segments(log_dir, index, below, require_checkpoint=require_checkpoint)
    finally:
        index.close()
        os.close(lock_fd)
