"""One writer (lock and epochs), trimming by retention, and the metadata file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logformat import (
    FencedError,
    FormatVersionError,
    LogLockedError,
    LogReader,
    LogWriter,
    LsnOutOfRangeError,
    NotALogError,
    TrimRefusedError,
    read_meta,
    trim_log,
)
from tests.logutil import new_meta, record


def test_a_lower_epoch_is_fenced_out(log_dir: Path) -> None:
    with LogWriter.open(log_dir, create=new_meta(), epoch=2, sync=False) as writer:
        writer.append([1])
    with pytest.raises(FencedError, match="epoch 1 is older than epoch 2"):
        LogWriter.open(log_dir, epoch=1, sync=False)
    with LogWriter.open(log_dir, epoch=3, sync=False) as writer:
        writer.append([2])
        writer.epoch = 2  # a stale writer object that missed the takeover
        with pytest.raises(FencedError):
            writer.append([3])
    with LogReader(log_dir) as reader:
        assert [r.epoch for r in reader.records()] == [2, 3]


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(log_dir: Path) -> None:
    first = LogWriter.open(log_dir, create=new_meta(), sync=False)
    with pytest.raises(LogLockedError, match="another live process"):
        LogWriter.open(log_dir, sync=False)
    first.close()
    LogWriter.open(log_dir, sync=False).close()


def _segmented(log_dir: Path, checkpoints: list[int]) -> None:
    with LogWriter.open(log_dir, create=new_meta(), sync=False, segment_size=200) as writer:
        for i in range(1, 61):
            writer.append([record(i)])
        for lsn in checkpoints:
            writer.write_checkpoint(lsn, {"at": lsn})


def test_trim_drops_whole_segments_below_and_old_checkpoints(log_dir: Path) -> None:
    _segmented(log_dir, [10, 30, 50])
    firsts = sorted(int(p.stem) for p in log_dir.glob("*.seg"))
    report = trim_log(log_dir, 31)
    kept = [f for f in firsts if f > 31]
    expected_first = max(f for f in firsts if f <= 31)
    assert report.first_lsn == expected_first
    assert sorted(int(p.stem) for p in log_dir.glob("*.seg")) == [expected_first, *kept]
    remaining = sorted(int(p.stem) for p in (log_dir / "checkpoints").glob("*.ckpt"))
    assert all(lsn >= expected_first - 1 for lsn in remaining) and 30 in remaining
    with LogReader(log_dir) as reader:
        assert reader.first_lsn == expected_first
        assert reader.read(60).value == record(60)
        assert [r.value for r in reader.records()] == [record(i) for i in range(expected_first, 61)]
        assert reader.stats().frames == 60 - expected_first + 1
        with pytest.raises(LsnOutOfRangeError):
            reader.read(expected_first - 1)


def test_trim_refuses_to_leave_no_checkpoint_to_recover_from(log_dir: Path) -> None:
    _segmented(log_dir, [5])
    with pytest.raises(TrimRefusedError, match="no sound checkpoint"):
        trim_log(log_dir, 50)
    report = trim_log(log_dir, 50, require_checkpoint=False)
    assert report.segments_removed


def test_trim_while_an_instance_writes_is_refused(log_dir: Path) -> None:
    _segmented(log_dir, [50])
    with LogWriter.open(log_dir, sync=False), pytest.raises(LogLockedError):
        trim_log(log_dir, 40)


def test_metadata_records_versions(log_dir: Path) -> None:
    with LogWriter.open(log_dir, create=new_meta(), sync=False) as writer:
        writer.append([1, 2, 3])
        writer.record_code_version("app.py:Server", "v2")
    meta = read_meta(log_dir)
    assert (meta.instance, meta.app, meta.code_version) == ("server", "app.py:Server", "v2")
    assert [(v.from_lsn, v.code_version) for v in meta.versions] == [(1, "v1"), (4, "v2")]


def test_bad_metadata_and_non_logs(tmp_path: Path, log_dir: Path) -> None:
    with pytest.raises(NotALogError, match=r"no meta\.json"):
        LogReader(tmp_path)
    with pytest.raises(NotALogError, match="not a directory"):
        LogReader(tmp_path / "missing")
    LogWriter.open(log_dir, create=new_meta(), sync=False).close()
    meta = log_dir / "meta.json"
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(FormatVersionError):
        read_meta(log_dir)
    meta.write_text("{not json")
    with pytest.raises(NotALogError):
        read_meta(log_dir)
