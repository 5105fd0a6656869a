"""Frame encoding and decoding, with no I/O: bytes in, frames out (h11's sans-IO style).

A frame is the unit of one group commit: a fixed 48-byte little-endian header followed by a
body holding ``record_count`` msgpack values, compressed with zstd when that makes it smaller.
FORMAT.md is the normative description; this module is one implementation of it.

Two checksums, because a frame can be damaged in two ways that must be told apart:
``body_crc`` covers the stored body; ``header_crc`` covers header bytes 0..43, which include
``body_crc``, so a header that checks out vouches for the whole frame. A header whose own checksum
holds can be trusted for its sizes and LSNs even when the body is damaged, which is how a
damaged frame in the middle of a log is reported with its exact LSN range.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import zstandard

from ._errors import FormatVersionError, FrameError, ValueCodecError
from ._values import new_packer, unpack_values, widen_big_ints

FRAME_MAGIC: Final = b"IMFR"
FRAME_VERSION: Final = 1
HEADER_SIZE: Final = 48
CODEC_NONE: Final = 0
CODEC_ZSTD: Final = 1
MAX_BODY_SIZE: Final = 1 << 30  # a sanity bound: a larger size field is damage, not data

# magic, version, codec, flags, first_lsn, record_count, epoch, wall_ns, raw, stored, body_crc
_HEADER: Final = struct.Struct("<4sBBHQIIqIII")
assert _HEADER.size == HEADER_SIZE - 4
_CRC: Final = struct.Struct("<I")

ByteView = bytes | bytearray | memoryview
"""Anything the decoders read from without copying: file bytes, a receive buffer, an mmap view."""


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The decoded fixed header of one frame."""

    version: int
    codec: int
    flags: int
    first_lsn: int
    record_count: int
    epoch: int
    wall_ns: int
    raw_size: int
    stored_size: int
    body_crc: int

    @property
    def last_lsn(self) -> int:
        return self.first_lsn + self.record_count - 1

    @property
    def frame_size(self) -> int:
        return HEADER_SIZE + self.stored_size


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole, checked frame: its header and its still-encoded stored body."""

    header: FrameHeader
    body: bytes

    def records(self) -> list[Any]:
        """Decompress and decode the body into ``record_count`` values."""
        return decode_body(self.header, self.body)


class FrameEncoder:
    """Turns lists of records into frame bytes. Keeps a packer and a compressor to reuse."""

    def __init__(self, *, level: int = 1, min_compress: int = 64) -> None:
        self._packer = new_packer()
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._min_compress = min_compress

    def pack_records(self, records: Sequence[Any]) -> bytes:
        """Encode records to a raw (uncompressed) body. May raise ValueCodecError."""
        return b"".join(self.pack_each(records))

    def pack_each(self, records: Sequence[Any]) -> list[bytes]:
        """Each record's encoding, separately (the writer splits large appends by size)."""
        pack = self._packer.pack
        try:
            try:
                return [pack(r) for r in records]
            except OverflowError:  # an integer beyond 64 bits somewhere: rare, so retry once
                self._packer.reset()
                return [pack(widen_big_ints(r)) for r in records]
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise ValueCodecError(f"cannot store record: {exc}") from exc

    def encode(
        self, raw_body: bytes, *, first_lsn: int, record_count: int, epoch: int, wall_ns: int
    ) -> bytes:
        """Build one frame from an already packed raw body."""
        if len(raw_body) > MAX_BODY_SIZE:
            raise ValueCodecError(f"frame body of {len(raw_body)} bytes exceeds {MAX_BODY_SIZE}")
        codec = CODEC_NONE
        stored = raw_body
        if len(raw_body) >= self._min_compress:
            packed = self._compressor.compress(raw_body)
            if len(packed) < len(raw_body):
                codec, stored = CODEC_ZSTD, packed
        return build_frame(
            stored,
            codec=codec,
            raw_size=len(raw_body),
            first_lsn=first_lsn,
            record_count=record_count,
            epoch=epoch,
            wall_ns=wall_ns,
        )


def build_frame(
    stored: bytes,
    *,
    codec: int,
    raw_size: int,
    first_lsn: int,
    record_count: int,
    epoch: int,
    wall_ns: int,
    version: int = FRAME_VERSION,
    flags: int = 0,
) -> bytes:
    """Assemble header and stored body; the low-level half of :meth:`FrameEncoder.encode`."""
    head = _HEADER.pack(
        FRAME_MAGIC,
        version,
        codec,
        flags,
        first_lsn,
        record_count,
        epoch,
        wall_ns,
        raw_size,
        len(stored),
        zlib.crc32(stored),
    )
    return head + _CRC.pack(zlib.crc32(head)) + stored


