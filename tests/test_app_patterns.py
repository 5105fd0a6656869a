"""The patterns an app author reaches for first: posting to yourself, timer callbacks,
combinators with timeouts, durable side effects, and what errors carry.

Each test drives a real coordinator with a small in-test driver (``Run``): appends are stored in
a list (the log), timers fire on a fake clock, side effects run synchronously. ``Run.crash``
throws the coordinator away and recovers a new one from the stored records, which is what a
SIGKILL does to a process; the simulator and the charge sample check the same under real faults.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runtime import EffectError, Immortal, RemoteError, rpc
from runtime._actions import Append, RunEffect, Send, SetTimer, Warn
from runtime._coordinator import Coordinator, CoordinatorConfig
from runtime._effects import run_effect
from runtime._errors import NondeterminismError, SandboxError
from runtime._executor import Executor, Sources
from runtime._replica import Replica


class Run:
    """A coordinator named ``me`` and the log it wrote; an instance process, minus the I/O."""

    def __init__(self, app: type[Immortal], **config: Any) -> None:
        self.app = app
        self.config = config
        self.log: list[dict[str, Any]] = []
        self.clock = 1000.0
        self.timers: dict[Any, float] = {}
        self.effects: list[RunEffect] = []  # handed out, not yet run
        self.sent: list[Send] = []
        self.appends: list[Append] = []
        self.warnings: list[str] = []
        self.calls_to_effects = 0
        self.c = self._recover()

    def _recover(self) -> Coordinator:
        c = Coordinator(
            self.app,
            name="me",
            config=CoordinatorConfig(**self.config),
            sources=Sources(clock=lambda: self.clock, new_seed=lambda: 7),
        )
        for lsn, record in enumerate(self.log, start=1):
            c.replay(record, lsn)  # type: ignore[arg-type]
        self.timers = {}
        self.effects = []
        c.start(self.clock)
        return c

    def crash(self) -> None:
        """Lose everything not in the log, then recover from it."""
        self.c = self._recover()

    def settle(self, *, run_effects: bool = True) -> None:
        """Carry out actions until nothing is left to do now (appends complete at once)."""
        while True:
            actions = self.c.take()
            if not actions:
                if run_effects and self.effects:
                    self.run_one_effect()
                    continue
                return
            for action in actions:
                if isinstance(action, Append):
                    self.appends.append(action)
                    self.log.extend(action.records)  # type: ignore[arg-type]
                    self.c.append_done(100)
                elif isinstance(action, SetTimer):
                    self.timers[action.key] = action.due
                elif isinstance(action, RunEffect):
                    self.effects.append(action)
                elif isinstance(action, Send):
                    self.sent.append(action)
                elif isinstance(action, Warn):
                    self.warnings.append(action.text)

    def run_one_effect(self) -> None:
        action = self.effects.pop(0)
        self.calls_to_effects += 1
        ok, value = run_effect(action.request, sleep=lambda _s: None)
        self.c.effect_done(action.request.eid, ok, value)

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass: app timers that fall due fire, in order."""
        end = self.clock + seconds
        while True:
            self.settle()
            due = sorted((when, key) for key, when in self.timers.items() if isinstance(key, tuple))
            if not due or due[0][0] > end:
                break
            when, key = due[0]
            del self.timers[key]
            self.clock = max(self.clock, when)
            self.c.advance(self.clock)
            self.c.timer_fired(key)
        self.clock = end
        self.c.advance(end)
        self.settle()

    def call(self, method: str, *args: Any, key: str = "k1") -> None:
        self.c.outside_call("caller", {"t": "call", "id": key, "m": method, "a": list(args)})
        self.settle()

    @property
    def state(self) -> dict[str, Any]:
        app = self.c.executor.app
        assert app is not None
        return {k: v for k, v in vars(app).items() if not k.startswith("_imm_")}

    def inputs(self, kind: str) -> list[dict[str, Any]]:
        return [r["in"] for r in self.log if r["in"]["k"] == kind]


# -- 1. posting to yourself -------------------------------------------------------------------


class SelfPoster(Immortal):
    def __init__(self) -> None:
        self.done: list[int] = []
        self.answer: Any = None

    async def main(self) -> None:
        me = self.ref(self.instance_name)
        for i in range(3):
            me.work.post(i)
        self.answer = await me.double(21)  # a call to yourself, with a reply

    @rpc
    def work(self, i: int) -> None:
        self.done.append(i)

    @rpc
    def double(self, x: int) -> int:
        return 2 * x


