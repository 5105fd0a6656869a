"""Takeovers without the writer lock: the fence file and the void rule (FORMAT.md 8.1).

A primary paused by SIGSTOP keeps its flock; a standby claims a higher epoch, begins at the log's
tail in a new segment, and whatever the old process (the "zombie") writes afterwards must be void
for every reader, while the zombie itself finds out cheaply that it lost.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from logformat import (
    CorruptLogError,
    FenceCorruptError,
    FencedError,
    FrameEncoder,
    LogError,
    LogLockedError,
    LogReader,
    LogWriter,
    claim,
    read_fence,
    verify_log,
)
from logformat._fence import BEGIN, CLAIM, ENTRY_SIZE, FenceEntry
from logformat._segment import encode_segment_header, segment_name
from tests import spec_reader
from tests.logutil import finishes_within, new_meta, record, stopped_inside_lmdb_write

ENCODER = FrameEncoder()


def zombie_frame(first_lsn: int, values: list[Any], *, epoch: int = 1) -> bytes:
    """A frame as a writer of ``epoch`` would write it, built without any fence check."""
    raw = ENCODER.pack_records(values)
    return ENCODER.encode(
        raw, first_lsn=first_lsn, record_count=len(values), epoch=epoch, wall_ns=time.time_ns()
    )


def zombie_value(lsn: int) -> dict[str, Any]:
    return {"zombie": lsn}


def log_contents(path: Path) -> list[tuple[int, int, Any]]:
    with LogReader(path) as reader:
        assert [d for _f, d in reader.damage if d.kind != "torn-tail"] == []
        return [(r.lsn, r.epoch, r.value) for r in reader.records()]


def assert_reads(path: Path, expected: list[tuple[int, int, Any]]) -> None:
    """Every reader agrees: LogReader (with its index, then rebuilt), verify, the spec reader."""
    assert log_contents(path) == expected
    report = verify_log(path)
    assert [d.describe() for d in report.damaged] == []
    assert report.last_lsn == len(expected)
    shutil.rmtree(path / "index")
    assert log_contents(path) == expected
    assert spec_reader.read_log(path) == [(lsn, value) for lsn, _e, value in expected]


# -- the zombie scenario -----------------------------------------------------------------------


def test_a_zombie_writes_after_a_takeover_are_void_for_every_reader(tmp_path: Path) -> None:
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    a.append([record(i) for i in range(1, 4)])
    a.append([record(i) for i in range(4, 6)])
    assert not a.fenced()

    claim(log, 2)
    # The zombie that checks: refused before writing anything, and it can tell it lost.
    size = os.path.getsize(a._segment.path)  # type: ignore[union-attr]
    with pytest.raises(FencedError, match="epoch 2 claimed"):
        a.append([record(99)])
    assert a.fenced()
    assert os.path.getsize(a._segment.path) == size  # type: ignore[union-attr]
    with pytest.raises(FencedError):
        a.write_checkpoint(5, {"n": 5})  # its state would follow records that may be void
    with pytest.raises(FencedError):
        a.record_code_version("app.py:Server", "v2")

    # The standby takes over while A still holds the flock.
    with pytest.raises(LogLockedError):
        LogWriter.open(log, epoch=2, sync=False)
    b = LogWriter.open(log, epoch=2, sync=False, take_over=True)
    assert b.next_lsn == 6
    assert read_fence(log).begin_of(2) == 6

    # A zombie that passed its check before the claim: frames into A's own segment after B's
    # begin (one whole, one torn), and a segment file of its own past X.
    os.write(a._fd, zombie_frame(6, [zombie_value(6), zombie_value(7)]))
    torn = zombie_frame(8, [zombie_value(8)])
    os.write(a._fd, torn[: len(torn) // 2])
    past_x = log / segment_name(9)
    past_x.write_bytes(encode_segment_header(9) + zombie_frame(9, [zombie_value(9)]))

    b.append([record(i) for i in range(6, 8)])
    b.append([record(8)])

    expected = [(i, 1, record(i)) for i in range(1, 6)] + [(i, 2, record(i)) for i in range(6, 9)]
    assert_reads(log, expected)
    # The zombie's segment is no gap, and not the newest segment to append to.
    b.close()
    with pytest.raises(LogLockedError):
        LogWriter.open(log, epoch=2, sync=False)  # the zombie's process still holds the lock
    a.close()  # the zombie process dies: its lock is released
    with pytest.raises(FencedError):
        LogWriter.open(log, epoch=1, sync=False)
    with LogWriter.open(log, epoch=2, sync=False) as c:
        assert c.next_lsn == 9
        c.append([record(9)])
        assert c._segment is not None and c._segment.first_lsn == 6  # B's segment, not 9's
    assert_reads(log, [*expected, (9, 2, record(9))])


def test_a_zombie_that_indexed_its_frames_and_rolled_over_is_not_served(tmp_path: Path) -> None:
    """A zombie that passed every check before the claim also adds its frames to the index and
    rolls to a new segment; readers that saw those frames before the begin must drop them."""
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False, segment_size=300)
    for i in range(1, 6):
        a.append([record(i)])
    reader = LogReader(log)
    assert reader.last_lsn == 5
    claim(log, 2)
    b = LogWriter.open(log, epoch=2, sync=False, take_over=True)
    x = b.next_lsn
    assert x == 6
    a.fenced = lambda: False  # type: ignore[method-assign]  # the zombie's checks all passed
    a._check_fence = lambda: None  # type: ignore[method-assign]
    for i in range(6, 12):
        a.append([zombie_value(i)])  # indexed, and rolls over past X as segments fill
    assert a.next_lsn == 12
    reader.refresh()
    b.append([record(6)])
    reader.refresh()
    assert [r.value for r in reader.records()] == [record(i) for i in range(1, 7)]
    with pytest.raises(LogError):
        reader.read(7)
    reader.close()
    expected = [(i, 1, record(i)) for i in range(1, 6)] + [(6, 2, record(6))]
    b.close()
    a.close()
    assert_reads(log, expected)


def _zombie_that_passed_its_checks(a: LogWriter) -> None:
    a.fenced = lambda: False  # type: ignore[method-assign]
    a._check_fence = lambda: None  # type: ignore[method-assign]


def test_an_index_mark_on_a_void_frame_is_not_believed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    a.append([record(i) for i in range(1, 6)])
    claim(log, 2)
    b = LogWriter.open(log, epoch=2, sync=False, take_over=True)
    _zombie_that_passed_its_checks(a)
    for i in range(6, 12):
        a.append([zombie_value(i)])  # indexed in A's segment: the mark now names LSN 11
    b.append([record(6)])  # behind the zombie's mark, which does not move back
    expected = [(i, 1, record(i)) for i in range(1, 6)] + [(6, 2, record(6))]
    assert log_contents(log) == expected
    b.close()
    a.close()


def test_stale_index_entries_for_void_frames_are_never_served(tmp_path: Path) -> None:
    """The taker passes the zombie's mark; zombie entries between its frames' keys remain."""
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    a.append([record(i) for i in range(1, 6)])
    claim(log, 2)
    b = LogWriter.open(log, epoch=2, sync=False, take_over=True)
    _zombie_that_passed_its_checks(a)
    for i in range(6, 12):
        a.append([zombie_value(i)])
    b.append([record(6)])
    b.append([record(i) for i in range(7, 10)])  # overwrites the zombie's key 7, not 8 and 9
    b.append([record(10), record(11)])  # not the zombie's key 11
    b.append([record(i) for i in range(12, 15)])  # past the zombie's mark: the mark is B's
    with LogReader(log) as reader:
        assert not reader._state.rebuilt
        for lsn in (8, 11, 9, 13):
            assert reader.read(lsn).value == record(lsn)
            assert reader.read(lsn).epoch == 2
    b.close()
    a.close()
    assert_reads(
        log, [(i, 1, record(i)) for i in range(1, 6)] + [(i, 2, record(i)) for i in range(6, 15)]
    )


def test_frames_indexed_before_the_begin_are_dropped_without_a_rebuild(tmp_path: Path) -> None:
    """A zombie frame written after the taker read the tail but indexed before its begin."""
    from logformat._fence import begin

    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    for i in range(1, 6):
        a.append([record(i)])
    claim(log, 2)
    _zombie_that_passed_its_checks(a)
    a.append([zombie_value(6)])
    a.append([zombie_value(7)])  # indexed; the mark names it
    begin(log, 2, 6)  # the taker had read the tail (LSN 5) before those two were written
    with LogReader(log) as reader:
        assert reader.last_lsn == 5
        assert not reader._state.rebuilt  # dropped from the index, not rebuilt
        assert [loc.first_lsn for loc in reader._index.all_frames()] == [1, 2, 3, 4, 5]
        assert [r.value for r in reader.records()] == [record(i) for i in range(1, 6)]
    a.close()


def test_torn_zombie_bytes_are_left_alone_by_the_taker_and_void_after_its_begin(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    a.append([record(i) for i in range(1, 4)])
    claim(log, 2)
    before = zombie_frame(4, [zombie_value(4)])
    os.write(a._fd, before[:30])  # mid-write when the taker reads the tail
    seg = a._segment.path  # type: ignore[union-attr]
    size = os.path.getsize(seg)
    b = LogWriter.open(log, epoch=2, sync=False, take_over=True)
    assert b.next_lsn == 4
    assert os.path.getsize(seg) == size  # not cut: its writer may still be writing it
    os.write(a._fd, before[30:40])  # the zombie goes on writing: still no readable header
    b.append([record(4)])
    expected = [(i, 1, record(i)) for i in range(1, 4)] + [(4, 2, record(4))]
    assert log_contents(log) == expected
    b.close()
    a.close()
    assert_reads(log, expected)


def test_a_long_lived_reader_forgets_frames_a_takeover_voided(tmp_path: Path) -> None:
    from logformat._fence import begin

    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    a.append([record(i) for i in range(1, 6)])
    claim(log, 2)
    _zombie_that_passed_its_checks(a)
    a.append([zombie_value(6)])
    reader = LogReader(log)
    assert reader.read(6).value == zombie_value(6)  # counted, before the begin
    begin(log, 2, 6)  # the taker had read the tail before the zombie's frame was written
    a.close()
    with LogWriter.open(log, epoch=2, sync=False) as b:
        b.append([record(6)])
        assert b._segment is not None and b._segment.first_lsn == 6  # never after void bytes
    reader.refresh()
    assert reader.read(6).value == record(6)
    assert [r.value for r in reader.records()] == [record(i) for i in range(1, 7)]
    reader.close()


def test_a_zombie_segment_named_x_is_renamed_aside_never_appended_to(tmp_path: Path) -> None:
    """The zombie passed its rollover check before the claim and created segment X (empty)."""
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    a.append([record(i) for i in range(1, 4)])
    claim(log, 2)
    zombie = os.open(log / segment_name(4), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(zombie, encode_segment_header(4))
    b = LogWriter.open(log, epoch=2, sync=False, take_over=True)
    assert b.next_lsn == 4
    aside = [p.name for p in log.iterdir() if ".void-" in p.name]
    assert len(aside) == 1 and aside[0].startswith(segment_name(4))
    os.write(zombie, zombie_frame(4, [zombie_value(4)]))  # lands in the file set aside
    os.close(zombie)
    b.append([record(4)])
    b.close()
    a.close()
    assert_reads(log, [(i, 1, record(i)) for i in range(1, 4)] + [(4, 2, record(4))])


def test_a_zombie_past_its_first_check_indexes_nothing_and_creates_no_segment(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False, segment_size=100)
    a.append([record(1)])
    a.append([record(2)])  # fills the segment: rolls over to segment 3
    claim(log, 2)
    a._check_fence = lambda: None  # type: ignore[method-assign]  # passed it before the claim
    before = sorted(p.name for p in log.iterdir())
    a.append([record(i) for i in range(3, 12)])  # written, then the check after the fsync
    assert a.fenced()
    assert sorted(p.name for p in log.iterdir()) == before  # full, yet no new segment
    assert [loc.first_lsn for loc in a._index.all_frames()] == [1, 2]
    del a._check_fence  # the check itself again
    with pytest.raises(FencedError):
        a._create_segment(a.next_lsn)  # the rule itself: no segment once fenced
    assert sorted(p.name for p in log.iterdir()) == before
    a.close()


def test_a_begin_is_refused_once_a_higher_epoch_claimed(tmp_path: Path) -> None:
    from logformat._fence import begin

    log = _empty_log(tmp_path)
    claim(log, 2)
    claim(log, 3)
    with pytest.raises(FencedError, match="epoch 2 has lost it"):
        begin(log, 2, 2)
    assert [e.kind for e in read_fence(log).entries] == [CLAIM, CLAIM]


def test_a_claim_during_the_rename_aside_puts_the_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The taker renames a zombie's empty segment X aside; a newer taker claims right then: the
    file might be the newer taker's own segment, so it goes back and the first taker stops."""
    import logformat._writer as writer_module

    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    a.append([record(1)])
    claim(log, 2)
    (log / segment_name(2)).write_bytes(encode_segment_header(2))
    real_rename = os.rename

    def rename_then_a_newer_claim(src: Any, dst: Any) -> None:
        real_rename(src, dst)
        claim(log, 3)

    monkeypatch.setattr(writer_module.os, "rename", rename_then_a_newer_claim)
    with pytest.raises(FencedError):
        LogWriter.open(log, epoch=2, sync=False, take_over=True)
    monkeypatch.undo()
    assert (log / segment_name(2)).read_bytes() == encode_segment_header(2)
    assert [p.name for p in log.iterdir() if ".void-" in p.name] == []
    a.close()


