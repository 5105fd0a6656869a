"""The causal model over several logs (debugger/_causal.py): the merged order, the consistent
cut, following messages.

Synthetic histories (hypothesis draws who steps, what it receives and what it sends; records in
the runtime's own shapes, read through the same merge) check the properties against a ground
truth computed independently (explicit sets of ancestors); real logs of a chain and a fan-in,
written by instance processes killed with SIGKILL along the way, check that the records the
runtime really writes link up, across restarts.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from debugger._causal import CausalMerge, StepRef, step_links
from debugger._merged import MergedHistory
from logformat import LogReader, Record
from runtime import connect
from runtime._schema import as_input, call_message, reply_message
from tests._instances import Cluster

CHAIN = "tests/apps/chain.py"


# -- synthetic histories ----------------------------------------------------------------------


@dataclass
class World:
    """Instances stepping in a global order that respects causality (the generation order),
    with wall clocks that disagree with it (skewed per instance)."""

    names: list[str]
    logs: dict[str, list[Record]] = field(default_factory=dict)
    pending: dict[tuple[str, str], list[list[Any]]] = field(default_factory=dict)
    next_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    owed: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # replies to send
    sent_at: dict[tuple[str, str, int], StepRef] = field(default_factory=dict)
    received_at: dict[tuple[str, str, int], StepRef] = field(default_factory=dict)
    ancestors: dict[StepRef, set[StepRef]] = field(default_factory=dict)
    calls: dict[tuple[str, str, int], StepRef] = field(default_factory=dict)  # caller's call step

    def __post_init__(self) -> None:
        for name in self.names:
            self.logs[name] = []
            self.owed[name] = []

    def step(self, actor: str, pick: int, sends: list[tuple[int, int]], skew: int) -> None:
        log = self.logs[actor]
        lsn = len(log) + 1
        me = StepRef(actor, lsn)
        past: set[StepRef] = set(self.ancestors[StepRef(actor, lsn - 1)]) if lsn > 1 else set()
        if lsn > 1:
            past.add(StepRef(actor, lsn - 1))
        incoming = [key for key, queue in sorted(self.pending.items()) if key[1] == actor and queue]
        inp: dict[str, Any]
        if lsn == 1:
            inp = {"k": "start"}
        elif incoming and pick % 4:
            sender = incoming[pick % len(incoming)][0]
            message = self.pending[(sender, actor)].pop(0)
            inp = dict(as_input(sender, message))
            key = (sender, actor, message[1])
            self.received_at[key] = me
            source = self.sent_at[key]
            past |= self.ancestors[source] | {source}
            if message[2] == "c" and message[5]:
                self.owed[actor].append((sender, message[1]))
        else:
            inp = {"k": "call", "id": f"{actor}-{lsn}", "m": "poke", "a": []}
        out: list[list[Any]] = []
        for target_index, kind in sends:
            if kind == 2 and self.owed[actor]:
                to, re = self.owed[actor].pop(0)
                seq = self._number(actor, to)
                out.append(reply_message(to, seq, re, True, lsn))
            else:
                to = self.names[target_index % len(self.names)]
                seq = self._number(actor, to)
                out.append(call_message(to, seq, "m", [lsn], kind == 1))
                self.calls[(actor, to, seq)] = me
        for message in out:
            self.sent_at[(actor, message[0], message[1])] = me
            self.pending.setdefault((actor, message[0]), []).append(message)
        self.ancestors[me] = past
        wall = (log[-1].wall_ns if log else 0) + 1 + skew
        log.append(Record(lsn, 1, wall + 1000 * self.names.index(actor), {"in": inp, "out": out}))

    def _number(self, sender: str, target: str) -> int:
        seq = self.next_seq.get((sender, target), 0) + 1
        self.next_seq[(sender, target)] = seq
        return seq


actions = st.lists(
    st.tuples(
        st.integers(0, 3),  # who steps
        st.integers(0, 7),  # which incoming stream it takes (or an outside call)
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), max_size=3),  # what it sends
        st.integers(0, 3000),  # how far its clock jumps (skew against the others)
    ),
    min_size=1,
    max_size=60,
)


def build(n: int, script: list[tuple[int, int, list[tuple[int, int]], int]]) -> World:
    world = World([f"i{k}" for k in range(n)])
    for who, pick, sends, skew in script:
        world.step(world.names[who % n], pick, sends, skew)
    return world


def merged(world: World, chunk: int = 7) -> CausalMerge:
    merge = CausalMerge({name: iter(world.logs[name]) for name in world.names})
    while merge.advance(chunk):  # small chunks: the incremental path, as a UI drives it
        pass
    return merge


@given(st.integers(2, 4), actions)
def test_every_receive_comes_after_its_send_and_every_reply_after_its_call(
    n: int, script: list[tuple[int, int, list[tuple[int, int]], int]]
) -> None:
    world = build(n, script)
    merge = merged(world)
    assert merge.count == sum(len(log) for log in world.logs.values())
    where = {merge.at(p): p for p in range(1, merge.count + 1)}
    assert len(where) == merge.count  # each step once
    for name, log in world.logs.items():
        positions = [where[StepRef(name, r.lsn)] for r in log]
        assert positions == sorted(positions)  # each log's own order is kept
    for key, receiving in world.received_at.items():
        assert where[world.sent_at[key]] < where[receiving]
    for name, log in world.logs.items():
        for r in log:
            inp = r.value["in"]
            if inp["k"] == "reply":  # the reply to our call re, to inp["from"]
                call = world.calls[(name, inp["from"], inp["re"])]
                assert where[call] < where[StepRef(name, r.lsn)]


@given(st.integers(2, 4), actions)
def test_the_cut_is_the_causal_past_and_is_consistent(
    n: int, script: list[tuple[int, int, list[tuple[int, int]], int]]
) -> None:
    world = build(n, script)
    merge = merged(world)
    for step, past in world.ancestors.items():
        cut = merge.cut(step)
        # the newest step of every other instance that happened before: the ground truth
        for name in world.names:
            if name == step.instance:
                assert cut[name] == step.lsn
            else:
                assert cut[name] == max((s.lsn for s in past if s.instance == name), default=0)
        # consistency: no state in the cut reflects a message whose send is not in the cut
        for key, receiving in world.received_at.items():
            if receiving.lsn <= cut[receiving.instance]:
                sender = world.sent_at[key]
                assert sender.lsn <= cut[sender.instance], (step, key)


@given(st.integers(2, 4), actions)
def test_following_a_message_lands_on_the_right_step_both_ways(
    n: int, script: list[tuple[int, int, list[tuple[int, int]], int]]
) -> None:
    world = build(n, script)
    merge = merged(world)
    for name, log in world.logs.items():
        for r in log:
            links = step_links(r.value)
            here = StepRef(name, r.lsn)
            for message in links.sent:
                hop = merge.receiver(name, message)
                key = (name, message.target, message.seq)
                if key in world.received_at:
                    assert hop.step == world.received_at[key] and not hop.in_flight
                    assert merge.sender_of(world.received_at[key]).step == here
                else:
                    assert hop.step is None and hop.in_flight
                if message.kind == "c" and message.wants_reply:
                    back = merge.reply_of_call(name, message)
                    assert (
                        back.step is None
                        or merge.call_of_reply(back.step, message.seq, message.target).step == here
                    )
            if links.sender is None:
                assert merge.sender_of(here).step is None
    never = {(ref.instance, m.target, m.seq) for ref, m in merge.in_flight()}
    expected = {k for k in world.sent_at if k not in world.received_at}
    assert never == expected


def test_the_merge_is_incremental() -> None:
    world = build(3, [(k % 3, k, [((k + 1) % 3, 1)], 5) for k in range(300)])
    merge = CausalMerge({name: iter(world.logs[name]) for name in world.names})
    assert merge.advance(40) == 40 and not merge.done
    assert merge.cut(merge.at(40))  # the first screen's cut, before the rest is merged
    merge.run()
    assert merge.done and merge.count == 300


def test_a_receive_whose_send_no_log_holds_is_let_through_in_wall_order() -> None:
    """A trimmed sender: i1's log no longer holds the step that sent i0's input."""
    world = build(2, [(1, 0, [(0, 0)], 0), (1, 0, [], 0), (0, 0, [], 0), (0, 1, [], 0)])
    assert world.received_at[("i1", "i0", 1)] == StepRef("i0", 2)
    logs = {"i0": iter(world.logs["i0"]), "i1": iter(world.logs["i1"][1:])}  # i1 trimmed
    merge = CausalMerge(logs)
    merge.run()
    assert merge.done and merge.count == 3
    hop = merge.sender_of(StepRef("i0", 2))
    assert hop.step is None and "does not hold" in hop.why
    assert merge.cut(StepRef("i0", 2)) == {"i0": 2, "i1": 0}


def test_why_walks_timers_and_effects_back_to_the_step_that_set_them() -> None:
    records = [
        Record(1, 1, 1, {"in": {"k": "start"}, "tim": [[7, 5.0]], "fx": [[3, "k", "f"]]}),
        Record(2, 1, 2, {"in": {"k": "timer", "tid": 7}}),
        Record(3, 1, 3, {"in": {"k": "effect", "eid": 3, "ok": 1}}),
    ]
    merge = CausalMerge({"solo": iter(records)})
    merge.run()
    for lsn in (2, 3):
        hop = merge.why(StepRef("solo", lsn), step_links(records[lsn - 1].value))
        assert hop.step == StepRef("solo", 1)
    assert merge.why(StepRef("solo", 1), step_links(records[0].value)).step is None


# -- real logs, real SIGKILLs -------------------------------------------------------------------


def _links_of_real_logs(home: Path, names: list[str]) -> tuple[MergedHistory, int, set[str]]:
    """Open ``names`` merged and check every link against the records themselves: each
    receive's input is the message its sender logged, after it in the merged order, and each
    reply after its call. Returns the history, the links checked and the instances whose
    links span more than one epoch (a restart)."""
    history = MergedHistory(names, home=home)
    history.build()
    merge = history.merge
    assert merge.done and merge.count == history.total
    epochs: dict[str, dict[int, int]] = {}
    records: dict[StepRef, dict[str, Any]] = {}
    for name in names:
        with LogReader(home / "logs" / name) as reader:
            for r in reader.records():
                records[StepRef(name, r.lsn)] = r.value
                epochs.setdefault(name, {})[r.lsn] = r.epoch
    checked = 0
    spanning: set[str] = set()
    for step, record in records.items():
        links = step_links(record)
        position = merge.position(step)
        assert position is not None
        for message in links.sent:
            hop = merge.receiver(step.instance, message)
            if hop.step is None:
                assert hop.in_flight, hop.why
                continue
            received = records[hop.step]["in"]
            assert received["from"] == step.instance and received["seq"] == message.seq
            assert (received["k"] == "reply") == (message.kind == "r")
            assert merge.position(step) < merge.position(hop.step)  # type: ignore[operator]
            assert merge.sender_of(hop.step).step == step  # and back
            if message.kind == "r":
                call = merge.call_of_reply(hop.step, message.re, step.instance)
                assert call.step is not None
                assert merge.position(call.step) < merge.position(hop.step)  # type: ignore[operator]
            if message.kind == "c" and message.wants_reply:
                reply = merge.reply_of_call(step.instance, message)
                assert reply.step is not None, reply.why
                answer = records[reply.step]["in"]
                assert answer["k"] == "reply" and answer["from"] == message.target
                assert answer["re"] == message.seq
            for ref in (step, hop.step):
                if epochs[ref.instance][ref.lsn] > 1:
                    spanning.add(ref.instance)
            checked += 1
    return history, checked, spanning


def _call_front(home: Path, n: int, kill: Any) -> None:
    with connect(home, timeout=60) as client:
        for i in range(1, n + 1):
            assert client.call("front", "go", i) == sum(range(1, i + 1)) * 10
            kill(i)


def test_a_chain_with_sigkills_links_up_in_causal_order(home: Path, cluster: Cluster) -> None:
    back = cluster.start(f"{CHAIN}:Back", "back")
    middle = cluster.start(f"{CHAIN}:Middle", "middle")
    front = cluster.start(f"{CHAIN}:Front", "front")
    rng = random.Random(18)
    victims = {10: back, 20: middle, 30: front, 40: back, 50: middle}

    def kill(i: int) -> None:
        victim = victims.get(i)
        if victim is not None:
            time.sleep(rng.random() * 0.01)
            victim.kill()
            victim.start()

    _call_front(home, 60, kill)
    for instance in (front, middle, back):
        assert instance.stop() == 0
    history, checked, spanning = _links_of_real_logs(home, ["front", "middle", "back"])
    try:
        # 60 calls front->middle, 60 posts and 60 calls middle->back, 120 replies
        assert checked == 300
        assert spanning == {"front", "middle", "back"}
        assert not history.merge.in_flight()
        # the cut of the last step of front: the back end has counted all 60
        last = history.merge.position(StepRef("front", history.history("front").last_lsn))
        assert last is not None
        states = {c.instance: c.state for c in history.cut_states(last)}
        assert states["back"]["total"] == sum(range(1, 61))
        assert states["front"]["count"] == 60
    finally:
        history.close()


def test_a_fan_in_with_sigkills_links_up_in_causal_order(home: Path, cluster: Cluster) -> None:
    counter = cluster.start(f"{CHAIN}:Seen", "counter")
    feeders = [cluster.start(f"{CHAIN}:Feeder", f"feed{k}") for k in (1, 2)]
    from tests.apps.chain import FEEDS

    kills = 0
    with connect(home, timeout=60) as client:
        deadline = time.monotonic() + 120
        while (seen := client.call("counter", "seen")) < 2 * FEEDS:
            assert time.monotonic() < deadline
            if kills < 3 and seen >= (20, 80, 160)[kills]:
                victim = [feeders[0], counter, counter][kills]
                victim.kill()
                victim.start()
                kills += 1
            time.sleep(0.002)
    assert kills == 3
    for instance in (counter, *feeders):
        assert instance.stop() == 0
    history, checked, spanning = _links_of_real_logs(home, ["feed1", "feed2", "counter"])
    try:
        assert checked == 4 * FEEDS  # a call and a reply for each
        assert {"counter", "feed1"} <= spanning
        # a cut: at the counter's step that received feed2's last call, feed2 sent it
        call = history.merge.receiver(
            "feed2", [m for s, m in _sends(history, "feed2") if m.target == "counter"][-1]
        )
        assert call.step is not None
        cut = history.merge.cut(call.step)
        assert cut["feed2"] == history.back(history.merge.position(call.step) or 0).step.lsn  # type: ignore[union-attr]
    finally:
        history.close()


def _sends(history: MergedHistory, name: str) -> list[tuple[int, Any]]:
    found = []
    h = history.history(name)
    for lsn in range(h.first_lsn, h.last_lsn + 1):
        for message in step_links(h.record(lsn)).sent:
            found.append((lsn, message))
    return found


@given(st.integers(2, 3), actions)
def test_synthetic_logs_on_disk_read_through_the_debugger_give_the_same_cuts(
    tmp_path_factory: Any, n: int, script: list[tuple[int, int, list[tuple[int, int]], int]]
) -> None:
    """The same histories written as real logs (LogWriter, one frame per step) and opened the
    way ``immortals debug A B`` opens them (MergedHistory: its own readers, the merge in
    chunks): the cuts are the ground truth's."""
    from logformat import LogMeta, LogWriter

    world = build(n, script)
    folder = tmp_path_factory.mktemp("synthetic")
    for name, log in world.logs.items():
        meta = LogMeta(name, "tests/apps/chain.py:Counter", "synthetic")
        with LogWriter.open(folder / name, create=meta, sync=False) as writer:
            for record in log:
                writer.append([record.value], wall_ns=record.wall_ns)
    history = MergedHistory([folder / name for name in world.names])
    try:
        history.build()
        assert history.merge.count == sum(len(log) for log in world.logs.values())
        for step, past in world.ancestors.items():
            cut = history.merge.cut(step)
            for name in world.names:
                if name != step.instance:
                    newest = max((s.lsn for s in past if s.instance == name), default=0)
                    assert cut[name] == newest
    finally:
        history.close()
