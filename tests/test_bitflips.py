"""Damage anywhere is found and reported with its LSN range; nothing is ever silently skipped.

Every flip here is a single bit, which CRC-32 always catches, so every damaged log must be
reported as damaged. The expected LSN range of each flip is worked out from the layout the writer
recorded while appending, independently of the scanner under test.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from logformat import (
    CorruptLogError,
    LogReader,
    LogWriter,
    LsnOutOfRangeError,
    verify_log,
)
from logformat._frame import HEADER_SIZE
from tests.logutil import new_meta, record

SEGMENT_HEADER = 32
SEGMENT_SIZE = 300
GROUPS = [3, 5, 2, 1, 4, 6, 2, 3, 2]  # four segments; LSN 11 alone in the middle of the 2nd
TOTAL = sum(GROUPS)
VALUES = [record(i) for i in range(1, TOTAL + 1)]


@dataclass(frozen=True)
class FrameAt:
    segment: Path
    offset: int
    size: int
    first_lsn: int
    last_lsn: int


@dataclass(frozen=True)
class Expected:
    """What verification must say about one flip."""

    file: str
    kind: str
    offset: int
    first_lsn: int | None
    last_lsn: int | None


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bitflips") / "original"
    with LogWriter.open(path, create=new_meta(), sync=False, segment_size=SEGMENT_SIZE) as writer:
        lsn = 1
        for size in GROUPS:
            writer.append(VALUES[lsn - 1 : lsn - 1 + size], wall_ns=lsn * 1_000)
            lsn += size
    return path


@pytest.fixture(scope="module")
def layout(original: Path) -> list[FrameAt]:
    with LogReader(original) as reader:
        return [
            FrameAt(
                original / f"{loc.segment:020d}.seg",
                loc.offset,
                HEADER_SIZE + loc.stored_size,
                loc.first_lsn,
                loc.last_lsn,
            )
            for loc in reader._index.all_frames()
        ]


def _segments(log: Path) -> list[Path]:
    return sorted(log.glob("*.seg"))


def _copy(original: Path, target: Path, *, with_index: bool = False) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        original,
        target,
        ignore=shutil.ignore_patterns("LOCK")
        if with_index
        else shutil.ignore_patterns("index", "LOCK"),
    )
    return target


def _flip(path: Path, offset: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def _expected(layout: list[FrameAt], segment_name: str, offset: int) -> Expected:
    """The damage a single flip at ``offset`` of ``segment_name`` must be reported as."""
    names = [p.name for p in sorted({f.segment for f in layout})]
    index = names.index(segment_name)
    is_last_segment = index == len(names) - 1
    if offset < SEGMENT_HEADER:
        # The segment cannot be trusted; its records are those up to the next segment's first.
        last = None if is_last_segment else int(Path(names[index + 1]).stem) - 1
        return Expected(segment_name, "bad-segment-header", 0, int(Path(segment_name).stem), last)
    (frame,) = [
        f
        for f in layout
        if f.segment.name == segment_name and f.offset <= offset < f.offset + f.size
    ]
    is_last_frame = frame is layout[-1]
    in_header = offset < frame.offset + HEADER_SIZE
    # A sound header vouches for its own LSNs; a damaged one is bounded by the next sound frame,
    # which for the very last frame of the log does not exist.
    last = None if is_last_frame and in_header else frame.last_lsn
    kind = "torn-tail" if is_last_frame else "corrupt"
    return Expected(segment_name, kind, frame.offset, frame.first_lsn, last)


def _check_verify(log: Path, expected: Expected, where: object) -> None:
    report = verify_log(log)
    assert not report.ok, where
    got = [
        Expected(d.file.name, d.damage.kind, d.damage.offset, d.damage.first_lsn, d.damage.last_lsn)
        for d in report.damaged
    ]
    assert got == [expected], where
    assert expected.first_lsn is not None
    if expected.kind == "corrupt" and expected.last_lsn is not None:
        lost = expected.last_lsn - expected.first_lsn + 1
        assert report.records == TOTAL - lost, where
        assert report.last_lsn == TOTAL, where  # verification went on past the damage


def _check_writer_refuses(log: Path, expected: Expected, where: object) -> None:
    before = {p.name: p.read_bytes() for p in _segments(log)}
    with pytest.raises(CorruptLogError) as caught:
        LogWriter.open(log, sync=False).close()
    err = caught.value
    assert Path(err.file).name == expected.file, where
    assert (err.offset, err.first_lsn, err.last_lsn) == (
        expected.offset,
        expected.first_lsn,
        expected.last_lsn,
    ), where
    message = str(err)
    assert expected.file in message and f"byte {expected.offset}" in message, where
    assert f"LSN {expected.first_lsn}" in message, where
    # Nothing was cut: mid-log damage is never repaired by throwing records away.
    assert {p.name: p.read_bytes() for p in _segments(log)} == before, where


def _check_reader(log: Path, expected: Expected, rng: random.Random, where: object) -> None:
    """A reader (index rebuilt from the damaged segments) reads up to the damage, never past it."""
    first = expected.first_lsn
    assert first is not None
    with LogReader(log) as reader:
        assert reader.last_lsn == first - 1, where
        for lsn in {1, first - 1, rng.randint(1, max(1, first - 1))}:
            if 1 <= lsn < first:
                assert reader.read(lsn).value == VALUES[lsn - 1], where
        after = {first, TOTAL, rng.randint(first, TOTAL)}
        if expected.last_lsn is not None:
            after |= {expected.last_lsn, min(TOTAL, expected.last_lsn + 1)}
        for lsn in sorted(after):
            if expected.kind == "torn-tail":  # the end of the log: absent, not damaged
                with pytest.raises(LsnOutOfRangeError):
                    reader.read(lsn)
            else:
                with pytest.raises(CorruptLogError) as caught:
                    reader.read(lsn)
                assert caught.value.first_lsn == first, where
        assert [r.value for r in reader.records()] == VALUES[: first - 1], where


def test_the_undamaged_log_verifies_clean(original: Path, layout: list[FrameAt]) -> None:
    segments = _segments(original)
    assert len(segments) == 4
    middle = [f for f in layout if f.segment == segments[1]]
    assert [f.first_lsn for f in middle] == [9, 11, 12]  # LSN 11 is a whole frame in the middle
    assert [f.first_lsn for f in layout if f.segment == segments[-1]] == [24, 27]
    report = verify_log(original)
    assert report.ok
    assert (report.frames, report.records, report.last_lsn) == (len(GROUPS), TOTAL, TOTAL)
    assert report.damaged == []


def test_every_bit_of_a_small_middle_frame_is_caught_with_its_lsns(
    original: Path, layout: list[FrameAt], tmp_path: Path
) -> None:
    frame = next(f for f in layout if f.first_lsn == 11)
    assert frame.first_lsn == frame.last_lsn and frame.size < 120
    log = _copy(original, tmp_path / "flip")
    target = log / frame.segment.name
    pristine = target.read_bytes()
    rng = random.Random(5)
    for byte in range(frame.offset, frame.offset + frame.size):
        expected = _expected(layout, frame.segment.name, byte)
        assert (expected.first_lsn, expected.last_lsn) == (11, 11)
        for bit in range(8):
            _flip(target, byte, bit)
            where = (byte, bit)
            _check_verify(log, expected, where)
            _check_writer_refuses(log, expected, where)
            _check_reader(log, expected, rng, where)
            _flip(target, byte, bit)
            assert target.read_bytes() == pristine
    assert verify_log(log).ok


def _random_positions(
    original: Path, rng: random.Random, per_segment: int
) -> list[tuple[Path, int]]:
    positions = []
    for seg in _segments(original):
        size = seg.stat().st_size
        positions += [(seg, rng.randrange(SEGMENT_HEADER)) for _ in range(3)]  # its header
        positions += [(seg, rng.randrange(SEGMENT_HEADER, size)) for _ in range(per_segment)]
    return positions


def test_random_flips_anywhere_are_reported_by_verify_writer_and_reader(
    original: Path, layout: list[FrameAt], tmp_path: Path
) -> None:
    rng = random.Random(7)
    kinds = set()
    for trial, (seg, offset) in enumerate(_random_positions(original, rng, per_segment=30)):
        log = _copy(original, tmp_path / "flip")
        _flip(log / seg.name, offset, rng.randrange(8))
        expected = _expected(layout, seg.name, offset)
        kinds.add(expected.kind)
        where = (trial, seg.name, offset)
        _check_verify(log, expected, where)
        if expected.kind == "torn-tail":
            # The last frame of the log is its tail: the writer cuts it back, and says so.
            frame = layout[-1]
            with LogWriter.open(log, sync=False) as writer:
                assert writer.next_lsn == frame.first_lsn, where
                assert writer.recovery is not None and writer.recovery.truncated is not None
                assert writer.recovery.truncated.offset == frame.offset
            assert (log / seg.name).stat().st_size == frame.offset
            assert verify_log(log).ok
        else:
            _check_writer_refuses(log, expected, where)
            _check_reader(log, expected, rng, where)
    assert kinds == {"bad-segment-header", "corrupt", "torn-tail"}


@pytest.mark.parametrize("lsn", [4, 11, 16, TOTAL])
def test_a_reader_with_a_sound_index_still_refuses_a_damaged_frame(
    original: Path, layout: list[FrameAt], tmp_path: Path, lsn: int
) -> None:
    """The index predates the damage (bit rot after writing): reads of that frame still fail."""
    frame = next(f for f in layout if f.first_lsn <= lsn <= f.last_lsn)
    log = _copy(original, tmp_path / "rot", with_index=True)
    for byte in (frame.offset + 3, frame.offset + HEADER_SIZE + 1):  # header, then body
        _flip(log / frame.segment.name, byte, 2)
        with LogReader(log) as reader:
            assert reader.read(frame.first_lsn - 1).value == VALUES[frame.first_lsn - 2]
            for inside in range(frame.first_lsn, frame.last_lsn + 1):
                with pytest.raises(CorruptLogError) as caught:
                    reader.read(inside)
                assert caught.value.first_lsn == frame.first_lsn
                assert caught.value.last_lsn == frame.last_lsn
            got: list[Any] = []
            with pytest.raises(CorruptLogError):
                got.extend(r.value for r in reader.records())
            assert got == VALUES[: frame.first_lsn - 1]
        _flip(log / frame.segment.name, byte, 2)


def test_damage_in_two_segments_is_reported_twice_and_the_writer_names_the_first(
    original: Path, layout: list[FrameAt], tmp_path: Path
) -> None:
    log = _copy(original, tmp_path / "two")
    segments = _segments(original)
    second = next(f for f in layout if f.segment == segments[1] and f.first_lsn == 12)
    third = next(f for f in layout if f.segment == segments[2])
    _flip(log / second.segment.name, second.offset + 60, 1)
    _flip(log / third.segment.name, third.offset + 5, 6)
    report = verify_log(log)
    assert not report.ok
    ranges = [(d.file.name, d.damage.first_lsn, d.damage.last_lsn) for d in report.damaged]
    assert ranges == [
        (second.segment.name, second.first_lsn, second.last_lsn),
        (third.segment.name, third.first_lsn, third.last_lsn),
    ]
    expected = _expected(layout, second.segment.name, second.offset + 60)
    _check_writer_refuses(log, expected, "two")


def test_a_damaged_header_of_the_last_segment_is_not_cut_away(
    original: Path, tmp_path: Path
) -> None:
    """Unlike a torn new segment, a damaged header in front of whole frames hides records."""
    log = _copy(original, tmp_path / "lasthead")
    last = _segments(log)[-1]
    _flip(last, 20, 3)  # first_lsn field
    expected = Expected(last.name, "bad-segment-header", 0, int(last.stem), None)
    _check_verify(log, expected, "last header")
    _check_writer_refuses(log, expected, "last header")
    _check_reader(log, expected, random.Random(1), "last header")


def test_damage_before_the_last_frame_of_the_last_segment_is_not_a_torn_tail(
    original: Path, layout: list[FrameAt], tmp_path: Path
) -> None:
    """A sound frame after the damage proves the damage is not a write cut short."""
    log = _copy(original, tmp_path / "lastseg")
    frame = layout[-2]
    assert frame.segment == _segments(original)[-1]
    for byte in (frame.offset + 9, frame.offset + HEADER_SIZE + 4):  # header, then body
        _flip(log / frame.segment.name, byte, 4)
        expected = Expected(frame.segment.name, "corrupt", frame.offset, 24, 26)
        _check_verify(log, expected, byte)
        _check_writer_refuses(log, expected, byte)
        _check_reader(log, expected, random.Random(byte), byte)
        _flip(log / frame.segment.name, byte, 4)