# -- random interleavings ----------------------------------------------------------------------


class TakeoverMachine(RuleBasedStateMachine):
    """Writer A (epoch 1), a zombie A after the claim, a taker B (epoch 2), crashes."""

    @initialize()
    def start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fence-"))
        self.log = self.dir / "log"
        self.legit: LogWriter | None = LogWriter.open(
            self.log, create=new_meta(), epoch=1, sync=False, segment_size=400
        )
        self.a: LogWriter | None = self.legit
        self.expected: list[tuple[int, int, Any]] = []
        self.claimed = False
        self.begun = False
        self.zombie_fd = -1
        self.zombie_next = 0
        self.zombie_alive = False
        self.counter = 0
        self.reader = LogReader(self.log)

    def teardown(self) -> None:
        if hasattr(self, "dir"):
            self.reader.close()
            self._drop_zombie_segment()
            for w in (self.legit, self.a):
                if w is not None:
                    w.close()
            try:
                # A last recovery cuts a torn tail nobody recovered from yet (not a fence matter).
                LogWriter.open(self.log, epoch=2 if self.claimed else 1, sync=False).close()
                assert_reads(self.log, self.expected)
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _drop_zombie_segment(self) -> None:
        """Close the zombie's own segment fd (A's segment fd is closed with A)."""
        if self.zombie_fd >= 0 and (self.a is None or self.zombie_fd != self.a._fd):
            os.close(self.zombie_fd)
        self.zombie_fd = -1

    def _values(self, n: int) -> list[Any]:
        out = []
        for _ in range(n):
            self.counter += 1
            out.append(record(self.counter))
        return out

    @precondition(lambda self: self.legit is not None)
    @rule(n=st.integers(1, 4))
    def legit_appends(self, n: int) -> None:
        assert self.legit is not None
        values = self._values(n)
        done = self.legit.append(values)
        first = len(self.expected) + 1
        assert done.first_lsn == first
        self.expected += [(first + j, self.legit.epoch, v) for j, v in enumerate(values)]

    @precondition(lambda self: self.a is not None and self.claimed)
    @rule()
    def fenced_a_refuses(self) -> None:
        assert self.a is not None
        with pytest.raises(FencedError):
            self.a.append([record(0)])
        assert self.a.fenced()

    @precondition(lambda self: self.zombie_alive)
    @rule(n=st.integers(1, 3), torn=st.booleans(), cut=st.floats(0.05, 0.95))
    def zombie_writes(self, n: int, torn: bool, cut: float) -> None:
        values = [zombie_value(self.zombie_next + j) for j in range(n)]
        frame = zombie_frame(self.zombie_next, values)
        if torn:
            os.write(self.zombie_fd, frame[: max(1, int(len(frame) * cut))])
            self.zombie_alive = False  # it died in the middle of the write
            return
        os.write(self.zombie_fd, frame)
        if not self.begun:  # the taker's tail read will see these: they count
            first = self.zombie_next
            self.expected += [(first + j, 1, v) for j, v in enumerate(values)]
        self.zombie_next += n

    @precondition(lambda self: self.zombie_alive)
    @rule()
    def zombie_rolls(self) -> None:
        """A zombie that passed its rollover check before the claim creates its next segment
        (after the begin, together with its first frame: a fenced writer never gets further)."""
        path = self.log / segment_name(self.zombie_next)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return  # the taker made that segment first: O_EXCL stops the zombie
        data = encode_segment_header(self.zombie_next)
        if self.begun:
            data += zombie_frame(self.zombie_next, [zombie_value(self.zombie_next)])
            self.zombie_next += 1
        os.write(fd, data)
        self._drop_zombie_segment()
        self.zombie_fd = fd

    @precondition(lambda self: not self.claimed and self.legit is self.a and self.a is not None)
    @rule()
    def b_claims(self) -> None:
        assert self.a is not None
        claim(self.log, 2)
        self.claimed = True
        self.legit = None
        self.zombie_fd = self.a._fd
        self.zombie_next = self.a.next_lsn
        self.zombie_alive = True

    @precondition(lambda self: self.claimed and not self.begun and self.legit is None)
    @rule()
    def b_begins(self) -> None:
        self.legit = LogWriter.open(self.log, epoch=2, sync=False, take_over=True, segment_size=400)
        self.begun = True
        assert self.legit.next_lsn == len(self.expected) + 1
        assert read_fence(self.log).begin_of(2) == len(self.expected) + 1

    @rule()
    def crash_and_reopen(self) -> None:
        """Every process dies (the zombie's lock goes with it); the log is opened normally."""
        if self.legit is not None and self.legit is not self.a:
            self.legit.close()
        self._drop_zombie_segment()
        if self.a is not None:
            self.a.close()
        self.a = None
        self.zombie_alive = False
        epoch = 2 if self.claimed else 1
        self.legit = LogWriter.open(self.log, epoch=epoch, sync=False, segment_size=400)
        if self.claimed:
            self.begun = True  # nothing more to take over in this run
        assert self.legit.next_lsn == len(self.expected) + 1

    @invariant()
    def readers_see_the_expected_records(self) -> None:
        if not hasattr(self, "dir"):
            return
        assert log_contents(self.log) == self.expected
        self.reader.refresh()  # a long-lived reader, across the takeover
        assert [(r.lsn, r.epoch, r.value) for r in self.reader.records()] == self.expected


TakeoverMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_takeover_interleavings = TakeoverMachine.TestCase


# -- the fence file ----------------------------------------------------------------------------


def _empty_log(tmp_path: Path) -> Path:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False) as w:
        w.append([record(1)])
    return log


def test_a_torn_last_entry_is_ignored_and_cut_by_the_next_append(tmp_path: Path) -> None:
    log = _empty_log(tmp_path)
    claim(log, 2)
    with open(log / "fence", "ab") as f:
        f.write(FenceEntry(3, CLAIM, 0).encode()[:10])  # a claim cut short by a crash
    fence = read_fence(log)
    assert [(e.epoch, e.kind) for e in fence.entries] == [(2, CLAIM)]
    assert fence.torn == 10 and fence.highest_epoch == 2
    whole_but_bad = bytearray(FenceEntry(3, CLAIM, 0).encode())
    whole_but_bad[0] ^= 1
    (log / "fence").write_bytes((log / "fence").read_bytes()[:ENTRY_SIZE] + whole_but_bad)
    assert read_fence(log).highest_epoch == 2  # a bad CRC at the very end: torn, too
    claim(log, 3)
    assert os.path.getsize(log / "fence") == 2 * ENTRY_SIZE
    assert [e.epoch for e in read_fence(log).entries] == [2, 3]


