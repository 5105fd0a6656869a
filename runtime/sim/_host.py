"""The simulator's driver of the real coordinator, and a simulated outside caller.

``SimNode`` is to the simulator what ``runtime._node.Node`` is to the real world: it carries out
the coordinator's actions (append to a simulated log, send on simulated connections, set timers
on the simulated clock) and turns what arrives into the coordinator's events. It may die between
any two actions, as the seed decides; a restart recovers from what the simulated log kept, at a
new epoch and a new address (a new incarnation), exactly as a process restarted elsewhere does.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .._actions import (
    Ack,
    Answer,
    Append,
    Connect,
    Emit,
    LookedUp,
    LookUp,
    Released,
    RunEffect,
    Send,
    SetTimer,
)
from .._api import Immortal
from .._coordinator import Coordinator, CoordinatorConfig
from .._effects import run_effect
from .._executor import EffectRequest, Sources
from .._protocol import Closed, Connection, Opened, Received
from .._schema import (
    ack,
    call,
    read_ack,
    read_checkpoint,
    read_msgs,
    read_result,
    result,
)
from ._log import SimLog
from ._net import End

if TYPE_CHECKING:
    from ._world import World

SECRET = b"simulated cluster secret, 32 b."
PIPELINE_SLICE = 64


class SimNode:
    """One instance across all its incarnations; its log outlives each of them."""

    def __init__(
        self, world: World, name: str, app_cls: type[Immortal], coordinator_cls: type[Coordinator]
    ) -> None:
        self.world = world
        self.name = name
        self.app_cls = app_cls
        self.coordinator_cls = coordinator_cls
        self.log = SimLog()
        self.alive = False
        self.incarnation = 0
        self.epoch = 0
        self.crashes = 0
        self.paused_until = 0.0
        self.coordinator: Coordinator | None = None
        self.printed: list[tuple[int, int, Any]] = []  # (lsn, index, value) of every emit line
        self._links: dict[str, End | None] = {}
        self._link_delay: dict[str, float] = {}
        self._incoming: dict[str, End] = {}
        self._ends: list[End] = []
        self._timers: dict[Any, int] = {}
        self._generation = 0

    # -- life and death ------------------------------------------------------------------------

    def start(self) -> None:
        world = self.world
        self.incarnation += 1
        self.alive = True
        self.epoch = world.registry_next_epoch(self.name)
        self._links, self._link_delay, self._incoming, self._ends = {}, {}, {}, []
        self._timers = {}
        config: CoordinatorConfig = world.coordinator_config()
        sources = Sources(
            clock=lambda: world.now,
            new_uuid=lambda: uuid.UUID(int=world.rng.getrandbits(128)),
            new_seed=lambda: world.rng.getrandbits(64),
        )
        c = self.coordinator = self.coordinator_cls(
            self.app_cls, name=self.name, config=config, sources=sources
        )
        found = self.log.newest_checkpoint()
        if found is not None:
            lsn, payload = found
            c.restore(read_checkpoint(payload, where=f"{self.name} checkpoint {lsn}"), lsn)
        for lsn in range(c.next_lsn, self.log.last_lsn + 1):
            c.replay(self.log.records[lsn - 1], lsn)
        span = c.unreleased(self.log.released)
        if span is not None:
            for lsn in range(span[0], span[1] + 1):
                c.rerelease(self.log.records[lsn - 1], lsn)
        world.registry_register(self.name, self.epoch, self)
        world.trace(
            f"{self.name}: start #{self.incarnation} epoch {self.epoch}, log at {self.log.last_lsn}"
            f", checkpoint {found[0] if found else None}"
        )
        c.start(world.now)
        self._do()

    def crash(self, why: str) -> None:
        if not self.alive:
            return
        world = self.world
        self.alive = False
        self.crashes += 1
        self.coordinator = None
        kept = self.log.crash(world.rng)
        world.trace(f"{self.name}: CRASH ({why}); {kept}")
        for end in self._ends:
            end.close()
        world.schedule_restart(self)

    def crash_at(self, incarnation: int) -> None:
        """Crash if still the same incarnation (a scheduled fault)."""
        if self._mine(incarnation):
            self.crash("soon after a handshake")

    def _mine(self, incarnation: int) -> bool:
        return self.alive and self.incarnation == incarnation

    def deliver(self, incarnation: int, fn: Any, *args: Any) -> None:
        """Run ``fn`` for this incarnation unless it died; later if the process is paused."""
        if not self._mine(incarnation):
            return
        if self.paused_until > self.world.now:
            self.world.at(self.paused_until, self.deliver, incarnation, fn, *args)
            return
        fn(*args)

    # -- actions ---------------------------------------------------------------------------------

    def _do(self) -> None:
        c = self.coordinator
        if c is None:
            return
        world = self.world
        for action in c.take():
            if world.crash_now(self):
                self.crash(f"before {action!r}")
                return
            world.trace(f"{self.name}: {action!r}")
            if isinstance(action, Append):
                self._append(action)
            elif isinstance(action, Send):
                end = self._link(action.peer)
                if end is not None and end.info.get("ready") and not end.protocol.closed:
                    end.write(end.protocol.send_messages(action.messages))
            elif isinstance(action, Connect):
                self._link(action.peer)
            elif isinstance(action, Answer):
                caller: End = action.caller
                caller.send(result(action.key, action.ok, action.value))
            elif isinstance(action, Emit):
                for index, value in enumerate(action.values):
                    self.printed.append((action.lsn, index, value))
            elif isinstance(action, Released):
                self.log.write_released(action.lsn, world.rng)
            elif isinstance(action, Ack):
                incoming = self._incoming.get(action.peer)
                if incoming is not None and incoming.open:
                    incoming.send(ack(action.upto))
            elif isinstance(action, SetTimer):
                self._set_timer(action.key, action.due)
            elif isinstance(action, LookUp):
                world.after(0.0, self.deliver, self.incarnation, self._look_up, action.key)
            elif isinstance(action, RunEffect):  # outside the instance: it takes a while
                if action.request.lsn > self.log.last_lsn:
                    world.problems.append(
                        f"{self.name}: side effect {action.request.key!r} handed out before "
                        f"step {action.request.lsn} was durable"
                    )
                delay = world.rng.uniform(0.0005, 0.01)
                world.after(delay, self.deliver, self.incarnation, self._effect, action.request)
            # Warn: the trace line above is all it needs here.

    def _append(self, batch: Append) -> None:
        written = self.log.begin(batch)
        self.world.after(
            self.world.fsync_latency(), self.deliver, self.incarnation, self._durable, written
        )

    def _durable(self, written: int) -> None:
        if self.world.crash_now(self):  # between the fsync and the driver hearing of it
            self.crash("as its append completes")
            return
        self.log.finish()
        c = self.coordinator
        assert c is not None
        c.advance(self.world.now)
        c.append_done(written)
        self._do()

    def _effect(self, request: EffectRequest) -> None:
        """The side effect ran (the real node runs it on a worker thread)."""
        ok, value = run_effect(request, sleep=lambda _seconds: None)
        c = self.coordinator
        assert c is not None
        c.advance(self.world.now)
        c.effect_done(request.eid, ok, value)
        self._do()

    def _look_up(self, key: Any) -> None:
        """What the log holds for an outside key (the real node asks its lmdb key index)."""
        call_input: dict[str, Any] | None = None
        found: LookedUp | None = None
        for record in self.log.records:
            inp: dict[str, Any] = record["in"]  # type: ignore[assignment]
            if inp.get("id") == key and "from" not in inp:
                call_input = inp
            for answered, ok, value in record.get("rep", ()):
                if answered == key and call_input is not None:
                    found = LookedUp(call_input["m"], call_input.get("a", []), ok, value)
        c = self.coordinator
        assert c is not None
        c.key_looked_up(key, found)
        self._do()

    def _set_timer(self, key: Any, due: float) -> None:
        self._generation += 1
        self._timers[key] = self._generation
        at = max(due, self.world.now) + self.world.rng.uniform(0, 0.002)
        self.world.at(at, self.deliver, self.incarnation, self._fire, key, self._generation)

    def _fire(self, key: Any, generation: int) -> None:
        if self._timers.get(key) != generation:
            return  # replaced by a later SetTimer with the same key
        del self._timers[key]
        c = self.coordinator
        assert c is not None
        c.advance(self.world.now)
        c.timer_fired(key)
        self._do()

    # -- links to peers ------------------------------------------------------------------------

    def _link(self, peer: str) -> End | None:
        if peer not in self._links:
            self._links[peer] = None
            self._link_delay[peer] = 0.05
            self._dial(peer)
        return self._links[peer]

    def _dial(self, peer: str) -> None:
        world = self.world
        c = self.coordinator
        assert c is not None
        target = world.registry_lookup(peer)
        if target is None or not target.alive or world.network.partitioned(self.name, peer):
            delay = self._link_delay[peer]
            self._link_delay[peer] = min(delay * 2, 1.0)
            world.after(delay, self.deliver, self.incarnation, self._dial, peer)
            return
        mine = Connection(
            me=self.name,
            epoch=self.epoch,
            secret=SECRET,
            initiator=True,
            last_from=c.durable_from,
            nonce=world.nonce(),
        )
        theirs = target.acceptor()
        end = world.network.connect(
            _Bound(self, self.incarnation),
            mine,
            self.name,
            "link",
            _Bound(target, target.incarnation),
            theirs,
            target.name,
        )
        assert end.other is not None
        self._ends.append(end)
        target._ends.append(end.other)
        self._links[peer] = end
        end.write(mine.start())

    def acceptor(self) -> Connection:
        """The protocol state of a connection this incarnation accepts."""
        assert self.coordinator is not None
        return Connection(
            me=self.name,
            epoch=self.epoch,
            secret=SECRET,
            initiator=False,
            last_from=self.coordinator.durable_from,
            nonce=self.world.nonce(),
        )

    def on_data(self, end: End, data: bytes) -> None:
        events, reply = end.protocol.receive_data(data)
        if reply:
            end.write(reply)
        for event in events:
            if not self.alive or self.coordinator is None:
                return
            if end.role == "link":
                self._link_event(end, event)
            else:
                self._incoming_event(end, event)

    def _link_event(self, end: End, event: Any) -> None:
        c = self.coordinator
        assert c is not None
        if isinstance(event, Opened):
            end.info["ready"] = True
            self._link_delay[end.peer or ""] = 0.05
            self.world.after_handshake(self)
            c.link_opened(end.peer or "", event.last)
            self._do()
        elif isinstance(event, Received):
            if event.message.get("t") == "ack":
                upto = read_ack(event.message)
                if upto is not None:
                    c.ack_received(end.peer or "", upto)
        elif isinstance(event, Closed):
            end.close()
            self.on_closed(end)

    def _incoming_event(self, end: End, event: Any) -> None:
        c = self.coordinator
        assert c is not None
        if isinstance(event, Opened):
            target = self.world.registry_lookup(event.peer) if event.peer else None
            refusal = c.refusal(event.peer, event.epoch, self.world.registry_epoch(event.peer))
            if refusal is not None or (event.peer is not None and target is None):
                end.write(end.protocol.send_error(refusal or "unknown peer"))
                end.close()
                return
            end.peer = event.peer
            if event.peer is not None:
                self._incoming[event.peer] = end
                self.world.after_handshake(self)
                c.peer_connected(event.peer, event.last)
                self._do()
        elif isinstance(event, Received):
            m = event.message
            t = m.get("t")
            if t == "call" and end.peer is None:
                c.advance(self.world.now)
                c.outside_call(end, m)
                self._do()
            elif t == "msgs" and end.peer is not None:
                batch = read_msgs(m)
                if batch is None:
                    end.write(end.protocol.send_error("malformed msgs message"))
                    end.close()
                    return
                self._receive_slices(end, end.peer, batch)
            elif t == "ack" and end.peer is not None:
                upto = read_ack(m)
                if upto is not None:
                    c.ack_received(end.peer, upto)
        elif isinstance(event, Closed):
            end.close()
            self.on_closed(end)

    def _receive_slices(self, end: End, peer: str, batch: list[Any]) -> None:
        """Execute a big batch a slice at a time, letting other events in between (as the real
        node yields to its event loop)."""
        if not end.open:
            return
        c = self.coordinator
        assert c is not None
        c.advance(self.world.now)
        admitted = c.receive_messages(peer, batch[:PIPELINE_SLICE])
        self._do()
        if not admitted:
            if end.open and self.alive:
                end.write(end.protocol.send_error("sequence gap; reconnect to resend"))
                end.close()
                self.on_closed(end)
            return
        rest = batch[PIPELINE_SLICE:]
        if rest:
            self.world.after(
                0.0, self.deliver, self.incarnation, self._receive_slices, end, peer, rest
            )

    def on_closed(self, end: End) -> None:
        if end.role == "link" and end.peer is not None and self._links.get(end.peer) is end:
            self._links[end.peer] = None
            delay = self._link_delay.get(end.peer, 0.05)
            self.world.after(delay, self.deliver, self.incarnation, self._dial, end.peer)
        elif end.peer is not None and self._incoming.get(end.peer) is end:
            del self._incoming[end.peer]


class _Bound:
    """An end's owner as one incarnation of a node: events for a dead incarnation vanish."""

    def __init__(self, node: SimNode, incarnation: int) -> None:
        self.node = node
        self.incarnation = incarnation

    def on_data(self, end: End, data: bytes) -> None:
        self.node.deliver(self.incarnation, self.node.on_data, end, data)

    def on_closed(self, end: End) -> None:
        self.node.deliver(self.incarnation, self.node.on_closed, end)


