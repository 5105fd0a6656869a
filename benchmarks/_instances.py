"""Instance processes for the benchmarks that start, kill and replace them (upgrade, failover),
and a client thread calling an instance in a loop, noting when each reply came: what they
watch (the pause a caller sees) and check (replies 1..N)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.bench_rpc import REPO


def immortals(home: Path, *args: str, err: Path) -> subprocess.Popen[bytes]:
    """``immortals --home HOME ARGS...`` in the background, its stderr appended to ``err``."""
    with open(err, "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "runtime", "--home", str(home), *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO,
        )


def wait_for(path: Path, text: str, count: int = 1, timeout: float = 60.0) -> None:
    """Until ``text`` appears ``count`` times in the file ``path`` (a process's stderr)."""
    deadline = time.monotonic() + timeout
    while not path.exists() or path.read_text().count(text) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no {text!r} in {path} after {timeout:g} s")
        time.sleep(0.005)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process still running, and wait for it."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


class CallingLoop:
    """Calls ``name.inc()`` with keys of its own until stopped; ``replies`` holds
    ``(monotonic time, value)`` of each reply, in order."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name
        self.replies: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="calling-loop")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from runtime import connect

        with connect(self.home, timeout=60) as client:
            i = 0
            while not self._stop.is_set():
                value = client.call(self.name, "inc", key=f"c{i}")
                self.replies.append((time.monotonic(), value))
                i += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def check(self) -> int:
        """Refuse the run unless the replies were exactly 1..N (nothing lost, nothing
        doubled); N."""
        values = [v for _, v in self.replies]
        if values != list(range(1, len(values) + 1)):
            raise SystemExit("bench: the replies were not exactly 1..N: something was lost")
        return len(values)
