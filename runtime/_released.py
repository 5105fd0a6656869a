"""The released mark: the last LSN whose emits were printed, in ``LOG/released``.

Emits are printed after their step is durable, then this mark is written, without fsync (a
line may print twice across a crash: the documented at-least-once window). The mark is only
ever raised, so a damaged mark that reads too high would silently skip lines for good. It
therefore carries a checksum, and a mark that cannot be trusted makes recovery print every
retained emit again rather than skip one.

Layout (16 bytes, little-endian)::

    0   4  magic  b"IRM1"
    4   8  lsn    u64: the last LSN whose emits were written to the emit stream
    12  4  crc    u32: CRC-32 of bytes 0..11

A file of exactly 8 bytes is the layout before this one (a bare u64): still read, trusted
only up to the log's end.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MAGIC: Final = b"IRM1"
_LAYOUT: Final = struct.Struct("<4sQ")
SIZE: Final = _LAYOUT.size + 4


def encode(lsn: int) -> bytes:
    head = _LAYOUT.pack(MAGIC, lsn)
    return head + zlib.crc32(head).to_bytes(4, "little")


@dataclass(frozen=True, slots=True)
class Mark:
    """What the file says: ``lsn`` when it can be trusted, else None with ``problem``."""

    lsn: int | None
    problem: str | None = None


def decode(raw: bytes) -> Mark:
    if not raw:
        return Mark(0)  # never written: nothing was printed yet
    if len(raw) == 8:
        return Mark(int.from_bytes(raw, "little"))  # the unchecked layout of earlier versions
    if len(raw) != SIZE:
        return Mark(None, f"{len(raw)} bytes where the mark has {SIZE}")
    magic, lsn = _LAYOUT.unpack_from(raw)
    if magic != MAGIC:
        return Mark(None, "bad magic")
    if zlib.crc32(raw[: _LAYOUT.size]) != int.from_bytes(raw[_LAYOUT.size :], "little"):
        return Mark(None, "checksum mismatch")
    return Mark(int(lsn))


class ReleasedFile:
    """The open mark file of one instance's log."""

    def __init__(self, log_dir: Path) -> None:
        self.path = log_dir / "released"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def read(self) -> Mark:
        return decode(os.pread(self._fd, SIZE + 1, 0))

    def write(self, lsn: int) -> None:
        """Raise the mark (one small pwrite; no fsync, see the module docstring)."""
        os.pwrite(self._fd, encode(lsn), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
