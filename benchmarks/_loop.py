"""A client thread calling an instance in a loop, noting when each reply came: what the
upgrade and failover benchmarks watch (the pause a caller sees) and check (replies 1..N)."""

from __future__ import annotations

import threading
import time
from pathlib import Path


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
