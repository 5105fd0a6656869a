"""Apps for the exactly-once tests: callers that number their calls, a server that checks."""

from __future__ import annotations

from typing import Any

from runtime import Immortal, rpc

CALLS = 500
MIXED = 60


class Tally(Immortal):
    """Counts calls and remembers, per caller, every number it received, in arrival order."""

    def __init__(self) -> None:
        self.count = 0
        self.seen: dict[str, list[int]] = {}

    @rpc
    def inc(self, caller: str, n: int) -> int:
        self.count += 1
        self.seen.setdefault(caller, []).append(n)
        return self.count

    @rpc
    def note(self, caller: str, n: int) -> None:
        """A one-way post: no reply, still exactly once and in order."""
        self.seen.setdefault(caller, []).append(n)

    @rpc
    def state(self) -> dict[str, Any]:
        return {"count": self.count, "seen": self.seen}


class Caller(Immortal):
    """Makes CALLS awaited calls, emitting each result."""

    async def main(self) -> None:
        tally = self.ref("tally")
        for n in range(1, CALLS + 1):
            self.emit(await tally.inc(self.instance_name, n))


class MixedCaller(Immortal):
    """Awaited calls mixed with one-way posts (every third number is a post)."""

    async def main(self) -> None:
        tally = self.ref("tally")
        for n in range(1, MIXED + 1):
            if n % 3 == 0:
                tally.note.post(self.instance_name, n)
            else:
                self.emit(await tally.inc(self.instance_name, n))