def parse_header(buf: ByteView, offset: int = 0) -> FrameHeader:
    """Check and decode the 48-byte header at ``offset``. Raises FrameError if it is not one."""
    if len(buf) - offset < HEADER_SIZE:
        raise FrameError(f"need {HEADER_SIZE} header bytes, have {len(buf) - offset}")
    fields = _HEADER.unpack_from(buf, offset)
    if fields[0] != FRAME_MAGIC:
        raise FrameError(f"bad magic {bytes(fields[0])!r}")
    (crc,) = _CRC.unpack_from(buf, offset + HEADER_SIZE - 4)
    if zlib.crc32(buf[offset : offset + HEADER_SIZE - 4]) != crc:
        raise FrameError("header checksum mismatch")
    header = FrameHeader(*fields[1:])
    if header.version > FRAME_VERSION:
        raise FormatVersionError(
            f"frame format version {header.version} is newer than this reader "
            f"(reads up to {FRAME_VERSION}); upgrade immortals to read this log"
        )
    if header.version == 0:
        raise FrameError("frame format version 0 is invalid")
    if header.codec not in (CODEC_NONE, CODEC_ZSTD):
        raise FrameError(f"unknown codec {header.codec}")
    if header.flags != 0:
        raise FrameError(f"reserved flags are set ({header.flags:#x})")
    if header.record_count == 0:
        raise FrameError("frame holds no records")
    if header.first_lsn == 0:
        raise FrameError("LSN 0 is invalid (LSNs start at 1)")
    if header.stored_size > MAX_BODY_SIZE or header.raw_size > MAX_BODY_SIZE:
        raise FrameError(f"body size {header.stored_size} is beyond the {MAX_BODY_SIZE} bound")
    if header.codec == CODEC_NONE and header.raw_size != header.stored_size:
        raise FrameError("uncompressed frame whose raw and stored sizes differ")
    return header


def check_body(header: FrameHeader, body: ByteView) -> None:
    """Raise FrameError unless ``body`` is the stored body the header vouches for."""
    if len(body) != header.stored_size:
        raise FrameError(f"body is {len(body)} bytes, header says {header.stored_size}")
    if zlib.crc32(body) != header.body_crc:
        raise FrameError("body checksum mismatch")


_decompressor = zstandard.ZstdDecompressor()


def raw_body(header: FrameHeader, body: ByteView) -> bytes:
    """The decompressed body (``raw_size`` bytes). Raises FrameError on any mismatch."""
    raw: ByteView = body
    if header.codec == CODEC_ZSTD:
        try:
            raw = _decompressor.decompress(body, max_output_size=header.raw_size)
        except zstandard.ZstdError as exc:
            raise FrameError(f"zstd body does not decompress: {exc}") from exc
    if len(raw) != header.raw_size:
        raise FrameError(f"body decompresses to {len(raw)} bytes, header says {header.raw_size}")
    return bytes(raw)


def decode_body(header: FrameHeader, body: ByteView) -> list[Any]:
    """Decompress a checked body and decode its records. Raises FrameError on any mismatch."""
    try:
        return unpack_values(raw_body(header, body), header.record_count)
    except ValueCodecError as exc:
        raise FrameError(str(exc)) from exc


def decode_frame(buf: ByteView, offset: int = 0) -> Frame:
    """Decode one whole frame at ``offset`` of ``buf``; FrameError if it is not whole and sound."""
    header = parse_header(buf, offset)
    start = offset + HEADER_SIZE
    end = start + header.stored_size
    if end > len(buf):
        raise FrameError(f"frame needs {end - offset} bytes, have {len(buf) - offset}")
    body = bytes(buf[start:end])
    check_body(header, body)
    return Frame(header, body)


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, take whole frames out.

    ``next_frame()`` returns a frame, or ``None`` when more bytes are needed; it raises
    :class:`FrameError` (or :class:`FormatVersionError`) when the bytes cannot be a frame, after
    which the decoder is unusable: a byte stream has no resynchronisation point a decoder could
    trust on its own (the log reader decides what a bad frame means from where it stands).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._failed: FrameError | FormatVersionError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed by a returned frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        if self._failed is not None:
            raise self._failed
        if self.buffered < HEADER_SIZE:
            return None
        try:
            header = parse_header(self._buf, self._pos)
            end = self._pos + header.frame_size
            if end > len(self._buf):
                return None
            body = bytes(self._buf[self._pos + HEADER_SIZE : end])
            check_body(header, body)
        except (FrameError, FormatVersionError) as exc:
            self._failed = exc
            raise
        self._pos = end
        if self._pos > 1 << 20 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return Frame(header, body)

    def frames(self) -> Iterator[Frame]:
        """Every whole frame currently buffered."""
        while (frame := self.next_frame()) is not None:
            yield frame
