"""Small helpers shared by the log tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from logformat import LogMeta, LogReader, LogWriter

T = TypeVar("T")


def new_meta() -> LogMeta:
    """Metadata for a new log (each log gets its own id, as in real use)."""
    return LogMeta("server", "samples/counter/counter.py:Server", "v1")


def record(i: int) -> dict[str, Any]:
    """An RPC-shaped record whose content depends on ``i`` (so any mix-up shows)."""
    return {"k": "call", "from": f"client-{i % 3}", "seq": i, "m": "inc", "a": [i, "x" * (i % 17)]}


def write_log(
    path: Path, groups: list[int], *, segment_size: int = 1 << 20, start_ns: int = 1_000
) -> list[Any]:
    """Append ``groups[i]`` records per append (one frame each); return every value written."""
    values: list[Any] = []
    with LogWriter.open(path, create=new_meta(), sync=False, segment_size=segment_size) as writer:
        for n, size in enumerate(groups):
            batch = [record(len(values) + j + 1) for j in range(size)]
            writer.append(batch, wall_ns=start_ns + n * 1_000)
            values.extend(batch)
    return values


def read_all(path: Path) -> list[Any]:
    with LogReader(path) as reader:
        return [r.value for r in reader.records()]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def frame_offsets(path: Path) -> list[tuple[Path, int, int]]:
    """(segment, offset, size) of every frame, from the index-free verifier's point of view."""
    from logformat._segment import SEGMENT_HEADER_SIZE, scan_segment

    out = []
    expected = 1
    for seg in segments(path):
        data = seg.read_bytes()
        result = scan_segment(
            data, start_offset=SEGMENT_HEADER_SIZE, expected_lsn=expected, is_last=True
        )
        for ref in result.frames:
            out.append((seg, ref.offset, ref.header.frame_size))
        expected = result.next_lsn
    return out


def _hold_writer_lock_stopped(path: str, max_dbs: int) -> None:
    import os
    import signal

    import lmdb

    env = lmdb.open(path, max_dbs=max_dbs)
    with env.begin(write=True):
        os.kill(os.getpid(), signal.SIGSTOP)


@contextmanager
def stopped_inside_lmdb_write(path: Path, *, max_dbs: int = 5) -> Iterator[int]:
    """A process stopped (SIGSTOP) inside a write transaction of the lmdb environment at
    ``path``, as a primary stopped at the worst moment: lmdb's writer mutex stays with it, and
    any writer of that environment waits, until the process dies (killed on leaving). Yields
    its pid once it is stopped."""
    import multiprocessing
    import os
    import signal
    import time

    # spawn: a forked child would inherit this process's open environments, which py-lmdb
    # refuses to open twice.
    child = multiprocessing.get_context("spawn").Process(
        target=_hold_writer_lock_stopped, args=(str(path), max_dbs)
    )
    child.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert child.pid is not None
            with open(f"/proc/{child.pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the child never stopped inside its transaction")
        yield child.pid
    finally:
        if child.pid is not None:
            os.kill(child.pid, signal.SIGKILL)
        child.join(10)


def finishes_within(seconds: float, work: Callable[[], T]) -> T:
    """``work()``'s result, run on a thread; fails the test if it is still running after
    ``seconds`` (a hang behind a lock must fail, not hang the suite)."""
    import faulthandler
    import threading

    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    # A C call blocked with the GIL held (py-lmdb's open_db waiting for the writer mutex) would
    # freeze this thread's join too: past the grace, faulthandler ends the run with every
    # thread's stack, a loud failure instead of a suite that hangs.
    faulthandler.dump_traceback_later(seconds + 30, exit=True)
    try:
        worker.start()
        worker.join(seconds)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert not worker.is_alive(), f"still running after {seconds} s: blocked behind a lock"
    if errors:
        raise errors[0]
    return out[0]
