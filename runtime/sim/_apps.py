"""The apps the simulator runs: small, but each exercises one thing the runtime promises.

Their observable behaviour does not depend on how inputs from different senders interleave
(a server counts per sender), so a run with faults can be compared exactly with a failure-free
run of the same workload: the same final states, the same replies, the same emits.
"""

from __future__ import annotations

from typing import Any

from .._api import Immortal, rpc
from .._errors import RemoteError


class Counter(Immortal):
    """A server: counts calls per sender and remembers their tags in arrival order."""

    def __init__(self) -> None:
        self.per: dict[str, int] = {}
        self.seen: dict[str, list[Any]] = {}
        self.notes: dict[str, list[Any]] = {}

    @rpc
    def inc(self, sender: str, tag: Any) -> int:
        self.per[sender] = self.per.get(sender, 0) + 1
        self.seen.setdefault(sender, []).append(tag)
        return self.per[sender]

    @rpc
    def note(self, sender: str, tag: Any) -> None:
        """A one-way post's target."""
        self.notes.setdefault(sender, []).append(tag)

    @rpc
    def fail(self, sender: str, tag: int) -> int:
        """Raises on odd tags: an exception is an outcome like any other."""
        self.seen.setdefault(sender, []).append(["fail", tag])
        if tag % 2:
            raise ValueError(f"odd tag {tag}")
        return tag * 10


class Relay(Immortal):
    """The middle of a chain: forwards each call to the next instance and adds to the answer."""

    def __init__(self) -> None:
        self.forwarded = 0

    @rpc
    async def inc(self, sender: str, tag: Any) -> int:
        value = await self.ref(self.next_hop()).inc(f"{self.instance_name}<{sender}", tag)
        self.forwarded += 1
        return int(value) + 1000

    def next_hop(self) -> str:
        return {"b": "c"}.get(self.instance_name, "server")


class Caller(Immortal):
    """A client whose main() makes its calls one after another and emits each answer.

    Its plan comes from its own name, ``who-kind-target-count`` (e.g. ``c1-calls-server-5``),
    so a workload is just a set of instance names.
    """

    def __init__(self) -> None:
        self.results: list[Any] = []

    async def main(self) -> None:
        _who, kind, target, count = self.instance_name.rsplit("-", 3)
        server = self.ref(target)
        me = self.instance_name
        for i in range(int(count)):
            if kind == "calls":
                value = await server.inc(me, i)
            elif kind == "posts":
                server.note.post(me, i)
                value = "posted"
                if i == int(count) - 1:
                    value = await server.inc(me, i)  # a reply after the posts: they all landed
            elif kind == "raises":
                try:
                    value = await server.fail(me, i)
                except RemoteError as exc:
                    value = ["raised", exc.type_name]
            elif kind == "sleeps":
                await self.sleep(0.05 + 0.01 * i)
                value = await server.inc(me, i)
            else:
                raise ValueError(f"unknown caller kind {kind!r}")
            self.results.append(value)
            self.emit([i, value])


class Ledger:
    """The outside service side effects charge in the simulator: it deduplicates by idempotency
    key, as a payment service would, and notes a key ever used for two different charges."""

    current: Ledger | None = None  # the world being run (worlds run one at a time)

    def __init__(self) -> None:
        self.by_key: dict[str, tuple[str, int]] = {}
        self.calls = 0
        self.conflicts: list[str] = []


def charge(key: str, who: str, i: int) -> str:
    """A side effect: charge ``who`` for item ``i`` under ``key``."""
    ledger = Ledger.current
    assert ledger is not None
    ledger.calls += 1
    first = ledger.by_key.setdefault(key, (who, i))
    if first != (who, i):
        ledger.conflicts.append(f"key {key!r} charged {first} and {(who, i)}")
    return f"{who}:{i}"


class Worker(Immortal):
    """Works through its plan the way the guide recommends: it posts each step to itself, waits
    for two calls at once (one to itself), charges a side effect under a timeout that never
    fires, and ticks on a timer callback that reschedules itself.

    Its plan is its name, ``who-works-target-count``; ``finished`` says when it is done.
    """

    TICKS = 3

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.ticks = 0

    def finished(self, count: int) -> bool:
        return len(self.results) >= count and self.ticks >= self.TICKS

    def count(self) -> int:
        return int(self.instance_name.rsplit("-", 1)[1])

    async def main(self) -> None:
        self.ref(self.instance_name).step.post(0)
        self.call_later(0.01, self.tick)

    @rpc
    async def step(self, i: int) -> None:
        me = self.instance_name
        target = me.rsplit("-", 2)[1]
        served, squared = await self.gather(self.ref(target).inc(me, i), self.ref(me).square(i))
        receipt = await self.timeout(self.run(charge, me, i), 1000.0)
        self.results.append([served, squared, receipt])
        self.emit([i, receipt])
        if i + 1 < self.count():
            self.ref(me).step.post(i + 1)

    @rpc
    def square(self, i: int) -> int:
        return i * i

    @rpc
    def tick(self) -> None:
        self.ticks += 1
        if self.ticks < self.TICKS:
            self.call_later(0.01, self.tick)
