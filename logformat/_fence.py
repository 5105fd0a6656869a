"""The fence file: how a standby takes a log over from a writer that may still be alive.

A writer paused by SIGSTOP keeps its ``flock`` on ``LOCK``; when its lease lapses a standby must
take over without that lock, and the paused process (a "zombie") may wake up and append. The
fence makes whatever a zombie writes after a takeover void for every reader, durably, and lets a
zombie find out cheaply that it lost (FORMAT.md section 8.1).

``fence`` is append-only: 24-byte entries, each written with one ``write`` and fsynced. A taker
with epoch E appends ``claim E`` (no entry of epoch E or higher may exist), reads the log's tail
(last whole frame: LSN L), appends ``begin E at L + 1`` and writes only in a new segment starting
there. Records of epoch e at LSNs from ``void_from(e)`` on (the lowest begin of a higher epoch)
are void. Appenders on one machine serialise with an ``flock`` on the fence file itself, held
only for the read-check-append; across machines the lease service must hand out distinct epochs.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ._errors import CorruptLogError, FencedError, FormatVersionError, LogError
from ._meta import FENCE_NAME, fsync_dir, mark_fenced

ENTRY_SIZE: Final = 24
CLAIM: Final = 1
BEGIN: Final = 2
_ENTRY: Final = struct.Struct("<IIQI")  # epoch, kind, lsn, reserved; then u32 CRC of these 20
_CRC: Final = struct.Struct("<I")
_KIND_NAMES: Final = {CLAIM: "claim", BEGIN: "begin"}
_MTIME_TRUSTED_AFTER_NS: Final = 2_000_000_000


class FenceCorruptError(CorruptLogError):
    """An entry in the middle of the fence file is damaged: which writers are void is unknown.

    Raised instead of guessing: reading past it could serve a zombie's records, and ignoring the
    entries after it could void a taker's. Restore the file from a backup or replica.
    """

    def __init__(self, reason: str, *, file: str, offset: int) -> None:
        self.reason = reason
        self.file = file
        self.offset = offset
        self.first_lsn = None
        self.last_lsn = None
        LogError.__init__(
            self,
            f"{file}: damaged fence entry at byte {offset} ({reason}), with entries after it; "
            "the takeovers it records cannot be trusted: restore it from a backup or replica",
        )


@dataclass(frozen=True, slots=True)
class FenceEntry:
    """One entry: ``claim`` (lsn 0) or ``begin`` (the first LSN epoch ``epoch`` writes)."""

    epoch: int
    kind: int
    lsn: int

    def encode(self) -> bytes:
        body = _ENTRY.pack(self.epoch, self.kind, self.lsn, 0)
        return body + _CRC.pack(zlib.crc32(body))

    def describe(self) -> str:
        name = _KIND_NAMES.get(self.kind, f"kind {self.kind}")
        return f"{name} {self.epoch}" + (f" at {self.lsn}" if self.kind == BEGIN else "")


@dataclass(frozen=True, slots=True)
class Fence:
    """The whole entries of a fence file (a torn last entry left out), and what they void.

    ``size`` is where the whole entries end (the next entry goes there); ``torn`` is how many
    bytes of a torn last entry follow. ``crc`` is the CRC of the whole entries' bytes, so a cache
    can tell "the same fence, or one that only grew" cheaply.
    """

    entries: tuple[FenceEntry, ...] = ()
    size: int = 0
    torn: int = 0
    crc: int = 0
    _void: dict[int, int | None] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @property
    def highest_epoch(self) -> int:
        """The highest epoch claimed or begun (0 when nothing is fenced)."""
        return max((e.epoch for e in self.entries), default=0)

    @property
    def lowest_begin(self) -> int | None:
        """The lowest LSN any begin names: no record below it is void."""
        return min((e.lsn for e in self.entries if e.kind == BEGIN), default=None)

    def void_from(self, epoch: int) -> int | None:
        """The LSN from which records of ``epoch`` are void: the lowest begin of a higher epoch.

        None when no higher epoch has begun (a claim alone voids nothing: its claimer may have
        died before reading the tail, and a later taker claims a higher epoch anyway).
        """
        if epoch not in self._void:
            self._void[epoch] = min(
                (e.lsn for e in self.entries if e.kind == BEGIN and e.epoch > epoch), default=None
            )
        return self._void[epoch]

    def is_void(self, epoch: int, lsn: int) -> bool:
        """Whether a frame of ``epoch`` starting at ``lsn`` was written after it lost the log."""
        if not self.entries:
            return False
        start = self.void_from(epoch)
        return start is not None and lsn >= start

    def fences(self, epoch: int) -> bool:
        """Whether a writer of ``epoch`` has lost the log (a higher epoch claimed or began)."""
        return self.highest_epoch > epoch

    def claimed(self, epoch: int) -> bool:
        return any(e.epoch == epoch and e.kind == CLAIM for e in self.entries)

    def begin_of(self, epoch: int) -> int | None:
        return next((e.lsn for e in self.entries if e.epoch == epoch and e.kind == BEGIN), None)


NO_FENCE: Final = Fence()


def parse_fence(data: bytes, *, where: str) -> Fence:
    """Decode a fence file's bytes.

    A bad or short entry at the very end is a torn append (each entry is one ``write``): left
    out, for the next appender to cut. A bad entry with more bytes after it than one entry is
    damage: FenceCorruptError naming ``where`` and the byte offset.
    """
    entries: list[FenceEntry] = []
    offset = 0
    while offset < len(data):
        chunk = data[offset : offset + ENTRY_SIZE]
        problem = _entry_problem(chunk)
        if problem is not None:
            if len(data) - offset <= ENTRY_SIZE:
                break  # torn last entry
            raise FenceCorruptError(problem, file=where, offset=offset)
        epoch, kind, lsn, _reserved = _ENTRY.unpack_from(chunk)
        if kind not in _KIND_NAMES:
            raise FormatVersionError(
                f"{where}: fence entry at byte {offset} has kind {kind}, unknown to this "
                "reader; upgrade immortals to read this log"
            )
        entries.append(FenceEntry(epoch, kind, lsn))
        offset += ENTRY_SIZE
    return Fence(tuple(entries), offset, len(data) - offset, zlib.crc32(data[:offset]))


def _entry_problem(chunk: bytes) -> str | None:
    if len(chunk) < ENTRY_SIZE:
        return f"entry cut short ({len(chunk)} of {ENTRY_SIZE} bytes)"
    (crc,) = _CRC.unpack_from(chunk, ENTRY_SIZE - 4)
    if zlib.crc32(chunk[: ENTRY_SIZE - 4]) != crc:
        return "entry checksum mismatch"
    epoch, kind, lsn, reserved = _ENTRY.unpack_from(chunk)
    if reserved != 0 or epoch == 0 or (kind == CLAIM and lsn != 0) or (kind == BEGIN and lsn == 0):
        return "entry fields out of range"
    return None


def fence_path(log_dir: str | os.PathLike[str]) -> Path:
    return Path(log_dir) / FENCE_NAME


def read_fence(log_dir: str | os.PathLike[str]) -> Fence:
    """The fence of a log (empty when the file is absent: nothing is fenced, as in old logs)."""
    path = fence_path(log_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return NO_FENCE
    return parse_fence(data, where=str(path))


def claim(log_dir: str | os.PathLike[str], epoch: int) -> Fence:
    """Append ``claim epoch``: from now on every writer of a lower epoch refuses to append.

    The first step of a takeover, done before reading the tail so that a zombie that checks the
    fence before each append cannot slip in records the taker's tail read would miss. Refused
    with FencedError when an entry of ``epoch`` or higher exists (epochs are never reused).
    Returns the fence including the new entry.
    """
    if epoch <= 0:
        raise LogError(f"epoch must be positive, not {epoch}")
    return _append(log_dir, FenceEntry(epoch, CLAIM, 0))


def begin(log_dir: str | os.PathLike[str], epoch: int, lsn: int) -> Fence:
    """Append ``begin epoch at lsn`` (the taker's second step, after reading the tail)."""
    return _append(log_dir, FenceEntry(epoch, BEGIN, lsn))


def _append(log_dir: str | os.PathLike[str], entry: FenceEntry) -> Fence:
    path = fence_path(log_dir)
    existed = path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one appender at a time on this machine
        size = os.fstat(fd).st_size
        fence = parse_fence(os.pread(fd, size, 0), where=str(path))
        if entry.kind == CLAIM and fence.highest_epoch >= entry.epoch:
            raise FencedError(
                f"{path}: cannot claim epoch {entry.epoch}: epoch {fence.highest_epoch} already "
                "claimed this log; claim a higher epoch"
            )
        if entry.kind == BEGIN:
            if fence.fences(entry.epoch):
                raise FencedError(
                    f"{path}: epoch {fence.highest_epoch} claimed this log after epoch "
                    f"{entry.epoch} did; epoch {entry.epoch} has lost it"
                )
            if not fence.claimed(entry.epoch):
                raise LogError(f"{path}: epoch {entry.epoch} must be claimed before it begins")
            if fence.begin_of(entry.epoch) is not None:
                raise LogError(
                    f"{path}: epoch {entry.epoch} already began at LSN "
                    f"{fence.begin_of(entry.epoch)}; take over with a new claim"
                )
        if fence.torn:
            os.ftruncate(fd, fence.size)  # cut a torn last entry before appending after it
        data = entry.encode()
        os.lseek(fd, fence.size, os.SEEK_SET)
        if os.write(fd, data) != len(data):
            raise LogError(f"{path}: short write appending a fence entry")
        os.fsync(fd)
        if not existed:
            fsync_dir(Path(log_dir))
        mark_fenced(Path(log_dir))  # readers that predate the fence must refuse this log now
        whole = (*fence.entries, entry)
        return Fence(whole, fence.size + ENTRY_SIZE, 0, zlib.crc32(data, fence.crc))
    finally:
        os.close(fd)  # releases the flock


class FenceWatch:
    """A writer's cheap, repeated question: has a higher epoch claimed my log?

    Keeps the fence file open and compares its size (one ``fstat``) with the size last parsed;
    the file is re-read only when it grew. While the file does not exist, one ``fstat`` of the
    log directory answers instead: the file's creation changes the directory's mtime, and only
    then is opening it tried (a failed ``open`` per append would cost several microseconds).
    """

    def __init__(self, log_dir: Path) -> None:
        self._path = fence_path(log_dir)
        self._dir_fd = os.open(log_dir, os.O_RDONLY)
        self._dir_mtime = -1
        self._fd = -1
        self._size = -1
        self.fence: Fence = NO_FENCE
        self.highest_epoch = 0
        self.refresh()

    def refresh(self) -> Fence:
        """The current fence (re-read only if the file's size changed)."""
        if self._fd < 0:
            mtime = os.fstat(self._dir_fd).st_mtime_ns
            if mtime == self._dir_mtime:
                return self.fence
            try:
                self._fd = os.open(self._path, os.O_RDONLY)
            except FileNotFoundError:
                # Timestamps are coarse (a few ms on ext4): a file created in the same tick as
                # the change seen leaves the mtime as it was. Trust an mtime only once it is old.
                if time.time_ns() - mtime > _MTIME_TRUSTED_AFTER_NS:
                    self._dir_mtime = mtime
                return self.fence
        size = os.fstat(self._fd).st_size
        if size != self._size:
            self.fence = parse_fence(os.pread(self._fd, size, 0), where=str(self._path))
            self.highest_epoch = self.fence.highest_epoch
            self._size = size
        return self.fence

    def fences(self, epoch: int) -> bool:
        """Whether an entry of an epoch above ``epoch`` exists now."""
        if self._fd < 0 or os.fstat(self._fd).st_size != self._size:
            self.refresh()
        return self.highest_epoch > epoch

    def close(self) -> None:
        for fd in (self._fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._dir_fd = -1
