"""A write cut short by a crash: reopening keeps exactly the whole frames before it."""

from __future__ import annotations

import shutil
from pathlib import Path

from logformat import LogReader, LogWriter
from tests.logutil import frame_offsets, read_all, record, segments, write_log


def test_truncation_at_every_byte_of_the_last_frame_keeps_exactly_the_whole_frames(
    tmp_path: Path,
) -> None:
    original = tmp_path / "original"
    values = write_log(original, [3, 1, 4, 2], segment_size=300)  # several segments
    seg, offset, size = frame_offsets(original)[-1]
    kept = values[:-2]  # the last frame held 2 records
    assert len(segments(original)) >= 2
    for cut in range(offset, offset + size):
        copy = tmp_path / f"cut-{cut}"
        shutil.copytree(original, copy, ignore=shutil.ignore_patterns("index", "LOCK"))
        torn = copy / seg.name
        with open(torn, "r+b") as f:
            f.truncate(cut)
        with LogReader(copy) as reader:  # a reader sees the whole frames, changes nothing
            assert reader.last_lsn == len(kept)
        assert torn.stat().st_size == cut
        with LogWriter.open(copy, sync=False) as writer:
            assert writer.next_lsn == len(kept) + 1
            report = writer.recovery
            assert report is not None
            if cut > offset:
                assert report.truncated is not None
                assert report.truncated.offset == offset
            assert torn.stat().st_size == offset
            writer.append([{"after": cut}])
        assert read_all(copy) == [*kept, {"after": cut}]
        shutil.rmtree(copy)


def test_garbage_after_the_last_frame_is_cut(log_dir: Path) -> None:
    values = write_log(log_dir, [2, 2])
    seg = segments(log_dir)[-1]
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\x00" * 7 + b"IMFR" + b"\xff" * 100)
    with LogWriter.open(log_dir, sync=False) as writer:
        assert writer.recovery is not None
        assert writer.recovery.truncated is not None
        assert "torn" in writer.recovery.describe() or "cut" in writer.recovery.describe()
    assert seg.stat().st_size == size
    assert read_all(log_dir) == values


def test_a_torn_header_of_a_fresh_segment_is_removed(log_dir: Path) -> None:
    values = write_log(log_dir, [5, 5], segment_size=100)
    last = segments(log_dir)[-1]
    # A crash while a new segment's header was being written: a few bytes only.
    fresh = last.with_name(f"{len(values) + 1:020d}.seg")
    if fresh.exists():
        fresh.unlink()
    fresh.write_bytes(b"IMLOG")
    with LogWriter.open(log_dir, sync=False) as writer:
        assert writer.next_lsn == len(values) + 1
        writer.append([record(99)])
    assert read_all(log_dir) == [*values, record(99)]


def test_the_reader_never_modifies_a_torn_log(log_dir: Path) -> None:
    values = write_log(log_dir, [4, 4])
    seg = segments(log_dir)[-1]
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 3)
    before = seg.read_bytes()
    with LogReader(log_dir) as reader:
        assert reader.last_lsn == 4
        assert [r.value for r in reader.records()] == values[:4]
        assert reader.damage[0][1].kind == "torn-tail"
    assert seg.read_bytes() == before