def test_posts_and_calls_to_yourself_are_delivered_locally_once() -> None:
    run = Run(SelfPoster)
    run.settle()
    assert run.state == {"done": [0, 1, 2], "answer": 42}
    assert run.sent == []  # nothing went to the network
    calls = [i for i in run.inputs("call") if i.get("from") == "me"]
    assert [(i["m"], i["seq"]) for i in calls] == [
        ("work", 1),
        ("work", 2),
        ("work", 3),
        ("double", 4),
    ]
    assert [i["from"] for i in run.inputs("reply")] == ["me"]
    assert run.c.streams.unacknowledged("me") == []  # acknowledged once executed durably


def test_a_post_to_yourself_survives_a_crash_before_it_executed() -> None:
    run = Run(SelfPoster)
    (start,) = [a for a in run.c.take() if isinstance(a, Append)]  # the start executed...
    run.log.extend(start.records)  # type: ignore[arg-type]
    run.crash()  # ...durable, and the process died before any post was executed
    run.settle()
    assert run.state == {"done": [0, 1, 2], "answer": 42}
    assert len([i for i in run.inputs("call") if i["m"] == "work"]) == 3


# -- 2. timer callbacks ------------------------------------------------------------------------


class Ticker(Immortal):
    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.pending: int | None = None

    async def main(self) -> None:
        self.pending = self.call_later(1.0, self.tick, "a")

    @rpc
    def tick(self, label: str) -> None:
        self.ticks.append(self.now())
        if len(self.ticks) < 3:
            self.pending = self.call_later(1.0, "tick", label)
        else:
            self.pending = None

    @rpc
    def stop(self) -> bool:
        return self.pending is not None and self.cancel_timer(self.pending)


def test_a_timer_callback_fires_once_per_schedule_and_repeats_itself() -> None:
    run = Run(Ticker)
    run.wait(0.5)
    assert run.state["ticks"] == []
    run.wait(3.0)
    assert run.state["ticks"] == [1001.0, 1002.0, 1003.0]
    assert len(run.inputs("timer")) == 3
    run.wait(5.0)
    assert len(run.inputs("timer")) == 3  # nothing more was scheduled


def test_a_pending_timer_callback_does_not_block_a_checkpoint() -> None:
    run = Run(Ticker, checkpoint_seconds=0.1)
    run.settle()
    assert run.c.replica.quiescent  # waiting for a callback suspends nothing
    run.c.advance(1000.5)
    run.c.timer_fired("checkpoint")
    run.call("stop", key="s")  # the next append carries the checkpoint
    assert run.appends[-1].checkpoint is not None
    assert run.c.streams.known_result("s") == (True, True)  # stop() cancelled it
    assert run.c.executor.callbacks == {}


def test_a_timer_callback_survives_a_crash_and_fires_once() -> None:
    run = Run(Ticker)
    run.wait(1.5)
    assert len(run.state["ticks"]) == 1
    run.crash()
    run.settle()
    assert ("app", 2) in run.timers  # the second tick is scheduled again by recovery
    run.wait(5.0)
    assert run.state["ticks"] == [1001.0, 1002.0, 1003.0]


def test_a_cancelled_timer_callback_never_fires() -> None:
    run = Run(Ticker)
    run.wait(1.5)
    run.call("stop")
    run.wait(5.0)
    assert len(run.state["ticks"]) == 1
    assert run.c.executor.callbacks == {}


def test_scheduling_an_unknown_handler_says_what_there_is() -> None:
    class Typo(Immortal):
        async def main(self) -> None:
            self.call_later(1, "tik")

        @rpc
        def tick(self) -> None:
            pass

    run = Run(Typo)
    run.settle()
    assert any("did you mean 'tick'" in w for w in run.warnings), run.warnings


# -- 3. combinators and timeouts ----------------------------------------------------------------


class Fan(Immortal):
    def __init__(self) -> None:
        self.out: list[Any] = []

    @rpc
    async def both(self) -> Any:
        me = self.ref(self.instance_name)
        return await self.gather(me.square(3), me.square(4), self.sleep(0.5))

    @rpc
    async def failing(self) -> Any:
        me = self.ref(self.instance_name)
        try:
            await self.gather(me.square(3), me.boom("x"))
        except RemoteError as exc:
            return [exc.type_name, exc.message, exc.lsn is not None]

    @rpc
    async def race(self) -> Any:
        far = self.ref("far")  # never answers in these tests
        return await self.first(far.slow(), self.sleep(2.0))

    @rpc
    async def bounded(self) -> Any:
        reply = self.ref("far").slow()
        try:
            return await self.timeout(reply, 1.0)
        except TimeoutError as exc:
            self.out.append(str(exc))
            return "timed out"

    @rpc
    def square(self, x: int) -> int:
        return x * x

    @rpc
    def boom(self, why: str) -> None:
        raise ValueError(why)


def test_gather_gives_results_in_order() -> None:
    run = Run(Fan)
    run.call("both")
    run.wait(1.0)
    assert run.c.streams.known_result("k1") == (True, [9, 16, None])


