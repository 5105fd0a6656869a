"""A writer process and readers at once; a SIGKILLed writer is taken over at once.

The writer runs in its own process and prints the last LSN of each append after ``append``
returns (so every printed LSN is durable), which the tests use both as a progress signal to poll
and as the promise a crash must keep. Every wait is bounded and polls a condition.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from logformat import (
    LogLockedError,
    LogReader,
    LogWriter,
    LsnOutOfRangeError,
    verify_log,
    writer_is_live,
)
from tests.logutil import new_meta, record

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0  # a bound on every wait; a healthy run needs a small fraction of it

WRITER = """
import random, sys, time
from logformat import LogWriter
from tests.logutil import new_meta, record

log, total, segment_size, seed, pause_at, nap = sys.argv[1:7]
total, pause_at, nap = int(total), int(pause_at), float(nap)
rng = random.Random(int(seed))
with LogWriter.open(log, create=new_meta(), sync=True, segment_size=int(segment_size)) as w:
    print("ready", w.next_lsn, flush=True)
    paused = False
    while w.next_lsn <= total:
        size = min(total - w.next_lsn + 1, rng.choice([1, 1, 1, 2, 3, 7, 30, 120]))
        last = w.append([record(w.next_lsn + i) for i in range(size)]).last_lsn
        print(last, flush=True)
        if pause_at and not paused and last >= pause_at:
            paused = True
            print("paused", flush=True)
            sys.stdin.readline()
        if rng.random() < nap:  # the share of appends followed by a short pause
            time.sleep(rng.uniform(0.0005, 0.002))
    print("done", flush=True)
"""

FOLLOWER = """
import hashlib, sys, time
from pathlib import Path
from logformat import LogReader

log, total = Path(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + float(sys.argv[3])
while not (log / "meta.json").exists():
    if time.monotonic() > deadline:
        sys.exit("the log never appeared")
    time.sleep(0.002)
digest, expected = hashlib.sha256(), 1
with LogReader(log) as reader:
    stop = lambda: time.monotonic() > deadline
    for rec in reader.follow(1, poll_interval=0.002, idle_timeout=30, stop=stop):
        if rec.lsn != expected:
            sys.exit(f"got LSN {rec.lsn}, expected {expected}")
        digest.update(repr((rec.lsn, rec.value)).encode())
        expected += 1
        if rec.lsn == total:
            break
print(expected - 1, digest.hexdigest(), flush=True)
"""


class Process:
    """A child process whose stdout lines are collected by a thread, for polling."""

    def __init__(self, script: str, *args: object) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.strip())
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: condition() or self._eof, timeout=TIMEOUT):
                raise AssertionError(f"timed out waiting for {what}")
            if not condition():
                raise AssertionError(f"{what}: the process ended ({self.stderr()})")

    def durable(self) -> int:
        """The newest LSN the writer reported as appended (durable), 0 before any."""
        with self._changed:
            numbers = [int(line) for line in self.lines if line.isdigit()]
        return max(numbers, default=0)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def finish(self) -> int:
        """Wait for the process to end (bounded) and for its output to be collected."""
        code = self.popen.wait(TIMEOUT)
        self._thread.join(TIMEOUT)
        return code

    def stderr(self) -> str:
        if self.popen.poll() is None or self.popen.stderr is None:
            return "still running"
        return self.popen.stderr.read()[-2000:]


@pytest.fixture
def spawn() -> Iterator[Callable[..., Process]]:
    """Start child processes; any still running when the test ends is killed."""
    started: list[Process] = []

    def start(script: str, *args: object) -> Process:
        proc = Process(script, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.wait(TIMEOUT)
        proc._thread.join(TIMEOUT)
        for stream in (proc.popen.stdin, proc.popen.stdout, proc.popen.stderr):
            if stream is not None:
                stream.close()


def _digest(last: int) -> str:
    digest = hashlib.sha256()
    for lsn in range(1, last + 1):
        digest.update(repr((lsn, record(lsn))).encode())
    return digest.hexdigest()


def test_a_follower_sees_every_record_once_in_order_while_another_process_writes(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    log = tmp_path / "log"
    total = 5000
    follower = spawn(FOLLOWER, log, total, TIMEOUT)  # a reader process, started first
    writer = spawn(WRITER, log, total, 4096, 3, total // 2, 0.1)
    writer.wait_for(lambda: bool(writer.lines) and writer.lines[0].startswith("ready"), "ready")

    seen: list[Any] = []
    writer_progress_at_half = -1
    deadline = time.monotonic() + TIMEOUT
    with LogReader(log) as reader:  # and this process follows too
        for rec in reader.follow(
            1, poll_interval=0.002, idle_timeout=TIMEOUT, stop=lambda: time.monotonic() > deadline
        ):
            seen.append(rec)
            if rec.lsn == total // 2:
                # The writer is paused here until told to go on: the rest of the log is written
                # while this follower is already waiting for it.
                writer.wait_for(lambda: "paused" in writer.lines, "the writer's pause")
                writer_progress_at_half = writer.durable()
                writer.send("go")
            if rec.lsn == total:
                break
    assert writer.finish() == 0, writer.stderr()
    assert writer.lines[-1] == "done"
    assert total // 2 <= writer_progress_at_half < total
    assert [r.lsn for r in seen] == list(range(1, total + 1))
    assert [r.value for r in seen] == [record(i) for i in range(1, total + 1)]
    assert len(list(log.glob("*.seg"))) > 5  # the followers crossed many segment rollovers

    assert follower.finish() == 0, follower.stderr()
    assert follower.lines == [f"{total} {_digest(total)}"]


def test_a_reader_opened_mid_run_reads_random_lsns_while_the_writer_appends(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    log = tmp_path / "log"
    total = 4000
    writer = spawn(WRITER, log, total, 2048, 5, 600, 1.0)
    writer.wait_for(lambda: "paused" in writer.lines, "the writer to be mid-run")
    rng = random.Random(9)
    with LogReader(log) as reader:  # opened while the writer holds the log, mid-run
        assert 600 <= reader.last_lsn < total
        writer.send("go")
        checked, last_seen, live_rounds = 0, 0, 0
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            finished = writer.popen.poll() is not None
            durable = writer.durable()
            reader.refresh()
            last = reader.last_lsn
            # Whatever the writer reported as appended is visible after a refresh.
            assert last >= durable and last >= last_seen
            assert all(d.kind == "torn-tail" for _f, d in reader.damage), reader.damage
            last_seen = last
            for lsn in (1, last, *(rng.randint(1, last) for _ in range(5))):
                assert reader.read(lsn).value == record(lsn)
                checked += 1
            a = rng.randint(1, last)
            b = min(last, a + rng.randint(0, 300))
            assert [r.value for r in reader.records(a, b)] == [record(i) for i in range(a, b + 1)]
            # One past the end: appended by now, or out of range; never reported as damaged.
            with contextlib.suppress(LsnOutOfRangeError):
                assert reader.read(last + 1).value == record(last + 1)
            if finished:
                break
            live_rounds += 1
        assert writer.finish() == 0, writer.stderr()
        assert writer.lines[-1] == "done"
        assert checked > 50 and live_rounds >= 1
        reader.refresh()
        assert reader.last_lsn == total
        assert [r.value for r in reader.records()] == [record(i) for i in range(1, total + 1)]
        assert len(list(reader._index.all_frames())) == sum(
            1 for line in writer.lines if line.isdigit()
        )


def test_a_reader_catching_up_while_the_writer_rolls_over_keeps_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer rolls over to a new segment, and indexes a frame in it, between the moment a
    reader lists the segments and the moment it reads the index's mark. The mark then names a
    segment the reader's listing lacks; that must not make the reader wipe a sound index."""
    import logformat._files as files

    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False, segment_size=1) as writer:
        for lsn in range(1, 11):
            writer.append([record(lsn)])  # every append fills its segment and rolls over
        real_list = files.list_segments
        calls: list[int] = []

        def list_then_the_writer_rolls_over(log_dir: Path) -> Any:
            listing = real_list(log_dir)
            if not calls:
                calls.append(writer.append([record(11)]).last_lsn)  # fills the newest segment
                calls.append(writer.append([record(12)]).last_lsn)  # lands in a segment not listed
            return listing

        monkeypatch.setattr(files, "list_segments", list_then_the_writer_rolls_over)
        with LogReader(log) as reader:
            assert calls == [11, 12]
            assert not reader._state.rebuilt
            monkeypatch.undo()
            for lsn in range(1, 13):
                assert reader.read(lsn).value == record(lsn)
        with LogReader(log) as reader:
            assert not reader._state.rebuilt
            assert reader.last_lsn == 12
            assert len(list(reader._index.all_frames())) == 12


