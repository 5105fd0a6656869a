"""The exception tree of ``logformat``.

Every error this package raises on purpose derives from :class:`LogError`, so a tool can
catch one class at its boundary and print one clear line::

    LogError
    ├── NotALogError          the path is not a log directory (no meta file, wrong magic)
    ├── FormatVersionError    the log or a frame needs a newer reader than this one
    ├── LogLockedError        another live process holds the log's writer lock
    ├── FencedError           an epoch older than one already durable, or than one in the fence
    ├── CorruptLogError       a damaged frame that is not a torn tail (names file, offset, LSNs)
    │   ├── MissingRecordsError  records the log once held are gone (a segment cut or deleted)
    │   └── FenceCorruptError    a damaged entry in the middle of the fence file (``_fence``)
    ├── FrameError            bytes that do not decode as a frame (sans-IO decoder level)
    ├── ValueCodecError       a value that cannot be encoded, or bytes that do not decode
    ├── CheckpointError       a missing or damaged checkpoint file
    ├── CodeStoreError        a damaged file of the code store (``code/``)
    │   └── PickleRefusedError  a pickled checkpoint loaded without opting in
    └── LsnOutOfRangeError    an LSN below the log's start or above its end
        └── TrimmedError      an LSN that was trimmed away: its history cannot be replayed

Errors caused by the bytes on disk (the "remote" side, in h11's terms) carry where they were
found, so the message alone tells a person which file to look at.
"""

from __future__ import annotations


class LogError(Exception):
    """Base class of every error raised by ``logformat``."""


class NotALogError(LogError):
    """The path exists but is not an immortals log directory."""


class FormatVersionError(LogError):
    """The data was written by a newer format than this reader understands."""


class LogLockedError(LogError):
    """Another live process is writing this log; only one writer may hold it."""


class TrimRefusedError(LogError):
    """A trim would remove history that no sound checkpoint covers, leaving nothing to recover."""


class FencedError(LogError):
    """A writer with an older epoch tried to append after a newer epoch became durable, or after
    a newer epoch claimed the log in its fence file (FORMAT.md 8.1): it has lost the log."""


class FrameError(LogError):
    """Bytes that are not a valid frame. Raised by the sans-IO decoder, which knows no files."""


class CorruptLogError(LogError):
    """A damaged frame in the middle of a log: never skipped, always reported.

    ``first_lsn``/``last_lsn`` bound the records that cannot be read (``last_lsn`` is ``None``
    when the end of the damaged range cannot be known).
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str,
        offset: int,
        first_lsn: int | None,
        last_lsn: int | None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.offset = offset
        self.first_lsn = first_lsn
        self.last_lsn = last_lsn
        super().__init__(
            f"{file}: damaged frame at byte {offset} "
            f"(LSN {_range(first_lsn, last_lsn)}): {reason}. "
            "Run `immortals log verify` on the log for a full report."
        )


class MissingRecordsError(CorruptLogError):
    """Records the log once held are gone: a segment was cut short or deleted.

    The proof is a file that could only exist after those records did: a checkpoint (or a code
    version entry in ``meta.json``) beyond the log's last record, or a segment that starts past
    the end of the one before it. ``file`` names that proof; ``first_lsn..last_lsn`` are the
    LSNs missing. Appending would give new records LSNs that already had other records.
    """

    def __init__(self, evidence: str, *, file: str, first_lsn: int, last_lsn: int) -> None:
        self.reason = evidence
        self.file = file
        self.offset = 0
        self.first_lsn = first_lsn
        self.last_lsn = last_lsn
        LogError.__init__(
            self,
            f"{file}: LSNs {_range(first_lsn, last_lsn)} are missing from the log ({evidence}); "
            "restore the missing segments from a backup or replica, or move the log aside "
            "to start afresh",
        )


class ValueCodecError(LogError):
    """A value that the state/record codec cannot encode, or bytes it cannot decode."""


class CheckpointError(LogError):
    """A checkpoint file is missing, damaged, or of an unknown format."""


class PickleRefusedError(CheckpointError):
    """Loading this checkpoint would unpickle data, which runs code; the caller did not opt in."""


class CodeStoreError(LogError):
    """A file of the log's code store is damaged: that version's code is lost, not its steps."""


class LsnOutOfRangeError(LogError, IndexError):
    """An LSN outside the range the log holds."""


class TrimmedError(LsnOutOfRangeError):
    """An LSN below the first one a trimmed log still holds: that history is gone for good."""

    def __init__(self, lsn: int, first_lsn: int) -> None:
        self.lsn = lsn
        self.first_lsn = first_lsn
        super().__init__(
            f"LSN {lsn} is no longer in the log (trimmed, or its segment was lost): "
            f"the first LSN it holds is {first_lsn}"
        )


def _range(first: int | None, last: int | None) -> str:
    if first is None:
        return "unknown"
    if last is None:
        return f"{first}..?"
    if first == last:
        return str(first)
    return f"{first}..{last}"
