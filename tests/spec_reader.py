"""A log reader written from logformat/FORMAT.md alone, to prove the spec is enough.

It deliberately shares no code with ``logformat``: only the standard library and the generic
``msgpack`` and ``zstandard`` libraries. If this reader and ``logformat`` disagree on a fixture,
one of them does not follow the spec.
"""

from __future__ import annotations

import datetime
import decimal
import json
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zstandard


class SpecError(Exception):
    pass


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _ext(code: int, data: bytes) -> Any:
    if code in (1, 2, 3):
        items = msgpack.unpackb(data, ext_hook=_ext, raw=False, strict_map_key=False)
        return {1: tuple, 2: set, 3: frozenset}[code](items)
    if code == 4:
        return datetime.datetime.fromisoformat(data.decode("utf-8"))
    if code == 5:
        return datetime.date.fromisoformat(data.decode("utf-8"))
    if code == 6:
        return decimal.Decimal(data.decode("utf-8"))
    if code == 7:
        return uuid.UUID(bytes=data)
    if code == 8:
        return int.from_bytes(data, "big", signed=True)
    raise SpecError(f"ext type {code} is not defined in version 1")


def decode_values(raw: bytes, count: int) -> list[Any]:
    unpacker = msgpack.Unpacker(ext_hook=_ext, raw=False, strict_map_key=False)
    unpacker.feed(raw)
    out = [unpacker.unpack() for _ in range(count)]
    if unpacker.tell() != len(raw):
        raise SpecError("bytes left after the records")
    return out


@dataclass
class Frame:
    offset: int
    first_lsn: int
    epoch: int
    wall_ns: int
    records: list[Any]


def read_segment_header(data: bytes) -> tuple[int, int]:
    """The segment's first LSN and its read_version (section 3; 2: it may have a zero tail)."""
    if len(data) < 32 or data[:8] != b"IMLOGSEG":
        raise SpecError("not a segment")
    read_version, _write_version, header_size, first_lsn, reserved, crc = struct.unpack_from(
        "<HHIQII", data, 8
    )
    if _crc(data[:28]) != crc:
        raise SpecError("segment header CRC")
    if read_version > 2:
        raise SpecError("needs a newer reader")
    if header_size != 32 or reserved != 0:
        raise SpecError("segment header fields")
    return int(first_lsn), int(read_version)


def read_frame(data: bytes, offset: int) -> tuple[Frame, int] | None:
    """The sound frame at ``offset`` and where the next one starts, or None (section 4.1)."""
    if offset + 48 > len(data) or data[offset : offset + 4] != b"IMFR":
        return None
    (
        version,
        codec,
        flags,
        first_lsn,
        count,
        epoch,
        wall_ns,
        raw_size,
        stored_size,
        body_crc,
        header_crc,
    ) = struct.unpack_from("<BBHQIIqIIII", data, offset + 4)
    if _crc(data[offset : offset + 44]) != header_crc:
        return None
    if version != 1 or codec not in (0, 1) or flags or not count or not first_lsn:
        return None
    end = offset + 48 + stored_size
    if end > len(data):
        return None
    body = data[offset + 48 : end]
    if _crc(body) != body_crc:
        return None
    raw = (
        body
        if codec == 0
        else zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_size)
    )
    if len(raw) != raw_size:
        return None
    return Frame(offset, first_lsn, epoch, wall_ns, decode_values(raw, count)), end


@dataclass
class SegmentRead:
    first_lsn: int
    frames: list[Frame]
    end: int  # where the sound part ends
    torn: bool  # an unsound tail with no sound frame after it
    void: bool = False  # the rest is a fenced-out writer's (section 8.1)
    zero_tail: bool = False  # the rest is zeros in a version-2 segment (section 3.1)


def read_fence(path: Path) -> list[tuple[int, int, int]]:
    """(epoch, kind, lsn) of each whole entry of a log's fence file (section 8.1)."""
    try:
        data = (path / "fence").read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for offset in range(0, len(data), 24):
        chunk = data[offset : offset + 24]
        good = len(chunk) == 24 and _crc(chunk[:20]) == struct.unpack_from("<I", chunk, 20)[0]
        if good:
            epoch, kind, lsn, reserved = struct.unpack_from("<IIQI", chunk)
            good = reserved == 0 and kind in (1, 2)
        if not good:
            if len(data) - offset <= 24:
                break  # a torn last entry
            raise SpecError(f"fence entry at byte {offset} is damaged")
        out.append((epoch, kind, lsn))
    return out


