"""Apps for the causal debugger's tests and benchmark: a chain (front calls middle calls back,
with a post on the way) and a fan-in (several feeders call one counter)."""

from __future__ import annotations

from runtime import Immortal, rpc

FEEDS = 120


class Front(Immortal):
    """``go(n)`` calls the middle and remembers what came back."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0

    @rpc
    async def go(self, n: int) -> int:
        self.last = await self.ref("middle").work(n)
        self.count += 1
        return self.last


class Middle(Immortal):
    """``work(n)`` tells the back end (a post), then asks it (a call)."""

    def __init__(self) -> None:
        self.count = 0

    @rpc
    async def work(self, n: int) -> int:
        back = self.ref("back")
        back.note.post(n)
        self.count += 1
        return int(await back.add(n)) * 10


class Back(Immortal):
    """The end of the chain: a running total and the notes it was sent."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.notes = 0

    @rpc
    def add(self, n: int) -> int:
        self.count += 1
        self.total += n
        return self.total

    @rpc
    def note(self, n: int) -> None:
        self.notes += 1


class Feeder(Immortal):
    """Calls the counter FEEDS times from ``main`` (a fan-in when several run), pausing on a
    durable timer between calls so that a test has time to kill processes in the middle."""

    def __init__(self) -> None:
        self.got = 0

    async def main(self) -> None:
        counter = self.ref("counter")
        for n in range(1, FEEDS + 1):
            await counter.add(n)
            self.got += 1
            await self.sleep(0.02)


class Counter(Immortal):
    """Counts what the feeders send."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    @rpc
    def add(self, n: int) -> int:
        self.count += 1
        self.total += n
        return self.count


class Seen(Counter):
    """A counter that also says how many it has counted (so a test can wait for the feeds)."""

    @rpc
    def seen(self) -> int:
        return self.count
