"""The sans-IO frame codec, fed whole, byte by byte, in random pieces, and with garbage."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logformat import (
    FormatVersionError,
    FrameDecoder,
    FrameEncoder,
    FrameError,
    LogError,
    decode_frame,
)
from logformat._frame import HEADER_SIZE, build_frame, parse_header
from tests.strategies import records


def _encode(batch: list[Any], first_lsn: int = 1, epoch: int = 3) -> bytes:
    enc = FrameEncoder()
    raw = enc.pack_records(batch)
    return enc.encode(raw, first_lsn=first_lsn, record_count=len(batch), epoch=epoch, wall_ns=77)


def _stream(batches: list[list[Any]]) -> bytes:
    out, lsn = b"", 1
    for batch in batches:
        out += _encode(batch, lsn)
        lsn += len(batch)
    return out


@given(records)
def test_round_trip(batch: list[Any]) -> None:
    frame = decode_frame(_encode(batch, first_lsn=10))
    h = frame.header
    assert (h.first_lsn, h.record_count, h.epoch, h.wall_ns) == (10, len(batch), 3, 77)
    assert h.codec in (0, 1)
    assert frame.records() == batch


@given(st.lists(records, min_size=1, max_size=4), st.data())
def test_decoder_gives_the_same_frames_however_the_bytes_arrive(
    batches: list[list[Any]], data: st.DataObject
) -> None:
    stream = _stream(batches)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    for feeding in (pieces, [stream], [bytes([b]) for b in stream]):
        decoder = FrameDecoder()
        got = []
        for piece in feeding:
            decoder.feed(piece)
            got.extend(f.records() for f in decoder.frames())
        assert got == batches
        assert decoder.buffered == 0


@given(records, st.binary(min_size=1, max_size=80))
def test_trailing_garbage_waits_or_raises_after_the_whole_frames(
    batch: list[Any], garbage: bytes
) -> None:
    decoder = FrameDecoder()
    decoder.feed(_encode(batch) + garbage)
    first = decoder.next_frame()
    assert first is not None and first.records() == batch
    with contextlib.suppress(FrameError, FormatVersionError):
        assert decoder.next_frame() is None  # too short to judge yet


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_the_package_error(data: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(data)
    try:
        for frame in decoder.frames():
            frame.records()
    except LogError:
        pass
    with contextlib.suppress(LogError):
        decode_frame(data).records()


def test_every_single_bit_flip_of_a_frame_is_detected() -> None:
    frame = _encode([{"m": "inc", "a": [1, 2]}, "x" * 30])
    for byte in range(len(frame)):
        for bit in range(8):
            damaged = bytearray(frame)
            damaged[byte] ^= 1 << bit
            with pytest.raises(LogError):
                decode_frame(bytes(damaged)).records()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 0}, "version 0"),
        ({"codec": 9}, "unknown codec"),
        ({"flags": 1}, "reserved flags"),
        ({"record_count": 0}, "no records"),
        ({"first_lsn": 0}, "LSN 0"),
        ({"raw_size": 2**31}, "bound"),
    ],
)
def test_header_fields_out_of_range(change: dict[str, int], message: str) -> None:
    fields: dict[str, Any] = {
        "codec": 0,
        "raw_size": 3,
        "first_lsn": 1,
        "record_count": 1,
        "epoch": 1,
        "wall_ns": 0,
    }
    fields.update(change)
    frame = build_frame(b"\x93\x01\x02", **fields)
    with pytest.raises(FrameError, match=message):
        parse_header(frame)


def test_a_future_version_asks_for_an_upgrade() -> None:
    frame = build_frame(
        b"\x01", codec=0, raw_size=1, first_lsn=1, record_count=1, epoch=1, wall_ns=0, version=2
    )
    with pytest.raises(FormatVersionError, match="upgrade"):
        parse_header(frame)


def test_bad_magic_and_short_input() -> None:
    frame = bytearray(_encode([1]))
    frame[0:4] = b"NOPE"
    with pytest.raises(FrameError, match="magic"):
        parse_header(bytes(frame))
    with pytest.raises(FrameError, match="header bytes"):
        parse_header(b"IMFR")
    assert len(_encode([1])) > HEADER_SIZE
