"""Test apps for the runtime's crash tests."""

from __future__ import annotations

from typing import Any

from runtime import Immortal, rpc


class Ledger(Immortal):
    """Adds numbers; remembers every call tag so a test can prove each ran exactly once."""

    def __init__(self) -> None:
        self.total = 0
        self.tags: list[int] = []

    @rpc
    def add(self, tag: int, amount: int) -> int:
        self.tags.append(tag)
        self.total += amount
        if tag % 50 == 0:
            self.emit({"tag": tag, "total": self.total})
        return self.total

    @rpc
    def state(self) -> dict[str, Any]:
        return {"total": self.total, "tags": self.tags}

    @rpc
    def poison(self) -> None:
        """Put something in the state that no checkpoint can store."""
        self.bad = object()

    @rpc
    def cure(self) -> None:
        self.__dict__.pop("bad", None)


class Dice(Immortal):
    """Every kind of recorded non-determinism, and a durable timer."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    @rpc
    def roll(self) -> list[Any]:
        entry = [self.now(), self.random().random(), str(self.uuid())]
        self.log.append(entry)
        return entry

    @rpc
    async def later(self, seconds: float) -> str:
        await self.sleep(seconds)
        self.log.append("woke")
        self.emit("woke")
        return "woke"

    @rpc
    def state(self) -> list[Any]:
        return self.log


class Cheat(Immortal):
    """Reads the real clock inside a handler: recovery must refuse to pretend."""

    def __init__(self) -> None:
        self.seen = 0.0

    @rpc
    def stamp(self) -> float:
        import time

        self.seen = time.time()
        return self.seen
