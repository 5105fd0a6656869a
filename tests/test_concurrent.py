"""A writer process and readers at once; a SIGKILLed writer is taken over at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from logformat import LogReader, LogWriter
from tests.logutil import record

WRITER = """
import random, sys, time
from logformat import LogWriter
from tests.logutil import new_meta, record
rng = random.Random(3)
n = int(sys.argv[2])
with LogWriter.open(sys.argv[1], create=new_meta(), sync=True, segment_size=int(sys.argv[3])) as w:
    done = 0
    while done < n:
        size = min(n - done, rng.choice([1, 1, 2, 7, 30, 120]))
        w.append([record(done + i + 1) for i in range(size)])
        done += size
        print(done, flush=True)
        if rng.random() < 0.05:
            time.sleep(0.002)
    print("done", flush=True)
    time.sleep(float(sys.argv[4]))
"""


def _spawn(log: Path, n: int, *, segment_size: int = 64 * 1024, linger: float = 0.0):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log), str(n), str(segment_size), str(linger)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_log(log: Path) -> None:
    deadline = time.monotonic() + 20
    while not (log / "meta.json").exists():
        assert time.monotonic() < deadline, "the writer never created the log"
        time.sleep(0.005)


def test_a_follower_sees_every_record_once_in_order_while_another_process_writes(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    n = 5000
    seen = []
    with _spawn(log, n, segment_size=8 * 1024) as writer:
        _wait_for_log(log)
        with LogReader(log) as reader:
            for rec in reader.follow(1, poll_interval=0.005, idle_timeout=20):
                seen.append(rec)
                if rec.lsn == n:
                    break
        assert writer.wait(30) == 0
    assert [r.lsn for r in seen] == list(range(1, n + 1))
    assert [r.value for r in seen] == [record(i) for i in range(1, n + 1)]
    assert len(list(log.glob("*.seg"))) > 1  # the follower crossed segment rollovers


def test_random_reads_while_the_writer_appends(tmp_path: Path) -> None:
    log = tmp_path / "log"
    checked = 0
    with _spawn(log, 3000, segment_size=16 * 1024) as writer:
        _wait_for_log(log)
        with LogReader(log) as reader:
            deadline = time.monotonic() + 30
            while writer.poll() is None and time.monotonic() < deadline:
                reader.refresh()
                last = reader.last_lsn
                for lsn in {1, last // 2 or 1, last} if last else ():
                    assert reader.read(lsn).value == record(lsn)
                    checked += 1
        assert writer.wait(30) == 0
    assert checked > 0


def test_a_sigkilled_writer_is_taken_over_at_once_with_every_durable_record(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    durable = 0
    with _spawn(log, 100_000, segment_size=32 * 1024) as writer:
        assert writer.stdout is not None
        while durable < 2000:
            durable = int(writer.stdout.readline())  # append() returned: durable up to here
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    started = time.monotonic()
    with LogWriter.open(log, sync=False) as taken_over:  # no lease to wait out
        assert time.monotonic() - started < 5
        assert taken_over.next_lsn - 1 >= durable
        last = taken_over.next_lsn - 1
        taken_over.append([{"after": "takeover"}])
    with LogReader(log) as reader:
        assert [r.value for r in reader.records(1, last)] == [record(i) for i in range(1, last + 1)]
        assert reader.read(last + 1).value == {"after": "takeover"}
