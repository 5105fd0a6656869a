"""The deterministic executor, without I/O: live runs, exact replay, caught divergence."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import pytest

from runtime import Immortal, NondeterminismError, rpc
from runtime._executor import Executor, Sources


class Clocky(Immortal):
    """Uses every kind of recorded non-determinism."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @rpc
    def stamp(self) -> float:
        t = self.now()
        self.seen.append(t)
        return t

    @rpc
    def roll(self) -> int:
        value = self.random().randint(1, 1_000_000)
        self.seen.append(value)
        return value

    @rpc
    def ident(self) -> str:
        u = self.uuid()
        self.seen.append(u)
        return str(u)

    @rpc
    async def nap(self, seconds: float) -> str:
        before = self.now()
        await self.sleep(seconds)
        self.seen.append(("woke", before))
        return "rested"


class Cheat(Immortal):
    """Reads the real clock: replay must notice."""

    def __init__(self) -> None:
        self.t = 0.0

    @rpc
    def cheat(self) -> float:
        self.t = time.time()
        self.emit(self.t)
        return self.t


class Failing(Immortal):
    @rpc
    def boom(self, n: int) -> int:
        raise ValueError(f"bad {n}")


def _sources(seed: int = 0) -> Sources:
    counter = itertools.count(1)
    return Sources(
        clock=lambda: 1_000.0 + next(counter),
        new_uuid=lambda: uuid.UUID(int=next(counter)),
        new_seed=lambda: seed,
    )


def _call(method: str, *args: Any, key: str = "k") -> dict[str, Any]:
    return {"k": "call", "id": key, "m": method, "a": list(args)}


def _run_live(cls: type[Immortal], inputs: list[dict[str, Any]], sources: Sources | None = None):
    ex = Executor(cls, name="x", sources=sources)
    records = [ex.execute(inp, lsn=i + 1) for i, inp in enumerate(inputs)]
    return ex, records


def _replay(cls: type[Immortal], records: list[dict[str, Any]]) -> Executor:
    ex = Executor(cls, name="x")  # real sources: replay must not consult them
    for lsn, record in enumerate(records, start=1):
        ex.execute(record["in"], lsn=lsn, recorded=record)
    return ex


def test_recorded_nondeterminism_replays_to_identical_state_and_effects() -> None:
    inputs = [
        {"k": "start"},
        _call("stamp", key="a"),
        _call("roll", key="b"),
        _call("ident", key="c"),
        _call("nap", 5.0, key="d"),
        _call("roll", key="e"),
        {"k": "timer", "tid": 1},
    ]
    live, records = _run_live(Clocky, inputs, _sources(seed=42))
    replayed = _replay(Clocky, records)
    assert replayed.snapshot() == live.snapshot()
    assert live.snapshot()["app"]["seen"][-1] == ("woke", 1003.0)
    assert records[4]["tim"] == [[1, 1009.0]]  # due = the timer's own recorded now() (1004) + 5
    assert records[-1]["rep"] == [["d", True, "rested"]]
    # Replay regenerated every effect (compare_effects would have raised otherwise); the
    # records carry the values: a different live seed gives different rolls.
    _other, other_records = _run_live(Clocky, inputs, _sources(seed=7))
    assert other_records[2]["rep"] != records[2]["rep"]


def test_reading_the_real_clock_is_caught_at_replay_with_a_useful_message() -> None:
    _live, records = _run_live(Cheat, [{"k": "start"}, _call("cheat")])
    time.sleep(0.01)
    with pytest.raises(NondeterminismError) as caught:
        _replay(Cheat, records)
    err = caught.value
    assert err.lsn == 2
    assert err.instance == "x"
    assert err.what == "emitted outputs"
    assert "real clock" in str(err)


def test_asking_for_more_nondeterminism_than_recorded_is_caught() -> None:
    _live, records = _run_live(Clocky, [{"k": "start"}, _call("stamp")], _sources())
    del records[1]["nd"]
    with pytest.raises(NondeterminismError, match="non-deterministic value #1"):
        _replay(Clocky, records)


def test_handler_exception_is_an_outcome_recorded_and_replayed() -> None:
    _live, records = _run_live(Failing, [{"k": "start"}, _call("boom", 3, key="z")])
    assert records[1]["rep"] == [["z", False, ["ValueError", "bad 3", 2]]]
    _replay(Failing, records)


def test_unknown_method_and_wrong_argument_count_are_errors_not_crashes() -> None:
    ex, records = _run_live(
        Failing, [{"k": "start"}, _call("nope", key="a"), _call("boom", key="b")]
    )
    assert records[1]["rep"][0][:2] == ["a", False]
    assert records[1]["rep"][0][2][0] == "UnknownMethodError"
    assert records[2]["rep"][0][2][0] == "TypeError"
    assert ex.started