def test_gather_raises_the_first_failure() -> None:
    run = Run(Fan)
    run.call("failing")
    assert run.c.streams.known_result("k1") == (True, ["ValueError", "x", True])


def test_first_gives_the_index_and_value_of_the_first_outcome() -> None:
    run = Run(Fan)
    run.call("race")
    run.wait(3.0)
    assert run.c.streams.known_result("k1") == (True, (1, None))
    assert run.c.replica.quiescent  # the reply from far is no longer waited for


def test_a_timeout_raises_timeout_error_and_a_late_reply_is_dropped_durably() -> None:
    run = Run(Fan)
    run.call("bounded")
    run.wait(2.0)
    assert run.c.streams.known_result("k1") == (True, "timed out")
    assert run.state["out"] == ["no outcome within 1 s"]
    late = ["me", 1, "r", 1, True, "too late"]
    run.c.receive_messages("far", [late])
    run.settle()
    assert run.c.executor.early == {}  # dropped, not kept for an await that never comes
    assert run.c.executor.abandoned == set()
    run.crash()  # and replay drops it the same way
    assert run.c.executor.early == {}


def test_a_timeout_replays_identically() -> None:
    run = Run(Fan)
    run.call("bounded")
    run.wait(2.0)
    replica = Replica(Fan, name="me")
    for lsn, record in enumerate(run.log, start=1):
        replica.apply(record, lsn)  # type: ignore[arg-type]  # raises if anything differs
    assert replica.executor.app is not None
    assert vars(replica.executor.app)["out"] == ["no outcome within 1 s"]


# -- 4. durable side effects -------------------------------------------------------------------

CHARGES: list[tuple[str, int]] = []


def charge(key: str, amount: int) -> str:
    CHARGES.append((key, amount))
    return f"charged {amount}"


def flaky(key: str, box: list[int]) -> str:
    raise ConnectionError("service down")


class Shop(Immortal):
    def __init__(self) -> None:
        self.receipts: list[Any] = []

    @rpc
    async def buy(self, amount: int) -> Any:
        receipt = await self.run(charge, amount)
        self.receipts.append(receipt)
        return receipt

    @rpc
    async def broken(self) -> Any:
        try:
            await self.run(flaky, [], retries=2, backoff=0.01)
        except EffectError as exc:
            return [exc.type_name, exc.message]


def test_a_side_effect_runs_after_its_step_is_durable_and_its_outcome_is_logged() -> None:
    CHARGES.clear()
    run = Run(Shop)
    run.settle()
    run.c.outside_call("caller", {"t": "call", "id": "k1", "m": "buy", "a": [5]})
    actions = run.c.take()
    assert [type(a) for a in actions] == [Append]  # not run before the asking step is durable
    run.log.extend(actions[0].records)
    run.c.append_done(10)
    handed = [a for a in run.c.take() if isinstance(a, RunEffect)]
    assert [a.request.key for a in handed] == ["me/2/0"]  # instance / LSN / position
    run.effects.extend(handed)
    run.settle()
    assert CHARGES == [("me/2/0", 5)]
    assert run.inputs("effect") == [{"k": "effect", "eid": 1, "ok": "charged 5"}]
    assert run.state == {"receipts": ["charged 5"]}
    run.crash()  # replay gets the logged outcome; the function is not called again
    run.settle()
    assert CHARGES == [("me/2/0", 5)]
    assert run.state == {"receipts": ["charged 5"]}


def test_a_side_effect_whose_outcome_was_not_logged_runs_again_with_the_same_key() -> None:
    CHARGES.clear()
    run = Run(Shop)
    run.settle()
    run.c.outside_call("caller", {"t": "call", "id": "k1", "m": "buy", "a": [5]})
    run.settle(run_effects=False)
    assert len(run.effects) == 1
    run.run_one_effect()  # it ran...
    run.c.take()  # ...and the process died before its outcome's append was durable
    run.crash()
    run.settle()
    assert CHARGES == [("me/2/0", 5), ("me/2/0", 5)]  # at least once, under one key
    assert run.state == {"receipts": ["charged 5"]}  # its outcome is used once
    assert run.c.streams.known_result("k1") == (True, "charged 5")


def test_a_failing_side_effect_is_retried_then_raised_as_effect_error() -> None:
    run = Run(Shop)
    run.call("broken")
    assert run.c.streams.known_result("k1") == (True, ["ConnectionError", "service down"])
    (inp,) = run.inputs("effect")
    assert inp["err"] == ["ConnectionError", "service down"]


