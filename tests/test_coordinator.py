"""The coordinator on its own: events in, actions out, no sockets, no files, no clock.

Each test drives one rule directly, the way h11's tests drive its connection: the simulator
(`test_sim.py`) checks the rules together under faults; these pin each rule's exact behaviour.
"""

from __future__ import annotations

from typing import Any

from runtime import Immortal, rpc
from runtime._actions import Answer, Append, Connect, Emit, Released, Send, SetTimer
from runtime._coordinator import Coordinator, CoordinatorConfig
from runtime._executor import Sources
from runtime._schema import call_message


class Waiter(Immortal):
    """main() waits for a reply that may never come; count() can be called meanwhile."""

    def __init__(self) -> None:
        self.calls = 0

    async def main(self) -> None:
        await self.ref("elsewhere").ping()

    @rpc
    def count(self) -> int:
        self.calls += 1
        self.emit(self.calls)
        return self.calls

    @rpc
    async def relay(self) -> Any:
        return await self.ref("elsewhere").ping()


class Plain(Immortal):
    def __init__(self) -> None:
        self.calls = 0

    @rpc
    def count(self) -> int:
        self.calls += 1
        return self.calls


def _coordinator(app: type[Immortal] = Plain, **config: Any) -> Coordinator:
    c = Coordinator(
        app,
        name="me",
        config=CoordinatorConfig(**config),
        sources=Sources(clock=lambda: 100.0, new_seed=lambda: 7),
    )
    c.start(100.0)
    return c


def _of(actions: list[Any], kind: type) -> list[Any]:
    return [a for a in actions if type(a) is kind]


def _durable(c: Coordinator) -> list[Any]:
    """Finish the outstanding append (if any) and return every action it led to."""
    actions = c.take()
    appends = _of(actions, Append)
    assert len(appends) <= 1
    if appends:
        c.append_done(100)
        actions += c.take()
    return actions


def _call(c: Coordinator, key: str, caller: str = "k") -> None:
    c.outside_call(caller, {"t": "call", "id": key, "m": "count", "a": []})


def test_nothing_is_released_before_its_append_is_done() -> None:
    c = _coordinator()
    _durable(c)  # the start
    c.receive_messages("peer", [call_message("me", 1, "count", [], True)])
    actions = c.take()
    assert [type(a) for a in actions] == [Append]
    assert c.durable_from("peer") == 0  # executed, not durable: not promised
    c.append_done(10)
    released = c.take()
    assert _of(released, Send)[0].messages == [["peer", 1, "r", 1, True, 1]]
    assert c.durable_from("peer") == 1
    assert _of(released, SetTimer)[0].key == "ack"
    c.timer_fired("ack")
    assert [(a.peer, a.upto) for a in c.take()] == [("peer", 1)]


def test_one_append_at_a_time_and_the_rest_batched() -> None:
    c = _coordinator()
    _durable(c)
    for seq in (1, 2, 3):
        c.receive_messages("peer", [call_message("me", seq, "count", [], True)])
    first = _of(c.take(), Append)
    assert [(a.first_lsn, a.last_lsn) for a in first] == [(2, 2)]
    c.append_done(10)
    second = _of(c.take(), Append)
    assert [(a.first_lsn, a.last_lsn) for a in second] == [(3, 4)]


def test_duplicates_are_dropped_and_a_gap_refused() -> None:
    c = _coordinator()
    _durable(c)
    assert c.receive_messages("peer", [call_message("me", 1, "count", [], True)])
    assert c.receive_messages("peer", [call_message("me", 1, "count", [], True)])
    assert c.executor.app.calls == 1  # type: ignore[union-attr]
    assert not c.receive_messages("peer", [call_message("me", 3, "count", [], True)])
    assert c.executor.app.calls == 1  # type: ignore[union-attr]


def test_an_outside_result_is_given_again_only_once_durable() -> None:
    c = _coordinator()
    _durable(c)
    _call(c, "key-1", caller="first")
    assert _of(c.take(), Answer) == []  # executing; not durable yet
    _call(c, "key-1", caller="retry")  # a retry while the first is not durable: waits
    assert _of(c.take(), Answer) == []
    assert c.executor.app.calls == 1  # type: ignore[union-attr]
    c.append_done(10)
    answers = _of(c.take(), Answer)
    assert [(a.caller, a.value) for a in answers] == [("first", 1), ("retry", 1)]
    _call(c, "key-1", caller="later")
    assert [(a.caller, a.value) for a in _of(c.take(), Answer)] == [("later", 1)]
    assert c.executor.app.calls == 1  # type: ignore[union-attr]