def test_a_damaged_middle_entry_is_refused_in_one_line(tmp_path: Path) -> None:
    log = _empty_log(tmp_path)
    claim(log, 2)
    with LogWriter.open(log, epoch=2, sync=False, take_over=True) as b:
        b.append([record(2)])
    data = bytearray((log / "fence").read_bytes())
    data[4] ^= 0xFF  # the first entry's kind
    (log / "fence").write_bytes(bytes(data))
    with pytest.raises(FenceCorruptError) as caught:
        read_fence(log)
    message = str(caught.value)
    assert "\n" not in message
    assert str(log / "fence") in message and "byte 0" in message
    assert isinstance(caught.value, CorruptLogError)
    with pytest.raises(FenceCorruptError):
        LogReader(log)
    with pytest.raises(FenceCorruptError):
        claim(log, 3)
    assert [d.file.name for d in verify_log(log).damaged] == ["fence"]


def test_a_claim_is_refused_when_an_equal_or_higher_epoch_exists(tmp_path: Path) -> None:
    log = _empty_log(tmp_path)
    claim(log, 5)
    for epoch in (3, 5):
        with pytest.raises(FencedError, match="epoch 5 already claimed"):
            claim(log, epoch)
    assert [e.epoch for e in read_fence(log).entries] == [5]


