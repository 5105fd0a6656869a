"""The immortals side of the RPC benchmark: a Sink that counts and a Driver that calls it.

The Driver is started by an outside call (``go``) carrying the run's parameters, so one pair of
processes serves every configuration. Timing uses ``self.now()`` (recorded, so even the
benchmark's own clock reads replay).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from runtime import Immortal, rpc


class Sink(Immortal):
    """Counts calls and checks that each caller's numbers arrive in order."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0
        self.out_of_order = 0

    @rpc
    def add(self, n: int, payload: bytes) -> int:
        if n != self.last + 1 and n != 1:
            self.out_of_order += 1
        self.last = n
        self.count += 1
        return self.count

    @rpc
    def stats(self) -> dict[str, int]:
        return {"count": self.count, "out_of_order": self.out_of_order}


class LargeSink(Sink):
    """A Sink that also keeps 200,000 small records (each a string, an int and a list), so that
    every checkpoint pauses its event loop for a noticeable time: the cost a standby takes off
    the primary (``bench_standby``)."""

    RECORDS = 200_000

    def __init__(self) -> None:
        super().__init__()
        self.table = {f"k{i}": (f"v{i}", i, [i]) for i in range(self.RECORDS)}

    @rpc
    def add(self, n: int, payload: bytes) -> int:
        self.table[f"k{n % self.RECORDS}"] = (f"v{n}", n, [n])
        return super().add(n, payload)


class Driver(Immortal):
    """Sends ``n`` calls with ``window`` in flight (1 = ping-pong); returns timings."""

    @rpc
    async def go(self, n: int, size: int, window: int) -> dict[str, Any]:
        sink = self.ref("sink")
        payload = b"x" * size
        await sink.add(1, payload)  # the link is up before the clock starts
        started = self.now()
        pending: deque[Any] = deque()
        latencies: list[float] = []
        for i in range(2, n + 2):
            pending.append(sink.add(i, payload))
            if len(pending) >= window:
                sent = self.now() if window == 1 else 0.0
                await pending.popleft()
                if window == 1:
                    latencies.append(self.now() - sent)
        while pending:
            await pending.popleft()
        return {"seconds": self.now() - started, "latencies": latencies}