def test_a_link_resends_what_the_peer_has_not_logged() -> None:
    c = _coordinator()
    _durable(c)
    for seq in (1, 2, 3):
        c.receive_messages("peer", [call_message("me", seq, "count", [], True)])
        _durable(c)
    c.link_opened("peer", 1)  # the peer has logged our reply 1, not 2 and 3
    sends = _of(c.take(), Send)
    assert [[m[1] for m in s.messages] for s in sends] == [[2, 3]]
    c.ack_received("peer", 3)
    c.link_opened("peer", 3)
    assert _of(c.take(), Send) == []


def test_a_peer_connecting_gets_a_link_back() -> None:
    c = _coordinator()
    _durable(c)
    c.peer_connected("peer", 0)
    assert [a.peer for a in _of(c.take(), Connect)] == ["peer"]


def test_identity_is_the_registered_epoch() -> None:
    c = _coordinator()
    assert c.refusal(None, 0, None) is None  # an outside caller
    assert c.refusal("peer", 3, 3) is None
    assert "not registered" in (c.refusal("peer", 3, None) or "")
    assert "at epoch 4" in (c.refusal("peer", 3, 4) or "")
    assert "this instance" in (c.refusal("me", 1, 1) or "")


def test_a_checkpoint_waits_for_quiescence_and_holds_new_calls() -> None:
    c = _coordinator(Waiter, checkpoint_bytes=150, quiescence_timeout=5.0)
    _durable(c)  # main() is now suspended, waiting for "elsewhere"
    _call(c, "a")
    _durable(c)  # executed: nothing was due yet
    # Now a checkpoint is due (200 bytes of log) but main() is suspended: new calls are held.
    _call(c, "b")
    assert _of(c.take(), Append) == []
    assert c.executor.app.calls == 1  # type: ignore[union-attr]
    # The reply main() waits for arrives: quiescent, so the checkpoint is taken, then "b" runs.
    c.receive_messages("elsewhere", [["me", 1, "r", 1, True, "pong"]])
    appends = _of(c.take(), Append)
    assert len(appends) == 1 and appends[0].checkpoint is not None
    assert c.executor.app.calls == 1  # type: ignore[union-attr]
    c.append_done(10)
    _durable(c)
    assert c.executor.app.calls == 2  # type: ignore[union-attr]


def test_a_checkpoint_is_taken_before_held_calls_run() -> None:
    """Quiescence reached while an append is outstanding: the checkpoint is taken before the
    held calls run (one that suspends again would otherwise starve the checkpoint)."""
    c = _coordinator(Waiter, checkpoint_bytes=150, quiescence_timeout=5.0)
    _durable(c)
    _call(c, "a")
    _durable(c)
    c.outside_call("k", {"t": "call", "id": "b", "m": "relay", "a": []})  # held; it would suspend
    assert c.executor.app.calls == 1  # type: ignore[union-attr]
    c.receive_messages("elsewhere", [["me", 1, "r", 99, True, "unrelated"]])  # a step, in flight
    assert len(_of(c.take(), Append)) == 1
    c.receive_messages("elsewhere", [["me", 2, "r", 1, True, "pong"]])  # main() ends: quiescent
    c.append_done(10)
    appends = _of(c.take(), Append)
    assert len(appends) == 1 and appends[0].checkpoint is not None
    assert c.executor.suspended  # the held relay() ran after the checkpoint, and now waits


def test_while_a_standby_writes_the_checkpoints_nothing_is_held_or_checkpointed_here() -> None:
    """The same setup as above, with checkpoints elsewhere: "b" runs at once and no append
    carries a checkpoint; when the standby goes, holding for a checkpoint resumes, and a call
    already held when the standby comes is released."""
    c = _coordinator(Waiter, checkpoint_bytes=150, quiescence_timeout=5.0)
    c.checkpoints_elsewhere(True)
    _durable(c)
    _call(c, "a")
    _durable(c)
    _call(c, "b")
    appends = _of(c.take(), Append)
    assert len(appends) == 1 and appends[0].checkpoint is None
    assert c.executor.app.calls == 2  # type: ignore[union-attr]
    c.append_done(10)
    c.checkpoints_elsewhere(False)  # the standby went: 150 bytes later, one is due again
    for key in ("c", "c2"):
        _call(c, key)
        _durable(c)
    _call(c, "d")
    assert _of(c.take(), Append) == [] and c.executor.app.calls == 4  # type: ignore[union-attr]
    c.checkpoints_elsewhere(True)  # a standby comes: the held call goes on
    assert c.executor.app.calls == 5  # type: ignore[union-attr]


def test_a_checkpoint_falls_due_when_the_steps_since_the_last_would_take_too_long_to_replay() -> (
    None
):
    """Whatever the bytes: 10 steps at a measured 1 ms each is the 10 ms of replay allowed."""
    c = _coordinator(checkpoint_replay_seconds=0.01, checkpoint_min_seconds=0.0)
    c.set_step_cost(0.001)
    _durable(c)
    for key in "abcdefghi":  # nine calls: with the start, ten steps
        _call(c, key)
        _durable(c)
    _call(c, "j")
    appends = _of(c.take(), Append)
    assert len(appends) == 1 and appends[0].checkpoint is not None
    c.append_done(10)
    _call(c, "k")  # the count starts over after the checkpoint
    appends = _of(c.take(), Append)
    assert len(appends) == 1 and appends[0].checkpoint is None