class SimCaller:
    """An outside program calling an instance: one call at a time, retried with the same
    idempotency key after a timeout or a broken connection, sometimes twice at once."""

    def __init__(self, world: World, name: str, target: str, count: int) -> None:
        self.world = world
        self.name = name
        self.target = target
        self.plan = [(f"{name}/{i}", i) for i in range(count)]
        self.answers: dict[str, list[Any]] = {}
        self.index = 0
        self.attempts = 0
        self._end: End | None = None
        self._attempt = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.plan)

    def start(self) -> None:
        self._try()

    def _try(self) -> None:
        if self.done:
            return
        world = self.world
        self._attempt += 1
        attempt = self._attempt
        self.attempts += 1
        target = world.registry_lookup(self.target)
        if target is None or not target.alive or target.coordinator is None:
            world.after(0.05, self._retry, attempt)
            return
        mine = Connection(me=None, epoch=0, secret=SECRET, initiator=True, nonce=world.nonce())
        theirs = target.acceptor()
        end = world.network.connect(
            self, mine, self.name, "caller", _Bound(target, target.incarnation), theirs, target.name
        )
        assert end.other is not None
        target._ends.append(end.other)
        end.info["attempt"] = attempt
        self._end = end
        end.write(mine.start())
        world.after(world.rng.uniform(0.3, 1.0), self._retry, attempt)  # the attempt's timeout

    def _retry(self, attempt: int) -> None:
        if attempt != self._attempt or self.done:
            return
        if self._end is not None:
            self._end.close()
        self._try()

    def on_data(self, end: End, data: bytes) -> None:
        events, reply = end.protocol.receive_data(data)
        if reply:
            end.write(reply)
        for event in events:
            if isinstance(event, Opened):
                key, tag = self.plan[self.index]
                request = call(key, "inc", [self.name, tag])
                end.send(request)
                if self.world.faulty and self.world.rng.random() < 0.1:
                    end.send(request)  # an impatient caller sends it twice
                if self.index and self.world.faulty and self.world.rng.random() < 0.2:
                    # A late retry of an earlier call, long answered: the same answer must come
                    # back (from memory, or from the log once evicted from the result cache).
                    old_key, old_tag = self.plan[self.world.rng.randrange(self.index)]
                    end.send(call(old_key, "inc", [self.name, old_tag]))
            elif isinstance(event, Received) and event.message.get("t") == "result":
                key, ok, value = read_result(event.message)
                self.answers.setdefault(str(key), []).append((ok, value))
                if not self.done and key == self.plan[self.index][0]:
                    self.index += 1
                    end.close()
                    self._attempt += 1
                    self.world.after(0.0, self._try)
            elif isinstance(event, Closed):
                end.close()

    def on_closed(self, end: End) -> None:
        if end is self._end and not self.done:
            self.world.after(0.02, self._retry, end.info.get("attempt", 0))
