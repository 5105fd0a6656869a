"""The lmdb index is a cache: deleted, stale, foreign, damaged or ahead of the segments, it is
rebuilt (or caught up) and then answers exactly as the original did.

"Answers" means everything a reader serves from the index: every read, range reads, time seeks,
statistics, and the index's own frame table.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from logformat import LogReader, LogWriter, LsnOutOfRangeError, TrimmedError, trim_log
from tests.logutil import new_meta, record

SEGMENT_SIZE = 600
GROUPS = [1, 5, 2, 40, 3, 1, 9, 12, 1, 7]  # records per append
STEP_NS = 1_000  # explicit wall times: frame n is stamped START_NS + n * STEP_NS
START_NS = 5_000


def _write(log: Path, groups: list[int], *, start_ns: int = START_NS) -> None:
    """Append ``groups`` to ``log`` (creating it), one frame per group, with explicit times."""
    with LogWriter.open(log, create=new_meta(), sync=False, segment_size=SEGMENT_SIZE) as writer:
        n = writer.next_lsn
        for i, size in enumerate(groups):
            writer.append(
                [record(n + j) for j in range(size)],
                wall_ns=start_ns + i * STEP_NS,
            )
            n += size


def _facts(reader: LogReader) -> dict[str, Any]:
    """Everything a reader answers with the help of the index."""
    first, last = reader.first_lsn, reader.last_lsn
    frames = list(reader._index.all_frames())
    walls = sorted({f.wall_ns for f in frames})
    probes = sorted({-1, 0, *walls, *(w - 1 for w in walls), *(w + 1 for w in walls), 10**18})
    rng = random.Random(len(frames))
    ranges = [
        (rng.randint(first - 3, last + 3), rng.randint(first - 3, last + 3)) for _ in range(40)
    ]
    out_of_range = []
    for lsn in (0, -1, -(10**6), first - 1, last + 1, last + 100):
        try:
            reader.read(lsn)
        except LsnOutOfRangeError:
            out_of_range.append(lsn)
    return {
        "range": (first, last),
        "records": list(reader.records()),
        "reads": [reader.read(lsn) for lsn in range(first, last + 1)],
        "seek": {t: reader.seek_time(t) for t in probes},
        "stats": reader.stats(),
        "frames": frames,
        "ranges": {r: _lsns(reader, *r) for r in ranges},
        "out_of_range": out_of_range,
    }


def _lsns(reader: LogReader, start: int, end: int) -> list[int] | str:
    """The LSNs of a range read, or "trimmed" when it starts in history a trim removed."""
    try:
        return [rec.lsn for rec in reader.records(start, end)]
    except TrimmedError:
        return "trimmed"


def _facts_of(log: Path) -> tuple[dict[str, Any], bool]:
    """The facts, and whether opening the reader had to rebuild the index."""
    with LogReader(log) as reader:
        rebuilt = reader._state.rebuilt  # before any read refreshes the state
        return _facts(reader), rebuilt


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "log"
    _write(path, GROUPS)
    assert len(list(path.glob("*.seg"))) >= 3
    return path


def test_the_reference_answers_are_right(log: Path) -> None:
    """The facts the other tests compare against, checked against a model of what was written."""
    facts, rebuilt = _facts_of(log)
    assert not rebuilt
    total = sum(GROUPS)
    assert facts["range"] == (1, total)
    assert [r.value for r in facts["records"]] == [record(i) for i in range(1, total + 1)]
    assert facts["reads"] == facts["records"]
    starts = [1 + sum(GROUPS[:i]) for i in range(len(GROUPS))]
    walls = [START_NS + i * STEP_NS for i in range(len(GROUPS))]
    for rec in facts["records"]:
        frame = max(i for i, s in enumerate(starts) if s <= rec.lsn)
        assert rec.wall_ns == walls[frame] and rec.epoch == 1
    for t, lsn in facts["seek"].items():
        later = [s for s, w in zip(starts, walls, strict=True) if w >= t]
        assert lsn == (later[0] if later else None), t
    for (a, b), lsns in facts["ranges"].items():
        assert lsns == list(range(max(a, 1), min(b, total) + 1)), (a, b)
    assert facts["out_of_range"] == [0, -1, -(10**6), 0, total + 1, total + 100]
    stats = facts["stats"]
    assert (stats.first_lsn, stats.last_lsn, stats.frames) == (1, total, len(GROUPS))
    assert (stats.first_wall_ns, stats.last_wall_ns) == (walls[0], walls[-1])
    assert stats.stored_bytes == sum(p.stat().st_size - 32 for p in log.glob("*.seg"))


def test_a_deleted_index_is_rebuilt_equal_by_a_reader_and_by_the_writer(log: Path) -> None:
    before, _ = _facts_of(log)
    shutil.rmtree(log / "index")
    after, rebuilt = _facts_of(log)
    assert rebuilt
    assert after == before

    shutil.rmtree(log / "index")
    with LogWriter.open(log, sync=False) as writer:
        assert writer.recovery is not None
        assert writer.recovery.index_rebuilt
        assert writer.recovery.frames_scanned == len(GROUPS)
        assert writer.next_lsn == sum(GROUPS) + 1
    after, rebuilt = _facts_of(log)
    assert not rebuilt
    assert after == before


@pytest.mark.parametrize("junk", [b"\x00" * 10, b"not an lmdb file" * 512], ids=["short", "long"])
def test_a_damaged_index_file_is_discarded_and_rebuilt(log: Path, junk: bytes) -> None:
    before, _ = _facts_of(log)
    (log / "index" / "data.mdb").write_bytes(junk)
    after, rebuilt = _facts_of(log)
    assert rebuilt
    assert after == before
    (log / "index" / "data.mdb").write_bytes(junk)
    with LogWriter.open(log, sync=False) as writer:
        assert writer.recovery is not None and writer.recovery.index_rebuilt
    assert _facts_of(log)[0] == before


@pytest.mark.parametrize("opener", ["reader", "writer"])
def test_a_stale_index_catches_up_equal(log: Path, tmp_path: Path, opener: str) -> None:
    stale = tmp_path / "stale-index"
    shutil.copytree(log / "index", stale)
    # More frames, across more segment rollovers, written after the index copy was taken.
    with LogWriter.open(log, sync=False, segment_size=SEGMENT_SIZE) as writer:
        segments = len(list(log.glob("*.seg")))
        for i in range(12):
            lsn = writer.next_lsn
            writer.append([record(lsn + j) for j in range(i % 4 + 1)], wall_ns=50_000 + i)
        assert len(list(log.glob("*.seg"))) > segments + 1
    expected, _ = _facts_of(log)
    # A crash between the segment writes and the index updates leaves the old index behind.
    shutil.rmtree(log / "index")
    shutil.copytree(stale, log / "index")
    if opener == "writer":
        with LogWriter.open(log, sync=False) as writer:
            assert writer.recovery is not None
            assert not writer.recovery.index_rebuilt  # caught up, not rebuilt
            assert writer.recovery.frames_scanned == 12
            assert writer.recovery.truncated is None
        facts, rebuilt = _facts_of(log)
    else:
        with LogReader(log) as reader:
            assert reader._state.frames_scanned == 12
            rebuilt = reader._state.rebuilt
            facts = _facts(reader)
    assert not rebuilt
    assert facts == expected


def test_an_index_from_another_log_is_discarded(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    # Same records and hence the same frame sizes and offsets, so the foreign index points at
    # plausible places; only its times differ, and it covers less than ``b`` holds.
    _write(a, GROUPS[:6], start_ns=900_000)
    _write(b, GROUPS)
    expected, _ = _facts_of(b)
    shutil.rmtree(b / "index")
    shutil.copytree(a / "index", b / "index")
    facts, rebuilt = _facts_of(b)
    assert rebuilt
    assert facts == expected
    shutil.rmtree(b / "index")
    shutil.copytree(a / "index", b / "index")
    with LogWriter.open(b, sync=False) as writer:
        assert writer.recovery is not None and writer.recovery.index_rebuilt
    assert _facts_of(b)[0] == expected


def _reference(tmp_path: Path, groups: list[int]) -> dict[str, Any]:
    ref = tmp_path / f"reference-{len(groups)}"
    _write(ref, groups)
    facts, _ = _facts_of(ref)
    facts.pop("stats")  # the segment count may differ: compared separately
    return facts


@pytest.mark.parametrize("cut", ["frame-boundary", "mid-frame", "segment-gone"])
def test_an_index_pointing_past_a_truncated_segment_is_rebuilt(
    log: Path, tmp_path: Path, cut: str
) -> None:
    with LogReader(log) as reader:
        frames = list(reader._index.all_frames())
    last_segment = max(f.segment for f in frames)
    in_last = [f for f in frames if f.segment == last_segment]
    assert in_last and last_segment == max(int(p.stem) for p in log.glob("*.seg"))
    seg = log / f"{last_segment:020d}.seg"
    if cut == "segment-gone":
        kept_frames = len(frames) - len(in_last)
        seg.unlink()
    else:
        victim = in_last[-1]
        kept_frames = frames.index(victim)
        at = victim.offset if cut == "frame-boundary" else victim.offset + 20
        with open(seg, "r+b") as f:
            f.truncate(at)  # frames from ``victim`` on are gone; the index still remembers them
    kept_lsn = sum(GROUPS[:kept_frames])

    facts, rebuilt = _facts_of(log)
    assert rebuilt
    stats = facts.pop("stats")
    assert (stats.last_lsn, stats.frames) == (kept_lsn, kept_frames)
    assert facts == _reference(tmp_path, GROUPS[:kept_frames])
    with LogReader(log) as reader:
        with pytest.raises(LsnOutOfRangeError):
            reader.read(kept_lsn + 1)
        assert reader.seek_time(START_NS + kept_frames * STEP_NS) is None
    with LogWriter.open(log, sync=False) as writer:
        assert writer.next_lsn == kept_lsn + 1
        writer.append([record(kept_lsn + 1)], wall_ns=START_NS + kept_frames * STEP_NS)
    with LogReader(log) as reader:
        assert reader.read(kept_lsn + 1).value == record(kept_lsn + 1)
        assert reader.seek_time(START_NS + kept_frames * STEP_NS) == kept_lsn + 1


def test_an_index_from_before_a_trim_follows_the_trim(log: Path, tmp_path: Path) -> None:
    stale = tmp_path / "index-before-trim"
    below = sorted(int(p.stem) for p in log.glob("*.seg"))[2]
    with LogWriter.open(log, sync=False) as writer:
        writer.write_checkpoint(below, {"state": below})
    shutil.copytree(log / "index", stale)
    report = trim_log(log, below)
    assert len(report.segments_removed) == 2
    expected, _ = _facts_of(log)
    assert expected["range"][0] == report.first_lsn > 1
    # A trim that crashed after removing segments but before the index followed.
    shutil.rmtree(log / "index")
    shutil.copytree(stale, log / "index")
    facts, _ = _facts_of(log)
    assert facts == expected
    assert facts["stats"].frames == len(facts["frames"])
    with LogReader(log) as reader, pytest.raises(LsnOutOfRangeError):
        reader.read(report.first_lsn - 1)
    shutil.rmtree(log / "index")
    assert _facts_of(log) == (expected, True)


def test_seek_by_time_and_range_reads(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False) as writer:
        writer.append([record(1), record(2)], wall_ns=1_000)
        writer.append([record(3)], wall_ns=2_000)
        writer.append([record(4), record(5), record(6)], wall_ns=3_000)
        writer.append([record(7)], wall_ns=2_500)  # the clock went back: stamped 3_000
        writer.append([record(8), record(9)], wall_ns=7_000)
    with LogReader(log) as reader:
        assert [reader.seek_time(t) for t in (-5, 0, 999, 1_000)] == [1, 1, 1, 1]
        assert [reader.seek_time(t) for t in (1_001, 2_000)] == [3, 3]
        assert [reader.seek_time(t) for t in (2_001, 2_500, 3_000)] == [4, 4, 4]
        assert [reader.seek_time(t) for t in (3_001, 7_000)] == [8, 8]
        assert reader.seek_time(7_001) is None
        assert reader.seek_time(10**18) is None
        assert [reader.read(lsn).wall_ns for lsn in range(1, 10)] == [
            1_000,
            1_000,
            2_000,
            3_000,
            3_000,
            3_000,
            3_000,
            7_000,
            7_000,
        ]
        for lsn in range(1, 10):
            assert reader.read(lsn).value == record(lsn)
        rng = random.Random(2)
        for _ in range(50):
            a, b = rng.randint(-2, 12), rng.randint(-2, 12)
            expected = list(range(max(a, 1), min(b, 9) + 1))
            assert [r.lsn for r in reader.records(a, b)] == expected, (a, b)
            assert [r.value for r in reader.records(a, b)] == [record(i) for i in expected]
        assert [r.lsn for r in reader.records(6, None)] == [6, 7, 8, 9]
        assert [r.lsn for r in reader.records(None, 2)] == [1, 2]
        for bad in (0, -1, -(2**63), 10, 11, 2**63):
            with pytest.raises(LsnOutOfRangeError):
                reader.read(bad)


def test_an_index_rebuilt_while_the_writer_appends_loses_no_entries(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader rebuilds the index; the writer appends (and moves the mark) before the reader's
    rebuild is stored. The rebuild's older entries must still land, or they are lost for good."""
    import logformat._files as files
    from logformat._segment import scan_segment as real_scan

    expected_total = sum(GROUPS) + 1
    with LogWriter.open(log, sync=False, segment_size=SEGMENT_SIZE) as writer:
        appended: list[int] = []

        def scan_then_let_the_writer_append(*args: Any, **kwargs: Any) -> Any:
            result = real_scan(*args, **kwargs)
            if not appended and kwargs.get("is_last"):
                appended.append(writer.append([record(expected_total)], wall_ns=10**6).last_lsn)
            return result

        writer._index.reset("some other log")  # make the next reader distrust and rebuild it
        monkeypatch.setattr(files, "scan_segment", scan_then_let_the_writer_append)
        with LogReader(log) as reader:
            assert reader._state.rebuilt
        monkeypatch.undo()
        assert appended == [expected_total]
    with LogReader(log) as reader:
        assert reader.last_lsn == expected_total
        for lsn in range(1, expected_total + 1):
            assert reader.read(lsn).value == record(lsn)
        assert len(list(reader._index.all_frames())) == len(GROUPS) + 1
