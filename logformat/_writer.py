"""The single writer of a log: recovery on open, group-commit appends, checkpoints, trim.

Only one process may write a log. An OS file lock (``LOCK``, via ``flock``) enforces that on one
machine and is dropped by the kernel the instant the holder dies, SIGKILL included, so a restart
can take over at once. Epochs fence writers that a lock cannot see (another machine on shared
storage): every frame carries its writer's epoch and no append may go below the newest one.
A writer paused while holding the lock is taken over through the fence file (``_fence``,
FORMAT.md 8.1): ``open(take_over=True)``, and every append first checks the fence (one fstat).

Durability: one :meth:`LogWriter.append` is one ``write`` of all its frames and one
``fdatasync`` (enough, because only data and the file size change; a new segment also fsyncs the
directory). ``sync=False`` skips both fsyncs, for tests and for unprotected baselines.

Preallocation (FORMAT.md 3.1): a synced writer makes each new segment a version-2 segment and
extends it ahead of the data in chunks of ``preallocate`` bytes (``posix_fallocate``: the file
reads as zeros there), so most appends' ``fdatasync`` need not record a new file size (about 30%
less latency on ext4 here). Readers take the zeros after the last frame as the end of the data.
"""

from __future__ import annotations

import dataclasses
import errno
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
from ._fence import FenceWatch, begin, read_fence
from ._files import (
    SegmentFile,
    catch_up,
    checkpoint_infos,
    live_segments,
    missing_records,
    segment_may_have_zero_tail,
    sync_index_with_fence,
)
from ._frame import HEADER_SIZE, FrameEncoder
from ._index import Coverage, FrameLoc, LogIndex, replace_index
from ._meta import LogMeta, fsync_dir, mark_zero_tail, read_meta, write_meta
from ._segment import (
    SEGMENT_HEADER_SIZE,
    Damage,
    encode_segment_header,
    may_have_zero_tail,
    scan_segment,
    segment_name,
)

DEFAULT_SEGMENT_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
DEFAULT_PREALLOCATE: Final = 256 * 1024
"""How far ahead of its data a synced writer keeps a segment allocated (FORMAT.md 3.1): one file
growth per this many bytes appended, and at most this many zero bytes left at a segment's end."""
LOCK_NAME: Final = "LOCK"

_fsync = getattr(os, "fdatasync", os.fsync)