def test_a_takeover_needs_its_own_claim_and_begins_once(tmp_path: Path) -> None:
    log = _empty_log(tmp_path)
    with pytest.raises(LogError, match="needs claim"):
        LogWriter.open(log, epoch=2, sync=False, take_over=True)
    assert not (log / "fence").exists()
    claim(log, 2)
    with LogWriter.open(log, epoch=2, sync=False, take_over=True) as b:
        b.append([record(2)])
    with pytest.raises(FencedError):
        LogWriter.open(log, epoch=2, sync=False, take_over=True)
    claim(log, 3)
    with pytest.raises(FencedError):
        LogWriter.open(log, epoch=2, sync=False)
    fence = read_fence(log)
    assert [(e.epoch, e.kind, e.lsn) for e in fence.entries] == [
        (2, CLAIM, 0),
        (2, BEGIN, 2),
        (3, CLAIM, 0),
    ]
    assert fence.void_from(1) == 2 and fence.void_from(2) is None  # a claim voids nothing
    with LogWriter.open(log, epoch=3, sync=False, take_over=True) as c:
        assert c.next_lsn == 3
    assert read_fence(log).void_from(2) == 3


def test_a_log_without_a_fence_file_reads_and_writes_as_before(tmp_path: Path) -> None:
    log = _empty_log(tmp_path)
    with LogWriter.open(log, epoch=1, sync=False) as w:
        assert not w.fenced()
        w.append([record(2)])
    assert not (log / "fence").exists()
    assert log_contents(log) == [(1, 1, record(1)), (2, 1, record(2))]
    assert json.loads((log / "meta.json").read_text())["format_version"] == 1