def void_from(fence: list[tuple[int, int, int]], epoch: int) -> int | None:
    begins = [lsn for e, kind, lsn in fence if kind == 2 and e > epoch]
    return min(begins) if begins else None


def _is_void(fence: list[tuple[int, int, int]], epoch: int, lsn: int) -> bool:
    start = void_from(fence, epoch)
    return start is not None and lsn >= start


def _readable_header(data: bytes, offset: int) -> tuple[int, int] | None:
    """(first_lsn, epoch) of a frame header whose own CRC holds, whatever its body."""
    if offset + 48 > len(data) or data[offset : offset + 4] != b"IMFR":
        return None
    if _crc(data[offset : offset + 44]) != struct.unpack_from("<I", data, offset + 44)[0]:
        return None
    first_lsn, _count, epoch = struct.unpack_from("<QII", data, offset + 8)
    return int(first_lsn), int(epoch)


def _void_at(
    fence: list[tuple[int, int, int]],
    data: bytes,
    offset: int,
    expected: int,
    last_epoch: int | None,
) -> bool:
    head = _readable_header(data, offset)
    if head is not None:
        return _is_void(fence, head[1], head[0])
    return last_epoch is not None and _is_void(fence, last_epoch, expected)


def read_segment(data: bytes, fence: list[tuple[int, int, int]] | None = None) -> SegmentRead:
    """Every sound frame; at damage, apply the torn-tail rule of section 7; stop at void bytes."""
    first, version = read_segment_header(data)
    expected, offset = first, 32
    frames: list[Frame] = []
    while offset < len(data):
        if version >= 2 and not any(data[offset:]):  # 3.1: zeros to the end are no data
            return SegmentRead(first, frames, offset, False, zero_tail=True)
        if fence and _void_at(fence, data, offset, expected, frames[-1].epoch if frames else None):
            return SegmentRead(first, frames, offset, False, True)
        found = read_frame(data, offset)
        if found is None or found[0].first_lsn != expected:
            for later in range(offset + 1, len(data)):
                if data[later : later + 4] == b"IMFR":
                    candidate = read_frame(data, later)
                    if candidate is not None and candidate[0].first_lsn >= expected:
                        raise SpecError(f"corruption at byte {offset}, LSN {expected}")
            return SegmentRead(first, frames, offset, True)
        frame, offset = found
        frames.append(frame)
        expected = frame.first_lsn + len(frame.records)
    return SegmentRead(first, frames, offset, False)


def read_log(path: Path) -> list[tuple[int, Any]]:
    """(lsn, record) for every record of a log directory, in order."""
    meta = json.loads((path / "meta.json").read_text("utf-8"))
    if meta["format"] != "immortals-log" or meta["format_version"] > 3:
        # 2: it has a fence file (8.1); 3: it may hold segments with a zero tail (3.1)
        raise SpecError("not a log of version 1, 2 or 3")
    fence = read_fence(path)
    out: list[tuple[int, Any]] = []
    names = []
    for seg in sorted(p for p in path.iterdir() if p.name.endswith(".seg")):
        head = _readable_header(seg.read_bytes()[:80], 32)
        if head is not None and _is_void(fence, head[1], head[0]):
            continue  # a segment a fenced-out writer created: not part of the log
        names.append(seg)
    for i, seg in enumerate(names):
        part = read_segment(seg.read_bytes(), fence)
        if part.torn and i != len(names) - 1:
            raise SpecError(f"damage in sealed segment {seg.name}")
        if out and part.first_lsn != out[-1][0] + 1:
            raise SpecError("segments do not continue the LSNs")
        for frame in part.frames:
            out.extend((frame.first_lsn + j, r) for j, r in enumerate(frame.records))
    return out


def read_checkpoint(path: Path) -> tuple[int, Any]:
    """(lsn, state) of a msgpack checkpoint file (section 5)."""
    data = path.read_bytes()
    if data[:8] != b"IMCHKPT\x00":
        raise SpecError("not a checkpoint")
    (
        version,
        codec,
        compression,
        flags,
        lsn,
        _created,
        raw_size,
        stored_size,
        body_crc,
        header_crc,
    ) = struct.unpack_from("<HBBIQqQQII", data, 8)
    if _crc(data[:52]) != header_crc or version != 1 or flags or codec != 1:
        raise SpecError("checkpoint header")
    body = data[56 : 56 + stored_size]
    if len(body) != stored_size or _crc(body) != body_crc:
        raise SpecError("checkpoint body")
    raw = (
        zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_size)
        if compression
        else body
    )
    return lsn, decode_values(raw, 1)[0]