def test_held_calls_are_released_after_the_quiescence_timeout_even_when_idle() -> None:
    c = _coordinator(Waiter, checkpoint_bytes=150, checkpoint_seconds=60.0, quiescence_timeout=2.0)
    _durable(c)
    _call(c, "a")
    _durable(c)
    _call(c, "b")  # held: a checkpoint is due and main() is suspended
    actions = c.take()
    assert _of(actions, Append) == []
    timers = [a for a in _of(actions, SetTimer) if a.key == "hold"]
    assert timers, "holding must set a timer to give up on quiescence"
    c.advance(timers[0].due)
    c.timer_fired("hold")
    assert c.executor.app.calls == 2  # type: ignore[union-attr]
    released = _durable(c)
    assert [a.value for a in _of(released, Answer)] == [2]


def test_recovery_rereleases_emits_that_may_not_have_been_printed() -> None:
    c = _coordinator(Waiter)
    _durable(c)
    _call(c, "a")
    records = _of(c.take(), Append)[0].records
    c.append_done(10)
    c.take()
    fresh = Coordinator(Waiter, name="me", sources=Sources(clock=lambda: 100.0))
    log = [*_first_records(), *records]
    for lsn, record in enumerate(log, start=1):
        fresh.replay(record, lsn)
    assert fresh.unreleased(released_lsn=1) == (2, 2)
    fresh.rerelease(log[1], 2)
    actions = fresh.take()
    assert [(a.lsn, a.values) for a in _of(actions, Emit)] == [(2, [1])]
    assert [a.lsn for a in _of(actions, Released)] == [2]
    assert fresh.durable_from("peer") == 0


def _first_records() -> list[Any]:
    c = Coordinator(Waiter, name="me", sources=Sources(clock=lambda: 100.0, new_seed=lambda: 7))
    c.start(100.0)
    return list(_of(c.take(), Append)[0].records)


def test_malformed_peer_messages_are_refused_by_the_reader() -> None:
    from runtime._schema import read_msgs

    good = [["me", 1, "c", "count", [], True], ["me", 2, "r", 1, True, "v"]]
    assert read_msgs({"t": "msgs", "b": good}) == good
    for bad in (
        "not a list",
        [["me", 1, "c", ["count"], [], True]],  # an unhashable method name
        [["me", 1, "c", "count", "args", True]],
        [["me", 0, "c", "count", [], True]],
        [["me", True, "c", "count", [], True]],
        [["me", 1, "r", "1", True, 0]],
        [["me", 1, "x", "count", [], True]],
        [["me", 1, "c", "count", []]],
        [[1, 1, "c", "count", [], True]],
    ):
        assert read_msgs({"t": "msgs", "b": bad}) is None, bad


def test_the_key_main_is_refused_to_outside_callers() -> None:
    """main()'s outcome is logged under the key "main"; an outside call keyed so would never be
    remembered or answered (found by the Streams state machine)."""
    c = _coordinator()
    _durable(c)
    c.outside_call("k", {"t": "call", "id": "main", "m": "count", "a": []})
    answers = _of(c.take(), Answer)
    assert [(a.ok, a.value[0]) for a in answers] == [(False, "BadRequest")]
    assert "reserved" in answers[0].value[1]
    assert c.executor.app.calls == 0  # type: ignore[union-attr]


class Unstorable(Immortal):
    def __init__(self) -> None:
        self.thing = object()  # the state codec cannot store it

    @rpc
    def count(self) -> int:
        return 1


def test_an_unstorable_state_is_retried_after_another_interval_not_every_batch() -> None:
    from runtime._actions import Warn

    c = _coordinator(Unstorable, checkpoint_bytes=150)
    warnings = []
    for i in range(8):  # appends of 100 bytes: a checkpoint falls due every second one
        _call(c, f"k{i}")
        c.append_done(100)
        warnings += [a.text for a in _of(c.take(), Warn)]
    assert all("skipped" in w for w in warnings)
    assert len(warnings) == 4, warnings  # not one per batch once the first attempt failed


def test_what_is_kept_per_outside_key_is_released_once_durable() -> None:
    """Only a result not yet durable needs its LSN remembered (it was kept forever: a leak)."""
    c = _coordinator()
    _durable(c)
    for i in range(50):
        _call(c, f"key-{i}")
        _durable(c)
    assert c._result_lsn == {}  # the only private read here: it is what leaked
    _call(c, "key-3", caller="late retry")  # still answered from the durable result
    assert [a.value for a in _of(c.take(), Answer)] == [4]