def test_run_effect_retries_with_doubling_backoff_and_times_out_attempts() -> None:
    from runtime._executor import EffectRequest

    attempts: list[str] = []
    waits: list[float] = []

    def sometimes(key: str) -> str:
        attempts.append(key)
        if len(attempts) < 3:
            raise OSError("not yet")
        return "ok"

    request = EffectRequest(1, 1, "me/1/0", sometimes, (), retries=3, backoff=0.5, timeout=None)
    assert run_effect(request, sleep=waits.append) == (True, "ok")
    assert waits == [0.5, 1.0]

    import threading

    release = threading.Event()
    slow = EffectRequest(2, 1, "me/1/1", lambda key: release.wait(5), (), 0, 0.0, timeout=0.05)
    ok, value = run_effect(slow)
    release.set()
    assert not ok and value[0] == "TimeoutError"


def test_a_side_effect_that_returns_an_unstorable_value_fails_in_the_handler() -> None:
    class Odd(Immortal):
        @rpc
        async def go(self) -> Any:
            try:
                return await self.run(lambda key: object())
            except EffectError as exc:
                return exc.type_name

    run = Run(Odd)
    run.call("go")
    assert run.c.streams.known_result("k1") == (True, "ValueCodecError")


# -- 5. errors ---------------------------------------------------------------------------------


def test_a_remote_error_carries_the_callees_lsn() -> None:
    run = Run(Fan)
    run.call("boom", "bad")
    ok, value = run.c.streams.known_result("k1")  # type: ignore[misc]
    assert not ok and value == ["ValueError", "bad", 2]


def test_an_unknown_method_suggests_the_closest() -> None:
    run = Run(Fan)
    run.call("sqaure", 2)
    ok, value = run.c.streams.known_result("k1")  # type: ignore[misc]
    assert not ok and value[0] == "UnknownMethodError"
    assert "did you mean 'square'" in value[1]


class UsesAsyncio(Immortal):
    @rpc
    async def go(self) -> Any:
        try:
            await asyncio.gather(self.ref("x").ping())
        except SandboxError as exc:
            return ["SandboxError", str(exc)]
        return "not refused"


def test_an_asyncio_refusal_reads_the_same_live_and_in_replay() -> None:
    async def live() -> dict[str, Any]:  # live handlers run on the event loop's thread
        run = Run(UsesAsyncio)
        run.call("go")
        return {"log": run.log, "result": run.c.streams.known_result("k1")}

    result = asyncio.run(live())
    ok, value = result["result"]
    assert ok and value[0] == "SandboxError" and "self.gather()" in value[1]
    replica_exec = Executor(UsesAsyncio, name="me")
    for lsn, record in enumerate(result["log"], start=1):  # replay: no event loop here
        replica_exec.execute(record["in"], lsn=lsn, recorded=record)  # raises if it differs


def test_print_in_a_handler_goes_to_stderr_tagged_and_is_quiet_in_replay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Chatty(Immortal):
        @rpc
        def hello(self, who: str) -> None:
            print("hello", who)

    run = Run(Chatty)
    run.call("hello", "world")
    seen = capsys.readouterr()
    assert seen.out == ""
    assert seen.err == "[me LSN 2] hello world\n"
    replay = Executor(Chatty, name="me")
    for lsn, record in enumerate(run.log, start=1):
        replay.execute(record["in"], lsn=lsn, recorded=record)
    assert capsys.readouterr() == ("", "")


def test_a_divergent_side_effect_request_is_caught_in_replay() -> None:
    run = Run(Shop)
    run.call("buy", 5)
    record = dict(run.log[1])
    record["fx"] = [[1, "me/2/0", "something_else"]]
    replay = Executor(Shop, name="me")
    replay.execute(run.log[0]["in"], lsn=1, recorded=run.log[0])
    with pytest.raises(NondeterminismError, match="side effects requested"):
        replay.execute(record["in"], lsn=2, recorded=record)


def test_a_timer_that_could_never_fire_is_refused_in_the_handler() -> None:
    class Odd(Immortal):
        @rpc
        def later(self, seconds: float) -> None:
            self.call_later(seconds, self.later, 1.0)

        @rpc
        async def nap(self, seconds: float) -> None:
            await self.sleep(seconds)

    run = Run(Odd)
    run.call("later", float("inf"), key="a")
    run.call("nap", float("nan"), key="b")
    for key in ("a", "b"):
        ok, value = run.c.streams.known_result(key)  # type: ignore[misc]
        assert not ok and value[0] == "ValueError" and "finite" in value[1]
    assert run.c.executor.timers == {}


def test_an_effect_that_exits_is_a_failure_not_a_hang() -> None:
    def quits(key: str) -> None:
        raise SystemExit(3)

    class Quitter(Immortal):
        @rpc
        async def go(self) -> Any:
            try:
                await self.run(quits)
            except EffectError as exc:
                return exc.type_name

    run = Run(Quitter)
    run.call("go")
    assert run.c.streams.known_result("k1") == (True, "SystemExit")
