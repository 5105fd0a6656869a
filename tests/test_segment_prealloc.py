"""Preallocated segments (FORMAT.md 3.1): a zero tail is the end of data, never damage.

A version-2 segment may end in zero bytes that the writer allocated ahead of its data so that
an append's fdatasync need not record a new file size. Every reader must take zeros from where
the next frame would start to the end of the file as the end of the data; anything else in that
tail (a torn write, a flipped bit) is judged as before: a torn tail in the newest segment,
corruption in a sealed one; zeros followed by sound frames are corruption. The writer appends
over a zero tail only after reading it, cuts a torn one (and allocates again), and a zombie
writing into its preallocated tail after a takeover is void.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logformat import FrameEncoder, LogReader, LogWriter, claim, verify_log
from logformat._segment import (
    SEGMENT_HEADER_SIZE,
    encode_segment_header,
    may_have_zero_tail,
    scan_segment,
    segment_name,
)
from tests import spec_reader
from tests.logutil import new_meta, record

ROOT = Path(__file__).resolve().parent.parent
ENCODER = FrameEncoder()
CHUNK = 4096


def frame(first_lsn: int, values: list[Any], *, epoch: int = 1, wall_ns: int = 1_000) -> bytes:
    raw = ENCODER.pack_records(values)
    return ENCODER.encode(
        raw, first_lsn=first_lsn, record_count=len(values), epoch=epoch, wall_ns=wall_ns
    )


def frames_of(groups: list[int], first_lsn: int = 1) -> tuple[bytes, list[int], int]:
    """Frames for ``groups`` (records per frame): their bytes, each frame's offset in a segment
    (after the header) and the LSN after the last one."""
    out, offsets, lsn, at = [], [], first_lsn, SEGMENT_HEADER_SIZE
    for size in groups:
        data = frame(lsn, [record(lsn + i) for i in range(size)], wall_ns=lsn)
        out.append(data)
        offsets.append(at)
        at += len(data)
        lsn += size
    return b"".join(out), offsets, lsn


def values_upto(last: int) -> list[Any]:
    return [record(i) for i in range(1, last + 1)]


def read_values(log: Path) -> list[Any]:
    with LogReader(log) as reader:
        return [r.value for r in reader.records()]


def make_log(tmp: Path, segment: bytes, *, first_lsn: int = 1) -> Path:
    """A log directory holding one segment with exactly these bytes (meta says version 3)."""
    log = tmp / "log"
    with LogWriter.open(log, create=new_meta(), sync=False, preallocate=CHUNK):
        pass
    for seg in log.glob("*.seg"):
        seg.unlink()
    (log / segment_name(first_lsn)).write_bytes(segment)
    return log


groups_st = st.lists(st.integers(1, 6), min_size=0, max_size=8)


# -- the scanner -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(groups=groups_st, tail=st.integers(0, 5000), is_last=st.booleans())
def test_a_zero_tail_of_any_length_is_the_end_of_data(
    groups: list[int], tail: int, is_last: bool
) -> None:
    body, offsets, next_lsn = frames_of(groups)
    data = encode_segment_header(1) + body + bytes(tail)
    result = scan_segment(data, expected_lsn=1, is_last=is_last, zero_tail=True)
    assert [r.offset for r in result.frames] == offsets
    assert result.damage == [] and result.void_at is None
    assert result.next_lsn == next_lsn
    assert result.end_offset == SEGMENT_HEADER_SIZE + len(body)
    assert result.zero_tail_at == (result.end_offset if tail else None)
    part = spec_reader.read_segment(data)
    assert not part.torn and part.end == result.end_offset
    assert sum(len(f.records) for f in part.frames) == next_lsn - 1


@settings(max_examples=60, deadline=None)
@given(groups=groups_st, tail=st.integers(1, 3000), is_last=st.booleans())
def test_zeros_after_the_last_frame_of_a_version_1_segment_are_still_damage(
    groups: list[int], tail: int, is_last: bool
) -> None:
    body, _offsets, next_lsn = frames_of(groups)
    data = encode_segment_header(1, zero_tail=False) + body + bytes(tail)
    assert not may_have_zero_tail(data)  # what every caller of the scanner asks the header
    result = scan_segment(data, expected_lsn=1, is_last=is_last, zero_tail=False)
    assert [d.kind for d in result.damage] == ["torn-tail" if is_last else "corrupt"]
    assert result.damage[0].first_lsn == next_lsn
    assert spec_reader.read_segment(data).torn


@settings(max_examples=150, deadline=None)
@given(
    groups=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    tail=st.integers(0, 3000),
    data=st.data(),
)
def test_a_write_torn_into_the_zero_tail_is_a_torn_tail_or_corruption(
    groups: list[int], tail: int, data: st.DataObject
) -> None:
    """The last frame landed only in part (a prefix, or any subset of its 512-byte sectors, as
    writeback may reorder them); the rest of the frame and the tail are zeros."""
    body, offsets, _next = frames_of(groups)
    last = body[offsets[-1] - SEGMENT_HEADER_SIZE :]
    sectors = list(range(0, len(last), 512))
    kept = data.draw(st.sets(st.sampled_from(sectors)), label="sectors kept")
    cut = data.draw(st.integers(0, len(last) - 1), label="prefix kept")
    torn = bytearray(len(last))
    torn[:cut] = last[:cut]
    for at in kept:
        torn[at : at + 512] = last[at : at + 512]
    if bytes(torn) == last:
        torn[-1] ^= 0xFF  # it must be torn somewhere
    segment = encode_segment_header(1) + body[: len(body) - len(last)] + bytes(torn) + bytes(tail)
    sound_end = offsets[-1]
    for is_last in (True, False):
        result = scan_segment(segment, expected_lsn=1, is_last=is_last, zero_tail=True)
        assert len(result.frames) == len(groups) - 1
        assert result.end_offset == sound_end
        if not any(torn):  # nothing landed: the zeros start where the frame would have
            assert result.damage == [] and result.zero_tail_at == sound_end
            continue
        assert [d.kind for d in result.damage] == ["torn-tail" if is_last else "corrupt"]
        assert result.damage[0].offset == sound_end
        assert result.damage[0].first_lsn == sum(groups[:-1]) + 1


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    groups=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    tail=st.integers(1, 3000),
    data=st.data(),
)
def test_a_bit_flipped_in_the_zero_tail_is_seen_and_cut_by_the_writer(
    tmp_path_factory: Any, groups: list[int], tail: int, data: st.DataObject
) -> None:
    body, _offsets, next_lsn = frames_of(groups)
    flip = data.draw(st.integers(0, tail - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    zeros = bytearray(tail)
    zeros[flip] = 1 << bit
    segment = encode_segment_header(1) + body + bytes(zeros)
    end = SEGMENT_HEADER_SIZE + len(body)
    sealed = scan_segment(segment, expected_lsn=1, is_last=False, zero_tail=True)
    assert [d.kind for d in sealed.damage] == ["corrupt"] and sealed.damage[0].offset == end
    log = make_log(tmp_path_factory.mktemp("flip"), segment)
    report = verify_log(log)
    assert [d.damage.kind for d in report.damaged] == ["torn-tail"], [
        d.describe() for d in report.damaged
    ]
    assert report.damaged[0].damage.offset == end
    with LogReader(log) as reader:
        assert reader.last_lsn == next_lsn - 1
    assert read_values(log) == values_upto(next_lsn - 1)
    with LogWriter.open(log, sync=False, preallocate=CHUNK) as writer:
        assert writer.recovery is not None and writer.recovery.truncated is not None
        assert writer.recovery.truncated.offset == end
        writer.append([record(next_lsn)])
    seg = log / segment_name(1)
    assert seg.stat().st_size > end  # allocated again after the cut
    assert not any(seg.read_bytes()[end + len(frame(next_lsn, [record(next_lsn)])) :])
    assert read_values(log) == values_upto(next_lsn)
    assert verify_log(log).ok


@settings(max_examples=100, deadline=None)
@given(
    groups=st.lists(st.integers(1, 6), min_size=2, max_size=8),
    data=st.data(),
    tail=st.integers(0, 2000),
)
def test_zeros_in_the_middle_followed_by_sound_frames_are_corruption(
    groups: list[int], data: st.DataObject, tail: int
) -> None:
    body, offsets, _next = frames_of(groups)
    victim = data.draw(st.integers(0, len(groups) - 2), label="zeroed frame")
    start = offsets[victim] - SEGMENT_HEADER_SIZE
    end = offsets[victim + 1] - SEGMENT_HEADER_SIZE
    zeroed = body[:start] + bytes(end - start) + body[end:]
    segment = encode_segment_header(1) + zeroed + bytes(tail)
    for is_last in (True, False):
        result = scan_segment(segment, expected_lsn=1, is_last=is_last, zero_tail=True)
        assert len(result.frames) == victim
        assert [d.kind for d in result.damage] == ["corrupt"]
        d = result.damage[0]
        assert (d.offset, d.end_offset) == (offsets[victim], offsets[victim + 1])
        assert (d.first_lsn, d.last_lsn) == (sum(groups[:victim]) + 1, sum(groups[: victim + 1]))
    with pytest.raises(spec_reader.SpecError, match="corruption"):
        spec_reader.read_segment(segment)


# -- the writer --------------------------------------------------------------------------------


def test_a_synced_writer_preallocates_in_chunks_and_rolls_over_at_the_segment_size(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    segment_size = 5 * CHUNK
    with LogWriter.open(
        log, create=new_meta(), sync=True, segment_size=segment_size, preallocate=CHUNK
    ) as writer:
        seg = log / segment_name(1)
        assert seg.stat().st_size == SEGMENT_HEADER_SIZE + CHUNK  # allocated at creation
        sizes = set()
        for i in range(1, 400):
            writer.append([record(i)])
            sizes.add(os.path.getsize(writer._segment.path))  # type: ignore[union-attr]
            assert writer._offset <= os.path.getsize(writer._segment.path)  # type: ignore[union-attr]
            assert os.path.getsize(writer._segment.path) - writer._offset <= CHUNK  # type: ignore[union-attr]
        assert len(sizes) < 400 // 10  # the file grew once per chunk, not once per append
    assert json.loads((log / "meta.json").read_text())["format_version"] == 3
    segs = sorted(log.glob("*.seg"))
    assert len(segs) > 1
    for seg in segs:
        assert seg.read_bytes()[8:12] == bytes([2, 0, 2, 0])  # read and write version 2
    frames: dict[Path, int] = {}
    with LogReader(log) as reader:
        for loc in reader._index.all_frames():
            path = log / segment_name(loc.segment)
            frames[path] = max(frames.get(path, 0), loc.offset + 48 + loc.stored_size)
    for seg in segs[:-1]:  # sealed when their data reached the segment size
        assert frames[seg] >= segment_size
        assert seg.stat().st_size == frames[seg]  # never allocated past it
    assert read_values(log) == values_upto(399)
    assert verify_log(log).ok
    assert spec_reader.read_log(log) == list(enumerate(values_upto(399), start=1))
    with LogWriter.open(log, sync=True, segment_size=segment_size, preallocate=CHUNK) as writer:
        assert writer.recovery is not None and writer.recovery.truncated is None
        assert writer.next_lsn == 400
        writer.append([record(400)])
    assert read_values(log) == values_upto(400)


def test_without_preallocation_the_log_stays_version_1(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False) as writer:
        writer.append([record(1)])
        size = os.path.getsize(writer._segment.path)  # type: ignore[union-attr]
        assert size == writer._offset
    assert json.loads((log / "meta.json").read_text())["format_version"] == 1
    assert (log / segment_name(1)).read_bytes()[8:12] == bytes([1, 0, 1, 0])
    # A preallocating writer goes on in the version-1 segment (growing it), and makes the next
    # one version 2, having first raised the metadata.
    with LogWriter.open(log, sync=False, preallocate=CHUNK, segment_size=200) as writer:
        for i in range(2, 6):
            writer.append([record(i)])
    segs = sorted(log.glob("*.seg"))
    assert segs[0].read_bytes()[8:12] == bytes([1, 0, 1, 0])
    assert all(s.read_bytes()[8:12] == bytes([2, 0, 2, 0]) for s in segs[1:])
    assert json.loads((log / "meta.json").read_text())["format_version"] == 3
    assert read_values(log) == values_upto(5)
    assert spec_reader.read_log(log) == list(enumerate(values_upto(5), start=1))


def test_a_claim_keeps_version_3(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False, preallocate=CHUNK) as writer:
        writer.append([record(1)])
    claim(log, 2)
    assert json.loads((log / "meta.json").read_text())["format_version"] == 3
    with LogWriter.open(log, epoch=2, sync=False, take_over=True) as b:
        b.record_code_version("app.py:Server", "v2")
    assert json.loads((log / "meta.json").read_text())["format_version"] == 3


def test_the_writer_never_appends_after_bytes_it_has_not_seen_are_zeros(tmp_path: Path) -> None:
    """An index that covers the log cannot vouch for the tail: the writer reads it."""
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False, preallocate=CHUNK) as writer:
        writer.append([record(1)])
        writer.append([record(2)])
        end = writer._offset
    seg = log / segment_name(1)
    with open(seg, "r+b") as f:
        f.seek(end + 1000)
        f.write(b"\x01")  # one stray byte deep in the tail; the index is up to date
    with LogWriter.open(log, sync=False, preallocate=CHUNK) as writer:
        assert writer.recovery is not None and writer.recovery.truncated is not None
        assert writer.recovery.truncated.offset == end
        writer.append([record(3)])
    assert read_values(log) == values_upto(3)
    assert not any(seg.read_bytes()[end + len(frame(3, [record(3)])) :])
    assert verify_log(log).ok


# -- takeovers ---------------------------------------------------------------------------------


def test_a_zombie_writing_into_its_preallocated_tail_after_a_takeover_is_void(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    a = LogWriter.open(log, create=new_meta(), epoch=1, sync=False, preallocate=CHUNK)
    a.append([record(i) for i in range(1, 4)])
    a.append([record(i) for i in range(4, 6)])
    seg = a._segment.path  # type: ignore[union-attr]
    size = os.path.getsize(seg)
    assert size > a._offset  # it holds a zero tail

    claim(log, 2)
    b = LogWriter.open(log, epoch=2, sync=False, take_over=True, preallocate=CHUNK)
    assert b.next_lsn == 6
    assert os.path.getsize(seg) == size  # the taker cuts nothing
    # A zombie past its check: a whole frame, then a torn one, over its own zero tail.
    os.write(a._fd, frame(6, [{"zombie": 6}], epoch=1))
    torn = frame(7, [{"zombie": 7}], epoch=1)
    os.write(a._fd, torn[: len(torn) // 2])
    assert os.path.getsize(seg) == size  # it wrote inside the file, which did not grow
    b.append([record(6)])
    b.append([record(7)])
    expected = values_upto(7)
    assert read_values(log) == expected
    report = verify_log(log)
    assert report.damaged == [] and report.last_lsn == 7, [d.describe() for d in report.damaged]
    assert spec_reader.read_log(log) == list(enumerate(expected, start=1))
    b.close()
    a.close()
    with LogWriter.open(log, epoch=2, sync=False, preallocate=CHUNK) as c:
        assert c.recovery is not None and c.recovery.truncated is None
        assert c._segment is not None and c._segment.first_lsn == 6
        c.append([record(8)])
    assert os.path.getsize(seg) == size  # the zombie's segment is never cut nor appended to
    assert read_values(log) == values_upto(8)
    with LogReader(log) as reader:
        assert [r.epoch for r in reader.records()] == [1] * 5 + [2] * 3


def test_a_zombie_segment_of_zeros_named_x_is_renamed_aside(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), epoch=1, sync=False, preallocate=CHUNK) as a:
        a.append([record(1)])
    # A zombie rolled over: its new segment holds a header and preallocated zeros only.
    (log / segment_name(2)).write_bytes(encode_segment_header(2) + bytes(CHUNK))
    claim(log, 2)
    with LogWriter.open(log, epoch=2, sync=False, take_over=True, preallocate=CHUNK) as b:
        assert b.next_lsn == 2
        b.append([record(2)])
    assert len(list(log.glob("*.void-*"))) == 1
    assert read_values(log) == values_upto(2)


# -- crashes -----------------------------------------------------------------------------------

WRITER = """
import sys
from logformat import LogWriter
from tests.logutil import new_meta, record