def test_a_key_evicted_from_memory_is_looked_up_in_the_log_not_run_again() -> None:
    from runtime._actions import LookedUp, LookUp

    c = _coordinator(result_cache=2, look_up_keys=True)
    _durable(c)
    for i in range(5):
        _call(c, f"k{i}")
        lookups = _of(c.take(), LookUp)
        assert [a.key for a in lookups] == [f"k{i}"]  # a new key: is it in the log?
        c.key_looked_up(f"k{i}", None)  # no: run it
        _durable(c)
    assert c.executor.app.calls == 5  # type: ignore[union-attr]
    _call(c, "k0", caller="late")  # long evicted from the two kept in memory
    assert [a.key for a in _of(c.take(), LookUp)] == ["k0"]
    _call(c, "k0", caller="later")  # a second retry waits for the same look-up
    assert _of(c.take(), LookUp) == []
    c.key_looked_up("k0", LookedUp("count", [], True, 1))
    answers = _of(c.take(), Answer)
    assert [(a.caller, a.value) for a in answers] == [("late", 1), ("later", 1)]
    assert c.executor.app.calls == 5  # type: ignore[union-attr]


def test_a_key_reused_for_another_call_is_refused() -> None:
    from runtime._actions import LookedUp

    c = _coordinator(look_up_keys=True)
    _durable(c)
    c.outside_call("k", {"t": "call", "id": "a", "m": "count", "a": []})
    c.key_looked_up("a", None)
    _durable(c)
    c.outside_call("k", {"t": "call", "id": "a", "m": "count", "a": [1]})  # other arguments
    (answer,) = _of(c.take(), Answer)
    assert not answer.ok and answer.value[0] == "KeyReusedError"
    # The same from the log, for a key no longer in memory:
    c.outside_call("k", {"t": "call", "id": "old", "m": "count", "a": []})
    c.key_looked_up("old", LookedUp("other_method", [], True, 1))
    (answer,) = _of(c.take(), Answer)
    assert not answer.ok and answer.value[0] == "KeyReusedError"
    assert c.executor.app.calls == 1  # type: ignore[union-attr]


def test_an_empty_or_overlong_key_is_refused() -> None:
    c = _coordinator()
    _durable(c)
    for key in ("", b"", "x" * 257):
        c.outside_call("k", {"t": "call", "id": key, "m": "count", "a": []})
        (answer,) = _of(c.take(), Answer)
        assert answer.value[0] == "BadRequest"
    assert c.executor.app.calls == 0  # type: ignore[union-attr]


def test_a_link_opening_resends_only_what_is_durable() -> None:
    """A reply executed but not yet logged must not go out when a link opens: a crash before
    the fsync would re-execute the call, and the peer would hold a reply no log has (found by
    the simulator, seed 137 of fanin, once refused frames caused more reconnects)."""
    c = _coordinator()
    _durable(c)
    c.receive_messages("peer", [call_message("me", 1, "count", [], True)])
    _durable(c)  # reply 1 is durable and was sent
    c.receive_messages("peer", [call_message("me", 2, "count", [], True)])
    assert len(_of(c.take(), Append)) == 1  # reply 2 executed; its append is outstanding
    c.link_opened("peer", 0)  # the link reconnects now: it has logged none of our replies
    sends = _of(c.take(), Send)
    assert [[m[1] for m in s.messages] for s in sends] == [[1]]  # not reply 2: not durable
    c.append_done(10)
    assert [[m[1] for m in s.messages] for s in _of(c.take(), Send)] == [[2]]


class Scheduler(Immortal):
    """main() waits for a reply; a timer callback is pending meanwhile."""

    def __init__(self) -> None:
        self.ticks = 0

    async def main(self) -> None:
        self.call_later(1.0, self.tick)
        await self.ref("elsewhere").ping()

    @rpc
    def tick(self) -> None:
        self.ticks += 1


def test_a_timer_callback_is_new_work_held_for_a_checkpoint_like_a_call() -> None:
    c = _coordinator(Scheduler, checkpoint_seconds=0.5, quiescence_timeout=5.0)
    _durable(c)  # main() is suspended; the callback is due at 101
    c.advance(100.6)
    c.timer_fired("checkpoint")  # a checkpoint is due, and main() is suspended
    c.advance(101.0)
    c.timer_fired(("app", 1))
    assert c.executor.app.ticks == 0  # type: ignore[union-attr]  # held, not run
    c.receive_messages("elsewhere", [["me", 1, "r", 1, True, "pong"]])  # main() ends
    appends = _of(c.take(), Append)
    assert len(appends) == 1 and appends[0].checkpoint is not None
    c.append_done(10)
    _durable(c)
    assert c.executor.app.ticks == 1  # type: ignore[union-attr]  # ran after the checkpoint