def test_a_claim_raises_the_metadata_version_so_older_readers_refuse_the_log(
    tmp_path: Path,
) -> None:
    """A reader that predates the fence would serve a zombie's void records: it must refuse."""
    log = _empty_log(tmp_path)
    claim(log, 2)
    assert json.loads((log / "meta.json").read_text())["format_version"] == 2
    with LogWriter.open(log, epoch=2, sync=False, take_over=True) as b:
        b.record_code_version("app.py:Server", "v2")  # any later rewrite keeps version 2
    assert json.loads((log / "meta.json").read_text())["format_version"] == 2
    assert [p.name for p in log.iterdir() if p.name.endswith(".tmp")] == []
    assert log_contents(log) == [(1, 1, record(1))]


def test_a_takeover_is_not_blocked_by_a_writer_stopped_inside_an_index_write(
    tmp_path: Path,
) -> None:
    """The old primary, stopped (SIGSTOP) inside a write transaction of the log's lmdb index,
    holds its writer mutex until it dies: the taker must not open that index for writing."""
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False)
    a.append([record(i) for i in range(1, 4)])
    a.close()
    claim(log, 2)
    with stopped_inside_lmdb_write(log / "index"):

        def take_over_and_append() -> list[Any]:
            with LogWriter.open(log, epoch=2, sync=False, take_over=True) as b:
                b.append([record(4)])
            with LogReader(log) as reader:
                return [r.value for r in reader.records()]

        assert finishes_within(10, take_over_and_append) == [record(i) for i in range(1, 5)]
    assert sorted(p.name for p in log.iterdir() if p.name.startswith("index")) == ["index"]
