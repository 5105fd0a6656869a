"""A write cut short by a crash: reopening keeps exactly the whole frames before it.

The layout of each test log comes from the index its writer built while appending (the writer's
own record of where it put every frame), not from the scanner that recovery uses, so a scanner
that misplaced a frame boundary could not agree with itself by accident.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from logformat import LogMeta, LogReader, LogWriter, LsnOutOfRangeError, verify_log
from logformat._frame import HEADER_SIZE
from tests.logutil import new_meta, record

SEGMENT_SIZE = 400
GROUPS = [3, 1, 4, 1, 5, 9, 2, 6, 5]  # records per append, one frame each


@dataclass(frozen=True)
class FrameAt:
    segment: Path
    offset: int
    size: int
    first_lsn: int
    last_lsn: int


def _layout(log: Path) -> list[FrameAt]:
    with LogReader(log) as reader:
        segs = {int(p.stem): p for p in log.glob("*.seg")}
        return [
            FrameAt(
                segs[loc.segment],
                loc.offset,
                HEADER_SIZE + loc.stored_size,
                loc.first_lsn,
                loc.last_lsn,
            )
            for loc in reader._index.all_frames()
        ]


def _append_groups(
    log: Path, groups: list[int], values: list[Any], *, segment_size: int, meta: LogMeta | None
) -> None:
    with LogWriter.open(log, create=meta, sync=False, segment_size=segment_size) as writer:
        for size in groups:
            batch = [record(len(values) + j + 1) for j in range(size)]
            writer.append(batch, wall_ns=1_000 * (len(values) + 1))
            values.extend(batch)


def _segment_bytes(log: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(log.glob("*.seg"))}


def _copy_log(source: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("index", "LOCK"))
    return target


def _read_values(log: Path) -> list[Any]:
    with LogReader(log) as reader:
        return [r.value for r in reader.records()]


@dataclass
class Original:
    """A pristine log whose last frame is tiny, plus its index before and after that frame."""

    path: Path
    values: list[Any]
    last: FrameAt
    index_before_last: Path
    index_after_last: Path


def _original(tmp_path: Path, *, last_frame_alone: bool) -> Original:
    path = tmp_path / "original"
    values: list[Any] = []
    _append_groups(path, GROUPS[:-1], values, segment_size=SEGMENT_SIZE, meta=new_meta())
    if last_frame_alone:
        # The append before the last rolls over, so the last frame opens a fresh segment.
        _append_groups(path, [GROUPS[-1]], values, segment_size=1, meta=None)
    index_before = tmp_path / "index-before-last"
    shutil.copytree(path / "index", index_before)
    # The last frame: one short record, so every byte offset inside it is cheap to try.
    with LogWriter.open(path, sync=False, segment_size=SEGMENT_SIZE) as writer:
        writer.append([{"tail": 1}], wall_ns=10**9)
    values.append({"tail": 1})
    index_after = tmp_path / "index-after-last"
    shutil.copytree(path / "index", index_after)
    layout = _layout(path)
    last = layout[-1]
    segments = sorted(path.glob("*.seg"))
    assert len(segments) >= 3, "the log should span several segments"
    assert last.segment == segments[-1], "the last frame must lie in the last segment"
    assert last.offset + last.size == last.segment.stat().st_size
    assert last.first_lsn == last.last_lsn == len(values)
    if last_frame_alone:
        assert last.offset == 32  # right after the segment header
    else:
        assert layout[-2].segment == last.segment
    return Original(path, values, last, index_before, index_after)


@pytest.mark.parametrize("last_frame_alone", [False, True], ids=["shared-segment", "fresh-segment"])
def test_truncation_at_every_byte_of_the_last_frame_keeps_exactly_the_whole_frames(
    tmp_path: Path, last_frame_alone: bool
) -> None:
    orig = _original(tmp_path, last_frame_alone=last_frame_alone)
    last = orig.last
    kept = orig.values[:-1]
    original_bytes = last.segment.read_bytes()
    index_modes = ["none", "before", "after"]  # no index; one behind the torn frame; one past it
    work = tmp_path / "work"
    # From the frame's first byte (nothing of it written) to its last; then the whole frame.
    for cut in range(last.offset, last.offset + last.size + 1):
        whole = cut == last.offset + last.size
        expect_values = orig.values if whole else kept
        _copy_log(orig.path, work)
        torn = work / last.segment.name
        torn.write_bytes(original_bytes[:cut])
        mode = index_modes[cut % 3]
        if mode != "none":
            source = orig.index_before_last if mode == "before" else orig.index_after_last
            shutil.copytree(source, work / "index")
        where = f"cut at byte {cut}, index {mode}"

        # A reader (no writer anywhere) sees exactly the whole frames and changes nothing.
        before = _segment_bytes(work)
        with LogReader(work) as reader:
            assert reader.last_lsn == len(expect_values), where
            assert [r.value for r in reader.records()] == expect_values, where
            if not whole:
                with pytest.raises(LsnOutOfRangeError):
                    reader.read(last.first_lsn)
            if cut > last.offset and not whole:
                assert [d.kind for _f, d in reader.damage] == ["torn-tail"], where
            else:
                assert reader.damage == [], where
        assert _segment_bytes(work) == before, where

        # The writer cuts back to the last whole frame and says so.
        with LogWriter.open(work, sync=False, segment_size=SEGMENT_SIZE) as writer:
            assert writer.next_lsn == len(expect_values) + 1, where
            report = writer.recovery
            assert report is not None
            if cut == last.offset or whole:
                assert report.truncated is None, where
                assert report.describe() == "log is whole"
            else:
                damage = report.truncated
                assert damage is not None, where
                assert damage.kind == "torn-tail"
                assert (damage.offset, damage.end_offset) == (last.offset, cut), where
                assert damage.first_lsn == last.first_lsn
                assert report.truncated_file == torn
                assert f"{cut - last.offset} bytes at byte {last.offset}" in report.describe()
            assert torn.stat().st_size == (cut if whole else last.offset), where
            assert torn.read_bytes() == original_bytes[: torn.stat().st_size]
            assert writer.append([{"after": cut}]).last_lsn == len(expect_values) + 1

        assert _read_values(work) == [*expect_values, {"after": cut}], where
        with LogReader(work) as reader:
            assert reader.read(len(expect_values) + 1).value == {"after": cut}
            assert reader.read(1).value == orig.values[0]
        assert verify_log(work).ok, where


GARBAGE = {
    "zeros": b"\x00" * 4096,  # a file extended by the crash, its data never written
    "random": random.Random(11).randbytes(333),
    "magic-then-junk": b"IMFR" + b"\x01" * 60,
    "magic-only": b"IMFR",
    "one-byte": b"\x7f",
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_after_the_last_frame_is_cut(tmp_path: Path, kind: str) -> None:
    log = tmp_path / "log"
    values: list[Any] = []
    _append_groups(log, [2, 3, 1], values, segment_size=SEGMENT_SIZE, meta=new_meta())
    seg = sorted(log.glob("*.seg"))[-1]
    sound = seg.read_bytes()
    with open(seg, "ab") as f:
        f.write(GARBAGE[kind])

    report = verify_log(log)
    assert not report.ok
    assert [d.damage.kind for d in report.damaged] == ["torn-tail"]
    assert report.damaged[0].damage.offset == len(sound)
    assert report.damaged[0].damage.first_lsn == len(values) + 1

    with LogReader(log) as reader:
        assert reader.last_lsn == len(values)
        assert [r.value for r in reader.records()] == values
    with LogWriter.open(log, sync=False) as writer:
        assert writer.recovery is not None
        damage = writer.recovery.truncated
        assert damage is not None
        assert (damage.offset, damage.end_offset) == (len(sound), len(sound) + len(GARBAGE[kind]))
        assert seg.read_bytes() == sound
        writer.append([record(99)])
    assert _read_values(log) == [*values, record(99)]
    assert verify_log(log).ok


def _rolled_over_log(log: Path) -> tuple[list[Any], Path]:
    """A log whose last append rolled over: the newest segment holds only its header."""
    values: list[Any] = []
    _append_groups(log, [4, 4], values, segment_size=SEGMENT_SIZE, meta=new_meta())
    _append_groups(log, [3], values, segment_size=1, meta=None)
    fresh = sorted(log.glob("*.seg"))[-1]
    assert fresh.stat().st_size == 32
    assert int(fresh.stem) == len(values) + 1
    return values, fresh


@pytest.mark.parametrize("length", [*range(32), "zeros"])
def test_a_torn_header_of_a_freshly_rolled_over_segment_is_handled(
    tmp_path: Path, length: int | str
) -> None:
    log = tmp_path / "log"
    values, fresh = _rolled_over_log(log)
    header = fresh.read_bytes()
    # A crash while the new segment's header was being written: part of it, or a file that was
    # extended while its data never reached the disk.
    torn = b"\x00" * 32 if length == "zeros" else header[: int(length)]
    fresh.write_bytes(torn)
    segments_before = sorted(p.name for p in log.glob("*.seg"))

    with LogReader(log) as reader:  # the torn segment is simply not there yet
        assert reader.last_lsn == len(values)
        assert [r.value for r in reader.records()] == values
        with pytest.raises(LsnOutOfRangeError):
            reader.read(len(values) + 1)
    assert fresh.read_bytes() == torn
    assert sorted(p.name for p in log.glob("*.seg")) == segments_before

    with LogWriter.open(log, sync=False, segment_size=SEGMENT_SIZE) as writer:
        assert writer.next_lsn == len(values) + 1
        assert writer.recovery is not None
        assert writer.recovery.truncated is not None  # what was cut is reported
        assert writer.recovery.truncated_file == fresh
        writer.append([record(99)])
    if fresh.exists():  # recreated whole, or the new record went into the previous segment
        assert fresh.read_bytes()[:32] == header
    assert _read_values(log) == [*values, record(99)]
    assert verify_log(log).ok


@pytest.mark.parametrize("length", [0, 7, 31])
def test_a_new_log_whose_first_segment_header_is_torn_opens(tmp_path: Path, length: int) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False):
        pass
    (first,) = log.glob("*.seg")
    first.write_bytes(first.read_bytes()[:length])  # the very first header, cut short
    with LogReader(log) as reader:
        assert reader.last_lsn == 0
        assert list(reader.records()) == []
    with LogWriter.open(log, sync=False) as writer:
        assert writer.next_lsn == 1
        writer.append([record(1)])
    assert _read_values(log) == [record(1)]


def test_the_reader_never_modifies_a_torn_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    values: list[Any] = []
    _append_groups(log, [4, 4], values, segment_size=SEGMENT_SIZE, meta=new_meta())
    _append_groups(log, [2], values, segment_size=1 << 20, meta=None)
    seg = sorted(log.glob("*.seg"))[-1]
    assert seg.stat().st_size > 100  # the last frame is in it
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 3)
    stamps = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in log.glob("*.seg")}
    before = _segment_bytes(log)
    with LogReader(log) as reader:
        assert reader.last_lsn == 8
        assert [r.value for r in reader.records()] == values[:8]
        assert [r.lsn for r in reader.follow(1, poll_interval=0.001, idle_timeout=0.05)] == list(
            range(1, 9)
        )
        reader.refresh()
        assert reader.last_lsn == 8
        ((file, damage),) = reader.damage
        assert (file, damage.kind, damage.first_lsn) == (seg, "torn-tail", 9)
        for lsn in (9, 10, 11):
            with pytest.raises(LsnOutOfRangeError):
                reader.read(lsn)
    assert _segment_bytes(log) == before
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in log.glob("*.seg")} == stamps
    assert os.path.getsize(seg) == len(before[seg.name])
