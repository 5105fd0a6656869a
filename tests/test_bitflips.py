"""Damage anywhere is found and reported with its LSN range; nothing is ever silently skipped."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from logformat import CorruptLogError, LogReader, LogWriter, verify_log
from logformat._frame import HEADER_SIZE
from tests.logutil import frame_offsets, write_log

GROUPS = [3, 5, 2, 4, 6, 1, 3]


def _lsn_ranges(groups: list[int]) -> list[tuple[int, int]]:
    ranges, first = [], 1
    for size in groups:
        ranges.append((first, first + size - 1))
        first += size
    return ranges


def _flip(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


@pytest.fixture
def original(tmp_path: Path) -> Path:
    path = tmp_path / "original"
    write_log(path, GROUPS, segment_size=250)
    return path


def _copy(original: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(original, target, ignore=shutil.ignore_patterns("index", "LOCK"))
    return target


def test_every_bit_of_a_middle_frame_is_caught_with_its_lsns(
    original: Path, tmp_path: Path
) -> None:
    frames = frame_offsets(original)
    ranges = _lsn_ranges(GROUPS)
    index = 2  # a frame in the middle of the log, not the last of its segment or the log
    seg, offset, size = frames[index]
    first, last = ranges[index]
    for byte in range(offset, offset + size):
        for bit in range(8):
            log = _copy(original, tmp_path, "flip")
            _flip(log / seg.name, byte, bit)
            report = verify_log(log)
            assert not report.ok, (byte, bit)
            damage = report.damaged[0].damage
            assert damage.first_lsn == first
            if byte >= offset + HEADER_SIZE:  # body damage: the trusted header gives the range
                assert damage.last_lsn == last
            else:
                assert damage.last_lsn is not None and damage.last_lsn >= last
            shutil.rmtree(log)


def test_random_flips_anywhere_are_reported_by_verify_writer_and_reader(
    original: Path, tmp_path: Path
) -> None:
    rng = random.Random(7)
    segs = sorted(original.glob("*.seg"))
    for trial in range(60):
        log = _copy(original, tmp_path, f"t{trial}")
        seg = rng.choice(segs)
        byte = rng.randrange(seg.stat().st_size)
        _flip(log / seg.name, byte, rng.randrange(8))
        report = verify_log(log)
        assert not report.ok
        damage = report.damaged[0].damage
        assert damage.first_lsn is not None
        mid_log = damage.kind != "torn-tail"
        if mid_log:
            with pytest.raises(CorruptLogError) as caught:
                LogWriter.open(log, sync=False).close()
            assert caught.value.first_lsn == damage.first_lsn
            assert seg.name in str(caught.value) or "seg" in str(caught.value)
        with LogReader(log) as reader:
            if damage.first_lsn > 1:
                assert reader.read(damage.first_lsn - 1).lsn == damage.first_lsn - 1
            if mid_log:
                with pytest.raises(CorruptLogError):
                    reader.read(damage.first_lsn)
        shutil.rmtree(log)


def test_a_damaged_segment_header_is_reported(original: Path, tmp_path: Path) -> None:
    log = _copy(original, tmp_path, "seghead")
    second = sorted(log.glob("*.seg"))[1]
    _flip(second, 10, 0)
    report = verify_log(log)
    assert next(d.damage.kind for d in report.damaged) == "bad-segment-header"
    assert report.damaged[0].damage.first_lsn == int(second.stem)


def test_whole_log_verifies_clean(original: Path) -> None:
    report = verify_log(original)
    assert report.ok
    assert report.records == sum(GROUPS)
    assert report.frames == len(GROUPS)
