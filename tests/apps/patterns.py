"""Apps for the live tests of the patterns an author uses first (tests/test_patterns_live.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime import Immortal, RemoteError, SandboxError, rpc


class Looper(Immortal):
    """Long work continued by posting to itself, and periodic work on a timer callback."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.ticks = 0

    async def main(self) -> None:
        self.ref(self.instance_name).step.post(0)
        self.call_later(0.05, self.tick)

    @rpc
    def step(self, i: int) -> None:
        self.steps.append(i)
        self.emit(["step", i])
        if i < 19:
            self.ref(self.instance_name).step.post(i + 1)

    @rpc
    def tick(self) -> None:
        self.ticks += 1
        if self.ticks < 5:
            self.call_later(0.05, self.tick)

    @rpc
    def progress(self) -> list[Any]:
        return [len(self.steps), self.ticks]


class Noisy(Immortal):
    """Prints in a handler, tries asyncio, and fails: what a newcomer's first app does."""

    def __init__(self) -> None:
        self.calls = 0

    @rpc
    def hello(self, who: str) -> int:
        self.calls += 1
        print("hello", who)
        self.emit(f"hello {who}")
        return self.calls

    @rpc
    async def concurrently(self) -> Any:
        try:
            await asyncio.gather(self.ref(self.instance_name).hello("again"))
        except SandboxError as exc:
            return ["refused", str(exc)]
        return "not refused"

    @rpc
    def fail(self) -> None:
        self.calls += 100  # kept: an exception does not roll back what ran before it
        raise KeyError("no such account")

    @rpc
    async def ask_other(self, name: str) -> Any:
        try:
            return await self.ref(name).fail()
        except RemoteError as exc:
            return [exc.type_name, exc.message, exc.lsn]


def hang(key: str) -> None:
    """A side effect whose outside service never answers."""
    import time

    time.sleep(600)


class Hanger(Immortal):
    @rpc
    async def wait_forever(self) -> None:
        await self.run(hang)

    @rpc
    def ping(self) -> str:
        return "pong"


class Clocky(Immortal):
    """Reads the real clock in a handler: live it works, replay gives another answer."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    @rpc
    def stamp(self) -> float:
        import time

        self.stamps.append(time.time())  # wrong: self.now() is the recorded clock
        return self.stamps[-1]