def test_a_sigkilled_writer_is_taken_over_at_once_with_every_durable_record(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    log = tmp_path / "log"
    with LogWriter.open(log, create=new_meta(), sync=False):
        pass
    kill_after = [700, 1900, 3300]  # three writers in turn, each killed mid-run
    for round_ in range(len(kill_after)):
        writer = spawn(WRITER, log, 10**7, 8192, 11 + round_, 0, 0.1)  # would run for hours
        writer.wait_for(lambda: writer.durable() >= kill_after[round_], "appends")  # noqa: B023
        # While it lives, the log is locked against a second writer (without any waiting).
        assert writer_is_live(log)
        started = time.monotonic()
        with pytest.raises(LogLockedError):
            LogWriter.open(log, sync=False)
        assert time.monotonic() - started < 1

        os.kill(writer.popen.pid, signal.SIGKILL)
        assert writer.finish() == -signal.SIGKILL
        durable = writer.durable()  # every LSN it printed: append() had returned, fsync done
        assert durable >= kill_after[round_]

        # The kernel dropped the lock with the process: take over at once, no lease to wait out.
        assert not writer_is_live(log)
        started = time.monotonic()
        with LogWriter.open(log, sync=True) as taken_over:
            assert time.monotonic() - started < 5
            assert taken_over.recovery is not None
            last = taken_over.next_lsn - 1
            assert last >= durable, (last, durable, taken_over.recovery.describe())
            marker = {"takeover": round_}
            assert taken_over.append([marker]).last_lsn == last + 1
        assert verify_log(log).ok
        with LogReader(log) as reader:
            assert reader.last_lsn == last + 1
            assert reader.read(last + 1).value == marker
            # Every record before it is the one that was written there, the durable ones included.
            values = [r.value for r in reader.records(1, last)]
            takeovers = {lsn for lsn, v in enumerate(values, 1) if "takeover" in v}
            assert len(takeovers) == round_
            assert all(
                value == record(lsn) for lsn, value in enumerate(values, 1) if lsn not in takeovers
            )