log, chunk = sys.argv[1], int(sys.argv[2])
with LogWriter.open(log, create=new_meta(), sync=True, segment_size=3 * chunk,
                    preallocate=chunk) as w:
    while True:
        last = w.append([record(w.next_lsn + i) for i in range(w.next_lsn % 3 + 1)]).last_lsn
        print(last, flush=True)
"""

HALF_FRAME = """
import os, sys
from logformat import LogWriter
from tests.logutil import new_meta, record

def die(where):
    os.kill(os.getpid(), 9)

log, n = sys.argv[1], int(sys.argv[2])
with LogWriter.open(log, create=new_meta(), sync=True, preallocate=4096) as w:
    for i in range(1, n + 1):
        w.append([record(i)])
    w._fault_hook = die
    w.append([record(n + 1), record(n + 2)])
"""


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_mid_append_keeps_every_acknowledged_record(tmp_path: Path, seed: int) -> None:
    log = tmp_path / "log"
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log), str(2048)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    ) as proc:
        assert proc.stdout is not None
        acknowledged = 0
        deadline = time.monotonic() + 60
        target = 40 + 37 * seed
        while acknowledged < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the writer ended"
            acknowledged = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert acknowledged >= target
    with LogReader(log) as reader:
        assert reader.last_lsn >= acknowledged
        last = reader.last_lsn
        assert [r.value for r in reader.records()] == values_upto(last)
    with LogWriter.open(log, sync=True, segment_size=3 * 2048, preallocate=2048) as writer:
        assert writer.next_lsn == last + 1
        writer.append([record(last + 1)])
    assert read_values(log) == values_upto(last + 1)
    assert verify_log(log).ok
    assert spec_reader.read_log(log) == list(enumerate(values_upto(last + 1), start=1))


def test_a_kill_with_half_a_frame_in_the_zero_tail_is_cut_and_allocated_again(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    proc = subprocess.run(
        [sys.executable, "-c", HALF_FRAME, str(log), "5"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    seg = log / segment_name(1)
    size = seg.stat().st_size
    report = verify_log(log)
    assert [d.damage.kind for d in report.damaged] == ["torn-tail"]
    end = report.damaged[0].damage.offset
    assert size > end  # the half frame sits inside the preallocated file
    assert read_values(log) == values_upto(5)
    with LogWriter.open(log, sync=True, preallocate=4096) as writer:
        assert writer.recovery is not None and writer.recovery.truncated is not None
        assert writer.recovery.truncated.offset == end
        assert writer.next_lsn == 6
        writer.append([record(6)])
    assert seg.stat().st_size > end + 100  # a zero tail again
    assert read_values(log) == values_upto(6)
    assert verify_log(log).ok