def test_unstorable_result_becomes_an_error_result() -> None:
    class Leaky(Immortal):
        @rpc
        def leak(self) -> object:
            return object()

    _ex, records = _run_live(Leaky, [{"k": "start"}, _call("leak")])
    ok, value = records[1]["rep"][0][1:]
    assert ok is False
    assert value[0] == "ValueCodecError"


def test_calls_between_instances_number_each_direction() -> None:
    class Server(Immortal):
        def __init__(self) -> None:
            self.count = 0

        @rpc
        def inc(self) -> int:
            self.count += 1
            return self.count

    class Client(Immortal):
        async def main(self) -> None:
            server = self.ref("server")
            server.inc.post()
            self.emit(await server.inc())

    server = Executor(Server, name="server")
    client = Executor(Client, name="client")
    server.execute({"k": "start"})
    started = client.execute({"k": "start"})
    assert [m[:3] for m in started["out"]] == [["server", 1, "c"], ["server", 2, "c"]]
    assert started["out"][0][5] is False and started["out"][1][5] is True
    r1 = server.execute({"k": "call", "from": "client", "seq": 1, "m": "inc", "a": [], "r": False})
    assert "out" not in r1  # a post gets no reply
    r2 = server.execute({"k": "call", "from": "client", "seq": 2, "m": "inc", "a": [], "r": True})
    assert r2["out"] == [["client", 1, "r", 2, True, 2]]
    done = client.execute({"k": "reply", "from": "server", "seq": 1, "re": 2, "ok": 2})
    assert done["emit"] == [2]
    assert client.quiescent and done["rep"] == [["main", True, None]]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("open('/etc/hostname').read()", "open("),
        ("__import__('socket').socket()", "socket"),
        ("__import__('threading').Thread(target=print).start()", "Thread.start"),
        ("__import__('subprocess').run(['true'])", "subprocess"),
    ],
)
def test_real_io_in_a_handler_is_refused_with_advice(body: str, fragment: str) -> None:
    namespace: dict[str, Any] = {"Immortal": Immortal, "rpc": rpc}
    exec(  # a tiny app whose handler does the forbidden thing
        "class App(Immortal):\n    @rpc\n    def bad(self):\n        " + body + "\n",
        namespace,
    )
    _ex, records = _run_live(namespace["App"], [{"k": "start"}, _call("bad")])
    ok, value = records[1]["rep"][0][1:]
    assert ok is False
    assert value[0] == "SandboxError"
    assert fragment in value[1]


def test_awaiting_asyncio_is_refused() -> None:
    class Async(Immortal):
        @rpc
        async def bad(self) -> None:
            import asyncio

            await asyncio.sleep(0)

    _ex, records = _run_live(Async, [{"k": "start"}, _call("bad")])
    assert records[1]["rep"][0][2][0] == "SandboxError"
    assert "asyncio" in records[1]["rep"][0][2][1]


def test_snapshot_restore_round_trip_continues_identically() -> None:
    inputs = [{"k": "start"}, _call("roll", key="a"), _call("stamp", key="b")]
    live, _ = _run_live(Clocky, inputs, _sources(seed=5))
    restored = Executor(Clocky, name="x", sources=_sources(seed=5))
    restored.restore(live.snapshot())
    assert restored.snapshot() == live.snapshot()
    assert restored.execute(_call("roll", key="c")) == live.execute(_call("roll", key="c"))


def test_replies_that_arrive_before_they_are_awaited_are_kept() -> None:
    class Pipeliner(Immortal):
        async def main(self) -> None:
            server = self.ref("server")
            first, second, third = server.inc(), server.inc(), server.inc()
            self.emit(await second)  # replies 1 and 3 arrive while this waits
            self.emit(await first)
            self.emit(await third)

    inputs = [
        {"k": "start"},
        {"k": "reply", "from": "server", "seq": 1, "re": 1, "ok": "one"},
        {"k": "reply", "from": "server", "seq": 2, "re": 3, "ok": "three"},
        {"k": "reply", "from": "server", "seq": 3, "re": 2, "ok": "two"},
    ]
    ex, records = _run_live(Pipeliner, inputs)
    assert records[3]["emit"] == ["two", "one", "three"]
    assert records[3]["rep"] == [["main", True, None]]
    assert ex.quiescent
    replayed = _replay(Pipeliner, records)
    assert replayed.snapshot() == ex.snapshot()


def test_an_early_reply_survives_a_snapshot() -> None:
    class Later(Immortal):
        def __init__(self) -> None:
            self.pending: list[Any] = []

        @rpc
        def send(self) -> None:
            self.ref("server").inc()  # the reply will come back un-awaited

    ex, _ = _run_live(Later, [{"k": "start"}, _call("send")])
    ex.execute({"k": "reply", "from": "server", "seq": 1, "re": 1, "ok": 5})
    restored = Executor(Later, name="x")
    restored.restore(ex.snapshot())
    assert restored.snapshot() == ex.snapshot()
