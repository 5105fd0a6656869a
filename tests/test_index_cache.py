"""The lmdb index is a cache: deleted, stale or foreign, it is rebuilt and equal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from logformat import LogReader, LogWriter, LsnOutOfRangeError
from tests.logutil import new_meta, read_all, record, write_log

GROUPS = [1, 5, 2, 40, 3, 1, 9, 12]


def _facts(log: Path) -> dict[str, object]:
    with LogReader(log) as reader:
        return {
            "values": [r.value for r in reader.records()],
            "walls": [r.wall_ns for r in reader.records()],
            "stats": reader.stats(),
            "seek": [reader.seek_time(t) for t in range(0, 10_000, 250)],
            "reads": [reader.read(lsn).value for lsn in range(1, reader.last_lsn + 1)],
        }


def test_a_deleted_index_is_rebuilt_equal(log_dir: Path) -> None:
    write_log(log_dir, GROUPS, segment_size=600)
    before = _facts(log_dir)
    shutil.rmtree(log_dir / "index")
    assert _facts(log_dir) == before  # a reader rebuilds it
    shutil.rmtree(log_dir / "index")
    with LogWriter.open(log_dir, sync=False) as writer:  # so does the writer
        assert writer.recovery is not None and writer.recovery.index_rebuilt
    assert _facts(log_dir) == before


def test_a_stale_index_catches_up(log_dir: Path, tmp_path: Path) -> None:
    values = write_log(log_dir, GROUPS, segment_size=600)
    stale = tmp_path / "stale-index"
    shutil.copytree(log_dir / "index", stale)
    with LogWriter.open(log_dir, sync=False, segment_size=600) as writer:
        more = [record(1000 + i) for i in range(30)]
        for i in range(0, 30, 3):
            writer.append(more[i : i + 3], wall_ns=50_000 + i)
    after = _facts(log_dir)
    # A crash between the segment writes and the index updates leaves the old index behind.
    shutil.rmtree(log_dir / "index")
    shutil.copytree(stale, log_dir / "index")
    assert _facts(log_dir) == after
    assert read_all(log_dir) == [*values, *more]


def test_an_index_from_another_log_is_discarded(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_log(a, [3, 3])
    write_log(b, GROUPS)
    expected = _facts(b)
    shutil.rmtree(b / "index")
    shutil.copytree(a / "index", b / "index")
    assert _facts(b) == expected


def test_an_index_pointing_past_a_truncated_segment_is_rebuilt(log_dir: Path) -> None:
    write_log(log_dir, [4, 4, 4])
    seg = sorted(log_dir.glob("*.seg"))[-1]
    with LogReader(log_dir) as reader:
        loc = reader._index.locate(9)
        assert loc is not None
    with open(seg, "r+b") as f:
        f.truncate(loc.offset)  # frames 9..12 gone, the index still remembers them
    with LogReader(log_dir) as reader:
        assert reader.last_lsn == 8
        with pytest.raises(LsnOutOfRangeError):
            reader.read(9)


def test_seek_by_time_and_range_reads(log_dir: Path) -> None:
    with LogWriter.open(log_dir, create=new_meta(), sync=False) as writer:
        writer.append([record(1), record(2)], wall_ns=1_000)
        writer.append([record(3)], wall_ns=2_000)
        writer.append([record(4), record(5), record(6)], wall_ns=3_000)
        writer.append([record(7)], wall_ns=2_500)  # the clock went back: stamped 3_000
    with LogReader(log_dir) as reader:
        assert reader.seek_time(0) == 1
        assert reader.seek_time(1_000) == 1
        assert reader.seek_time(1_001) == 3
        assert reader.seek_time(2_001) == 4
        assert reader.seek_time(3_000) == 4
        assert reader.seek_time(3_001) is None
        assert reader.read(7).wall_ns == 3_000
        assert [r.lsn for r in reader.records(2, 5)] == [2, 3, 4, 5]
        assert [r.lsn for r in reader.records(6, 100)] == [6, 7]
        for bad in (0, -1, 8):
            with pytest.raises(LsnOutOfRangeError):
                reader.read(bad)
