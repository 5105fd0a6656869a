"""``LogWriter.append`` reports what it wrote: the LSN range and the bytes added to segment files."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import logformat
from logformat import Appended, LogReader, LogWriter
from tests.logutil import frame_offsets, new_meta, record, segments


def _segment_bytes(log: Path) -> int:
    return sum(seg.stat().st_size for seg in segments(log))


def _noise(rng: random.Random, size: int) -> bytes:
    """Bytes that zstd cannot shrink, so frames are as big as their records."""
    return rng.randbytes(size)


def test_appended_is_a_small_frozen_exported_value(tmp_path: Path) -> None:
    assert "Appended" in logformat.__all__
    with LogWriter.open(tmp_path / "log", create=new_meta(), sync=False) as writer:
        done = writer.append([record(1), record(2)])
    assert isinstance(done, Appended)
    assert (done.first_lsn, done.last_lsn) == (1, 2)
    assert not hasattr(done, "__dict__")  # slots
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.last_lsn = 3  # type: ignore[misc]


def test_one_frame_bytes_equal_the_segment_growth(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False) as writer:
        before = _segment_bytes(log)  # the first segment's header, written on create
        done = writer.append([record(1)])
        assert done == Appended(1, 1, _segment_bytes(log) - before)
        before = _segment_bytes(log)
        done = writer.append([record(i) for i in range(2, 9)])
        assert done == Appended(2, 8, _segment_bytes(log) - before)
        assert done.bytes_written > 0
        assert writer.last_lsn == 8
    assert [size for _seg, _offset, size in frame_offsets(log)][-1] == done.bytes_written


def test_an_empty_append_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False) as writer:
        writer.append([record(1), record(2)])
        before = _segment_bytes(log)
        assert writer.append([]) == Appended(3, 2, 0)
        assert _segment_bytes(log) == before


def test_an_append_split_into_frames_counts_all_of_them(tmp_path: Path) -> None:
    log = tmp_path / "log"
    rng = random.Random(7)
    values = [{"blob": _noise(rng, 300)} for _ in range(40)]
    with LogWriter.open(log, create=new_meta(), sync=False, max_frame_bytes=1_000) as writer:
        writer.append([record(1)])
        frames_before = len(frame_offsets(log))
        before = _segment_bytes(log)
        done = writer.append(values)
        assert (done.first_lsn, done.last_lsn) == (2, 41)
        assert done.bytes_written == _segment_bytes(log) - before
    new_frames = frame_offsets(log)[frames_before:]
    assert len(new_frames) > 5  # it really was split
    assert done.bytes_written == sum(size for _seg, _offset, size in new_frames)
    with LogReader(log) as reader:
        assert [r.value for r in reader.records(2, 41)] == values


def test_an_append_that_rolls_over_counts_the_new_segment(tmp_path: Path) -> None:
    log = tmp_path / "log"
    rng = random.Random(11)
    with LogWriter.open(log, create=new_meta(), sync=False, segment_size=4_000) as writer:
        first = writer.append([{"blob": _noise(rng, 500)}])
        assert len(segments(log)) == 1  # still room in the first segment
        before = _segment_bytes(log)
        big = [{"blob": _noise(rng, 500)} for _ in range(10)]
        rolled = writer.append(big)
        assert len(segments(log)) == 2  # it filled the segment, and a new one was started
        assert rolled.bytes_written == _segment_bytes(log) - before
        frames_of_rolled = [f for f in frame_offsets(log) if f[0] == segments(log)[0]][1:]
        header_of_new = segments(log)[1].stat().st_size
        assert rolled.bytes_written == sum(f[2] for f in frames_of_rolled) + header_of_new
        after = writer.append([record(12)])  # lands in the new segment
        assert after.first_lsn == rolled.last_lsn + 1 == first.last_lsn + 11
        assert after.bytes_written == segments(log)[1].stat().st_size - header_of_new
    with LogReader(log) as reader:
        assert reader.read(12).value == record(12)
        assert [r.value for r in reader.records(2, 11)] == big


def test_lsns_continue_across_a_reopen(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False) as writer:
        assert writer.append([record(1), record(2), record(3)]).last_lsn == 3
    with LogWriter.open(log, sync=False) as writer:
        before = _segment_bytes(log)
        done = writer.append([record(4)])
        assert done == Appended(4, 4, _segment_bytes(log) - before)


@settings(max_examples=40)
@given(
    sizes=st.lists(st.integers(0, 25), min_size=1, max_size=30),
    blob=st.integers(0, 400),
    segment_size=st.sampled_from([1, 2_000, 9_000, 1 << 20]),
    max_frame_bytes=st.sampled_from([200, 2_000, 1 << 20]),
    seed=st.integers(0, 2**16),
)
def test_every_append_reports_its_range_and_the_growth_it_caused(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    blob: int,
    segment_size: int,
    max_frame_bytes: int,
    seed: int,
) -> None:
    log = tmp_path_factory.mktemp("log")
    rng = random.Random(seed)
    next_lsn = 1
    with LogWriter.open(
        log,
        create=new_meta(),
        sync=False,
        segment_size=segment_size,
        max_frame_bytes=max_frame_bytes,
    ) as writer:
        start = _segment_bytes(log)
        total = 0
        for size in sizes:
            before = _segment_bytes(log)
            done = writer.append([{"n": next_lsn + i, "b": _noise(rng, blob)} for i in range(size)])
            assert done == Appended(next_lsn, next_lsn + size - 1, _segment_bytes(log) - before)
            assert done.last_lsn == writer.last_lsn
            next_lsn += size
            total += done.bytes_written
        assert total == _segment_bytes(log) - start
    with LogReader(log) as reader:
        assert reader.last_lsn == next_lsn - 1
        assert [r.value["n"] for r in reader.records()] == list(range(1, next_lsn))