@dataclass(frozen=True, slots=True)
class Appended:
    """What one :meth:`LogWriter.append` made durable.

    ``first_lsn..last_lsn`` are the LSNs its records got (for an empty append, ``last_lsn`` is
    ``first_lsn - 1`` and nothing was written). ``bytes_written`` is every byte the call wrote to
    segment files: all of its frames, plus the header of the new segment when the append filled
    the current one and rolled over. Summed over appends it is the growth of the segment files'
    data (of the files themselves when nothing is preallocated; a zero tail is not data).
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
        take_over: bool = False,
        preallocate: int = 0,
    ) -> None:
        self.path = log_dir
        self.take_over = take_over
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
        self._preallocate = preallocate
        self._allocated = 0  # the file size of the open segment (its data and any zero tail)
        self._zero_tail = False  # whether the open segment is a version-2 one
        self.next_lsn = 1
        self.max_epoch = 0
        self._last_wall_ns = 0
        self.recovery: RecoveryReport | None = None
        self._watch: FenceWatch | None = None

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
        take_over: bool = False,
        lock_fd: int | None = None,
        preallocate: int | None = None,
    ) -> LogWriter:
        """Open (or, given ``create``, create) the log at ``path`` for appending.

        Takes the writer lock, cuts a torn tail back to the last whole frame, brings the index up
        to date, and refuses an ``epoch`` older than one already in the log, or than one the
        fence file names (FORMAT.md 8.1). Damage in the middle raises CorruptLogError: appending
        after it would bury it.

        ``take_over=True`` is a standby taking the log from a writer that may still be alive
        (paused, its lease lapsed): it does not take the lock (the old process may hold it),
        requires that ``claim(path, epoch)`` was done first, cuts nothing (the old writer may
        still hold the newest segment open), reads the tail (last whole frame: LSN L), writes
        ``begin epoch at L + 1`` to the fence and starts a new segment there. Whatever the old
        writer appends afterwards is void for every reader.

        ``lock_fd``: an fd of ``LOCK`` on which the caller already holds the writer lock (a
        standby that waited on it); the writer owns it from now on. Taking it anew would hand
        the lock to the next process waiting for it.

        ``preallocate``: bytes a new segment is allocated ahead of its data (FORMAT.md 3.1); the
        default is :data:`DEFAULT_PREALLOCATE` with ``sync`` and 0 without (it only saves fsync
        work). 0 writes version-1 segments, which end where their last frame ends.
        """
        log_dir = Path(path)
        if take_over:
            if create is not None and not (log_dir / "meta.json").exists():
                raise LogError(f"{log_dir}: a takeover needs an existing log")
            fence = read_fence(log_dir)
            if not fence.claimed(epoch):
                raise LogError(
                    f"{log_dir}: a takeover with epoch {epoch} needs claim(path, {epoch}) first"
                )
            replace_index(log_dir, str(epoch))  # the old writer may be stopped inside a write
        if create is not None and not (log_dir / "meta.json").exists():
            log_dir.mkdir(parents=True, exist_ok=True)
            meta = dataclasses.replace(create, created_ns=create.created_ns or time.time_ns())
            if not meta.versions:
                meta = meta.with_version(1, meta.app, meta.code_version)
            write_meta(log_dir, meta)
        meta = read_meta(log_dir)
        if lock_fd is None:
            lock_fd = -1 if take_over else acquire_lock(log_dir)
        writer = cls(
            log_dir,
            epoch=epoch,
            meta=meta,
            lock_fd=lock_fd,
            sync=sync,
            segment_size=segment_size,
            max_frame_bytes=max_frame_bytes,
            fault_hook=fault_hook,
            take_over=take_over,
            preallocate=(DEFAULT_PREALLOCATE if sync else 0)
            if preallocate is None
            else preallocate,
        )
        try:
            writer._recover()
        except BaseException:
            writer.close()
            raise
        return writer

    def _recover(self) -> None:
        started = time.perf_counter()
        self._watch = FenceWatch(self.path)
        fence = self._watch.fence
        if fence.fences(self.epoch) or (self.take_over and fence.begin_of(self.epoch) is not None):
            raise FencedError(
                f"epoch {self.epoch} may not write {self.path}: the fence holds "
                f"{', '.join(e.describe() for e in fence.entries)}; claim a higher epoch"
            )
        state = catch_up(self.path, self._index, self.meta.log_id, whole_frame=True, fence=fence)
        truncated: Damage | None = None
        truncated_file: Path | None = None
        segments = live_segments(self.path, fence)
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
            if damage.kind == "torn-tail" and is_last_segment and self.take_over:
                continue  # the old writer may be writing it: it becomes void bytes, not cut
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
        if self.take_over:
            fence = begin(self.path, self.epoch, self.next_lsn)
            self._watch.refresh()
            sync_index_with_fence(self._index, fence, self.meta.log_id)
            self._create_segment(self.next_lsn)
        else:
            segments = live_segments(self.path, fence)
            newest = segments[-1] if segments else None
            if (
                newest is not None
                and newest == state.end_segment
                and not state.void_tail
                and os.path.getsize(newest.path) in (state.end_offset, state.proven_end)
            ):
                # Its bytes after the last frame, if any, were read and are zeros (3.1).
                self._open_segment(newest, create=False, at=state.end_offset)
            else:
                # No segment yet, or the newest ends in void bytes (a fenced-out writer's): a
                # writer never appends after those, it starts the next segment.
                self._create_segment(self.next_lsn)
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

    def _create_segment(self, first_lsn: int) -> None:
        """Start the segment ``first_lsn``, refusing (FencedError) if this writer lost the log.

        A file of that name that holds no record that counts (only a header, a torn first frame,
        or void frames: a fenced-out writer's) is renamed aside to ``<name>.void-<ns>``, never
        appended to: its writer may still hold it open. The fence is checked again after the
        rename; if a newer epoch claimed the log meanwhile the file is put back.
        """
        self._check_fence()
        seg = SegmentFile(first_lsn, self.path / segment_name(first_lsn))
        try:
            self._open_segment(seg)
            return
        except FileExistsError:
            if not self._holds_no_records(seg):
                raise LogError(
                    f"{seg.path} already exists and holds records; cannot start a segment there"
                ) from None
        aside = seg.path.with_name(f"{seg.path.name}.void-{time.time_ns()}")
        os.rename(seg.path, aside)
        if self.fenced():
            try:
                os.link(aside, seg.path)  # put it back unless someone made a new one
                os.unlink(aside)
            except FileExistsError:
                pass
            self._check_fence()
        self._open_segment(seg)

    def _holds_no_records(self, seg: SegmentFile) -> bool:
        assert self._watch is not None
        data = seg.path.read_bytes()
        result = scan_segment(
            data,
            expected_lsn=seg.first_lsn,
            is_last=True,
            fence=self._watch.fence,
            zero_tail=may_have_zero_tail(data),
        )
        return not result.frames and all(d.kind == "torn-tail" for d in result.damage)

    def _open_segment(self, seg: SegmentFile, *, create: bool = True, at: int = 0) -> None:
        """Open ``seg`` for appending at ``at`` (a new one: create it, after its header).

        A new segment is a version-2 one when this writer preallocates: ``meta.json`` says
        version 3 first, then the header is written and made durable, and only then is the file
        extended with zeros, so a crash never leaves a long file without a header.
        """
        zero_tail = self._preallocate > 0
        if create:
            if zero_tail:
                mark_zero_tail(self.path)  # before the file exists: old readers must refuse
            fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, encode_segment_header(seg.first_lsn, zero_tail=zero_tail))
                if self.sync:
                    os.fsync(fd)
                    fsync_dir(self.path)
                if zero_tail:
                    self._extend(fd, SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE)
                    if self.sync:
                        os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            at = SEGMENT_HEADER_SIZE
        else:
            fd = os.open(seg.path, os.O_WRONLY)
            zero_tail = segment_may_have_zero_tail(seg.path)
        if self._fd >= 0:
            os.close(self._fd)  # only once the next one is open: a failed create keeps it
        self._fd = fd
        self._segment = seg
        self._zero_tail = zero_tail
        self._allocated = os.fstat(fd).st_size
        self._offset = os.lseek(fd, at, os.SEEK_SET)

    def _extend(self, fd: int, allocated: int, need: int) -> int:
        """Allocate the segment (file size ``allocated``) with zeros to past ``need`` bytes.

        Ahead by ``preallocate`` bytes, but not past the segment size unless ``need`` is: the
        zero tail a segment is sealed with stays below one chunk. Returns the new file size.
        """
        target = max(need, min(need + self._preallocate, self._segment_size))
        if target <= allocated:
            return allocated
        try:
            os.posix_fallocate(fd, allocated, target - allocated)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            zeros = bytes(min(target - allocated, 1 << 20))  # no fallocate here: write zeros
            at = allocated
            while at < target:
                at += os.pwrite(fd, zeros[: target - at], at)
        return target

    # -- appending -----------------------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        """LSN of the newest durable record (0 for an empty log)."""
        return self.next_lsn - 1

    def fenced(self) -> bool:
        """Whether a higher epoch has claimed this log (this writer lost it; it stays lost).

        Cheap (one ``fstat`` of the fence file, re-read only when it grew). A writer that
        passed its check just before a claim may still append, and its records may then be
        void: check this after the fsync, before releasing any output that depends on them.
        """
        if self._watch is None:
            return False
        return self._watch.fences(self.epoch)

    def _check_fence(self) -> None:
        if self.fenced():
            assert self._watch is not None
            fence = self._watch.fence
            raise FencedError(
                f"epoch {self.epoch} has lost {self.path}: epoch {fence.highest_epoch} claimed "
                "it (see its fence file); this writer must stop"
            )

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
        self._check_fence()
        now = time.time_ns() if wall_ns is None else wall_ns
        now = max(now, self._last_wall_ns)  # keep frame times monotonic for the time index
        frames, locs = self._encode(records, now)
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        assert self._segment is not None
        written = 0
        view = memoryview(data)
        end = self._offset + len(data)
        if end > self._allocated:
            if self._zero_tail and self._preallocate:
                # One file growth per chunk, fsynced with this append's data.
                self._allocated = self._extend(self._fd, self._allocated, end)
            else:
                self._allocated = end
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
        added = len(data)
        if self.fenced():
            # Claimed while writing: these records may be void (fenced() tells the caller).
            # Index nothing (entries for void frames would have to be purged) and roll nothing.
            return Appended(first_lsn, self.next_lsn - 1, added)
        self._index.add(
            locs,
            Coverage(self._segment.first_lsn, self._offset, self.next_lsn, self.max_epoch, now),
        )
        if self._offset >= self._segment_size:
            try:
                self._create_segment(self.next_lsn)
            except FencedError:
                return Appended(first_lsn, self.next_lsn - 1, added)  # lost it just now
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
        self._check_fence()  # a fenced-out writer's state may follow void records
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
        self._check_fence()
        self.meta = self.meta.with_version(self.next_lsn, app, code_version)
        write_meta(self.path, self.meta)

    def trim(self, below: int, *, require_checkpoint: bool = True) -> TrimReport:
        """Drop whole segments holding only LSNs below ``below``, and checkpoints made useless.

        With ``require_checkpoint`` (the default) it refuses to leave a log that no checkpoint
        can be recovered from: the first kept LSN must follow some checkpoint.
        """
        self._check_fence()
        return trim_segments(self.path, self._index, below, require_checkpoint=require_checkpoint)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._watch is not None:
            self._watch.close()
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
    segments = live_segments(log_dir, read_fence(log_dir))
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
