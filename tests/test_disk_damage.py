"""Disk damage that loses whole records: recovery is exact or refuses, never starts afresh.

Three kinds of damage are covered here. (1) Records lost at the end or in the middle of the log
(a segment cut or deleted) while a checkpoint proves they existed. (2) A damaged lmdb index,
which is only a cache and must never move the writer or blame a sound segment. (3) A trimmed log
whose checkpoints no longer load: what was trimmed cannot be replayed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import struct
import threading
from pathlib import Path

import pytest

from logformat import (
    CorruptLogError,
    LogReader,
    LogWriter,
    LsnOutOfRangeError,
    trim_log,
    verify_log,
)
from logformat._index import _COVERED, _FRAME, _KEY, LogIndex
from runtime import connect
from tests._instances import Cluster, Instance, run_cli
from tests.logutil import record, write_log

SEGMENT_SIZE = 600
GROUPS = [1, 5, 2, 40, 3, 1, 9, 12, 1, 7]
TOTAL = sum(GROUPS)
SERVER = "samples/counter/counter.py:Server"


def _segments(log: Path) -> list[Path]:
    return sorted(log.glob("*.seg"))


def _snapshot(log: Path) -> dict[str, str]:
    """A digest of every segment and checkpoint, to show a refusal changed nothing."""
    files = [*_segments(log), *sorted((log / "checkpoints").glob("*.ckpt"))]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _frames(log: Path) -> list[tuple[int, int, int]]:
    """(segment first LSN, offset, frame first LSN) of every frame, via the index."""
    with LogReader(log) as reader:
        return [(f.segment, f.offset, f.first_lsn) for f in reader._index.all_frames()]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "log"
    write_log(path, GROUPS, segment_size=SEGMENT_SIZE)
    assert len(_segments(path)) >= 3
    with LogWriter.open(path, sync=False) as writer:
        writer.write_checkpoint(TOTAL, {"n": TOTAL})
    return path


# -- 1. records lost while a checkpoint or a segment after them proves they existed ----------------


def _cut_newest(log: Path, how: str) -> int:
    """Damage the newest segment; return the last LSN the log still holds."""
    newest = _segments(log)[-1]
    first = int(newest.stem)
    in_newest = [f for f in _frames(log) if f[0] == first]
    if how == "segment-gone":
        newest.unlink()
        return first - 1
    victim = in_newest[-1]
    at = victim[1] if how == "frame-boundary" else victim[1] + 20
    with open(newest, "r+b") as f:
        f.truncate(at)
    return victim[2] - 1


@pytest.mark.parametrize("how", ["frame-boundary", "mid-frame", "segment-gone"])
def test_a_cut_newest_segment_behind_a_checkpoint_is_reported_and_refused(
    log: Path, how: str
) -> None:
    kept = _cut_newest(log, how)
    report = verify_log(log)
    assert not report.ok
    missing = [d for d in report.damaged if d.damage.kind == "missing"]
    assert len(missing) == 1, report.damaged
    line = missing[0].describe()
    assert f"{TOTAL:020d}.ckpt" in line and f"LSNs {kept + 1}..{TOTAL}" in line, line
    before = _snapshot(log)
    with pytest.raises(CorruptLogError) as caught:
        LogWriter.open(log, sync=False)
    message = str(caught.value)
    assert f"{TOTAL:020d}.ckpt" in message and f"{kept + 1}..{TOTAL}" in message, message
    assert "restore the missing segments" in message and "move the log aside" in message
    assert _snapshot(log) == before  # nothing cut, nothing created


def test_log_verify_names_the_missing_range_and_says_what_to_do(log: Path, tmp_path: Path) -> None:
    kept = _cut_newest(log, "mid-frame")
    done = run_cli("log", "verify", str(log), home=tmp_path / "home")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "DAMAGED" in lines[0]
    assert any(
        f"LSNs {kept + 1}..{TOTAL}" in line and f"{TOTAL:020d}.ckpt" in line for line in lines
    ), lines
    hints = [line for line in lines if line.startswith("hint:")]
    assert any("restore the missing segment" in h and "move the log aside" in h for h in hints)
    assert not any("cuts it back" in h for h in hints), hints  # the writer refuses, cuts nothing


def test_the_only_segment_deleted_with_checkpoints_left_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "log"
    write_log(log, [3, 4])
    with LogWriter.open(log, sync=False) as writer:
        writer.write_checkpoint(5, {"n": 5})
    for seg in _segments(log):
        seg.unlink()
    assert not verify_log(log).ok
    with pytest.raises(CorruptLogError, match=r"LSNs 1\.\.5"):
        LogWriter.open(log, sync=False)
    assert _segments(log) == []  # no fresh segment at LSN 1


def test_the_only_segment_deleted_with_a_code_version_recorded_later_is_refused(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    write_log(log, [3, 4])
    with LogWriter.open(log, sync=False) as writer:
        writer.record_code_version("samples/counter/counter.py:Server", "v2")  # from LSN 8
    for seg in _segments(log):
        seg.unlink()
    report = verify_log(log)
    assert any(d.damage.kind == "missing" for d in report.damaged), report.damaged
    with pytest.raises(CorruptLogError, match=r"meta\.json.*LSNs 1\.\.7"):
        LogWriter.open(log, sync=False)
    assert _segments(log) == []


def test_a_deleted_middle_segment_is_refused_even_when_the_index_covers_past_it(
    log: Path,
) -> None:
    segments = _segments(log)
    gone = segments[1]
    gone_first, next_first = int(gone.stem), int(segments[2].stem)
    gone.unlink()  # the index still covers the whole log
    report = verify_log(log)
    assert not report.ok
    assert any(
        (d.damage.first_lsn, d.damage.last_lsn) == (gone_first, next_first - 1)
        for d in report.damaged
    ), report.damaged
    before = _snapshot(log)
    with pytest.raises(CorruptLogError, match=rf"LSNs {gone_first}\.\.{next_first - 1}"):
        LogWriter.open(log, sync=False)
    assert _snapshot(log) == before


def test_a_torn_tail_with_no_checkpoint_beyond_it_is_still_cut(tmp_path: Path) -> None:
    log = tmp_path / "log"
    write_log(log, GROUPS, segment_size=SEGMENT_SIZE)
    newest = _segments(log)[-1]
    with open(newest, "ab") as f:
        f.write(b"IMFR\x01\x00garbage")
    with LogWriter.open(log, sync=False) as writer:
        assert writer.next_lsn == TOTAL + 1
        assert writer.recovery is not None and writer.recovery.truncated is not None


def _run_and_checkpoint(home: Path, cluster: Cluster) -> tuple[Instance, Path]:
    """An instance that made 11 calls and checkpointed after some of them, stopped cleanly."""
    server = cluster.start(SERVER, "server", "--checkpoint-seconds", "0.2")
    pause = threading.Event()
    with connect(home) as client:
        counts = [client.call("server", "inc") for _ in range(5)]
        pause.wait(0.5)
        counts += [client.call("server", "inc") for _ in range(5)]
        pause.wait(0.5)
        counts.append(client.call("server", "inc"))
    assert counts == list(range(1, 12))
    assert server.stop() == 0
    log = server.log_dir()
    assert sorted((log / "checkpoints").glob("*.ckpt")), "the instance wrote no checkpoint"
    return server, log


def _restart_refuses(server: Instance) -> str:
    """Start again; it must exit non-zero with exactly one line on stderr (returned)."""
    seen = len(server.stderr)
    server.start(wait=False)
    assert server.proc is not None
    assert server.proc.wait(60) != 0
    lines = [line for line in server.stderr[seen:] if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_an_instance_whose_only_segment_was_deleted_refuses_to_start(
    home: Path, cluster: Cluster
) -> None:
    server, log = _run_and_checkpoint(home, cluster)
    newest = max(int(p.stem) for p in (log / "checkpoints").glob("*.ckpt"))
    for seg in _segments(log):
        seg.unlink()
    before = _snapshot(log)
    line = _restart_refuses(server)
    assert f"{newest:020d}.ckpt" in line and f"LSNs 1..{newest}" in line, line
    assert "restore the missing segments" in line, line
    assert _snapshot(log) == before and _segments(log) == []


# -- 2. the index is a cache: it never moves the writer, and never blames a sound segment ---------


def _put_covered(log: Path, **changes: int) -> None:
    index = LogIndex(log)
    try:
        cov = index.coverage()
        assert cov is not None
        cov = dataclasses.replace(cov, **changes)
        with index._env.begin(write=True) as txn:
            txn.put(
                b"covered",
                _COVERED.pack(
                    cov.segment, cov.end_offset, cov.next_lsn, cov.max_epoch, cov.last_wall_ns
                ),
                db=index._meta,
            )
    finally:
        index.close()


@pytest.mark.parametrize(
    "change",
    [
        {"next_lsn": 2},  # a flipped bit sent the mark back
        {"next_lsn": TOTAL + 1 + 2048},  # ... or forward
        {"end_offset": 40},
        {"max_epoch": 1 << 20},
        {"last_wall_ns": 1 << 60},
    ],
    ids=["lsn-low", "lsn-high", "offset", "epoch", "wall"],
)
def test_a_wrong_covered_mark_never_moves_the_writer(
    tmp_path: Path, change: dict[str, int]
) -> None:
    log = tmp_path / "log"
    values = write_log(log, GROUPS, segment_size=SEGMENT_SIZE)
    _put_covered(log, **change)
    with LogWriter.open(log, sync=False, segment_size=SEGMENT_SIZE) as writer:
        assert writer.next_lsn == TOTAL + 1
        assert writer.max_epoch == 1
        writer.append([record(TOTAL + 1)], wall_ns=10**9)
    assert verify_log(log).ok
    with LogReader(log) as reader:
        assert [r.value for r in reader.records()] == [*values, record(TOTAL + 1)]
        assert reader.read(TOTAL + 1).wall_ns == 10**9


def test_a_wrong_covered_mark_is_not_believed_by_a_reader(tmp_path: Path) -> None:
    log = tmp_path / "log"
    values = write_log(log, GROUPS, segment_size=SEGMENT_SIZE)
    _put_covered(log, next_lsn=TOTAL + 1 + 2048)
    with LogReader(log) as reader:
        assert reader.last_lsn == TOTAL
        assert [r.value for r in reader.records()] == values


def test_a_wrong_frame_entry_does_not_blame_a_sound_segment(tmp_path: Path) -> None:
    log = tmp_path / "log"
    values = write_log(log, GROUPS, segment_size=SEGMENT_SIZE)
    index = LogIndex(log)
    try:
        with index._env.begin(write=True, db=index._frames) as txn:
            target = _KEY.pack(1 + GROUPS[0] + GROUPS[1])  # the frame of LSNs 7..8
            fields = list(_FRAME.unpack(txn.get(target)))
            fields[1] += 3  # offset: now points into the middle of a frame
            txn.put(target, _FRAME.pack(*fields))
    finally:
        index.close()
    with LogReader(log) as reader:
        assert reader.read(7).value == values[6]
        assert [r.value for r in reader.records()] == values
    assert verify_log(log).ok


def test_a_frame_entry_with_a_wrong_record_count_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "log"
    values = write_log(log, GROUPS, segment_size=SEGMENT_SIZE)
    index = LogIndex(log)
    try:
        with index._env.begin(write=True, db=index._frames) as txn:
            target = _KEY.pack(1)
            fields = list(_FRAME.unpack(txn.get(target)))
            fields[2] = 6  # claims LSNs 1..6; the frame holds only LSN 1
            txn.put(target, _FRAME.pack(*fields))
    finally:
        index.close()
    with LogReader(log) as reader:
        assert [reader.read(lsn).value for lsn in range(1, 9)] == values[:8]


def test_a_wrong_time_entry_is_not_believed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    write_log(log, GROUPS, segment_size=SEGMENT_SIZE, start_ns=1_000)
    with LogReader(log) as reader:
        right = reader.seek_time(2_500)
    index = LogIndex(log)
    try:
        with index._env.begin(write=True, db=index._times) as txn:
            txn.put(struct.pack(">QQ", 2_600 + (1 << 63), 9_999), b"")  # no frame starts there
    finally:
        index.close()
    with LogReader(log) as reader:
        assert right == 7
        assert reader.seek_time(2_500) == right


def test_the_writer_refuses_when_the_last_covered_frame_is_no_longer_whole(
    tmp_path: Path,
) -> None:
    """The index covered the frame, so its fsync had returned: damage there is not a torn tail,
    and the writer must neither cut it nor append after it."""
    log = tmp_path / "log"
    write_log(log, GROUPS, segment_size=SEGMENT_SIZE)
    newest = _segments(log)[-1]
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last frame's body
    newest.write_bytes(bytes(data))
    before = _snapshot(log)
    with pytest.raises(CorruptLogError, match=f"LSN {TOTAL - GROUPS[-1] + 1}..{TOTAL}"):
        LogWriter.open(log, sync=False)
    assert _snapshot(log) == before


# -- 3. trimmed history cannot be replayed ----------------------------------------------------------


def test_records_below_a_trimmed_start_are_an_error(log: Path) -> None:
    below = int(_segments(log)[2].stem)
    trim_log(log, below)
    with LogReader(log) as reader:
        assert reader.first_lsn == below
        for start in (1, below - 1):
            with pytest.raises(LsnOutOfRangeError, match=f"first LSN it holds is {below}"):
                list(reader.records(start))
        assert next(reader.records()).lsn == below
        assert next(reader.records(below)).lsn == below


def test_records_from_zero_on_an_untrimmed_log_start_at_one(tmp_path: Path) -> None:
    log = tmp_path / "log"
    write_log(log, [2, 3])
    with LogReader(log) as reader:
        assert [r.lsn for r in reader.records(0, 3)] == [1, 2, 3]


def _split_segment(log: Path) -> int:
    """Split the only segment at its second frame (a log as a small segment size would make it).

    Returns the new segment's first LSN. The index is removed; it is rebuilt on the next open.
    """
    from logformat._segment import encode_segment_header, segment_name

    (seg,) = _segments(log)
    frames = _frames(log)
    assert len(frames) >= 3
    _, offset, first = frames[1]
    data = seg.read_bytes()
    seg.write_bytes(data[:offset])
    (log / segment_name(first)).write_bytes(encode_segment_header(first) + data[offset:])
    shutil.rmtree(log / "index")
    return first


def test_a_trimmed_log_without_a_loadable_checkpoint_refuses_to_start(
    home: Path, cluster: Cluster
) -> None:
    server, log = _run_and_checkpoint(home, cluster)
    first = _split_segment(log)
    report = trim_log(log, first)
    assert report.first_lsn == first > 1
    remaining = sorted((log / "checkpoints").glob("*.ckpt"))
    assert remaining
    for ckpt in remaining:  # a flipped byte in each body: none loads any more
        data = bytearray(ckpt.read_bytes())
        data[-1] ^= 0x40
        ckpt.write_bytes(bytes(data))
    before = _snapshot(log)
    with LogReader(log) as reader:
        last = reader.last_lsn

    line = _restart_refuses(server)
    assert f"first LSN it still holds is {first}" in line, line
    for ckpt in remaining:
        assert ckpt.name in line, line
    assert "restore" in line, line
    assert _snapshot(log) == before  # nothing appended, nothing cut
    with LogReader(log) as reader:
        assert reader.last_lsn == last
