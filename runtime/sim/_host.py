"""The simulator's driver of the real coordinator, and a simulated outside caller.

``SimNode`` is to the simulator what ``runtime._node.Node`` is to the real world: it carries out
the coordinator's actions (append to a simulated log, send on simulated connections, set timers
on the simulated clock) and turns what arrives into the coordinator's events. It may die between
any two actions, as the seed decides; a restart recovers from what the simulated log kept, at a
new epoch and a new address (a new incarnation), exactly as a process restarted elsewhere does.

An instance may have standbys (``SimStandby``): processes that follow its log, replaying each
durable step with ``Coordinator.replay`` and releasing nothing, and write the checkpoints. When
the primary dies, the first standby alive takes over: it claims the log at a new epoch, applies
the durable tail, fixes the takeover point and serves. A primary paused past its lease is taken
over while it still lives: it becomes a zombie (a copy of the node that keeps the old
incarnation), and the driver's fence check must stop it from releasing anything once it wakes.
"""

from __future__ import annotations

import copy
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
from .._coordinator import Coordinator
from .._effects import run_effect
from .._executor import EffectRequest, Sources, app_state
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
RELEASES = (Send, Answer, Emit, Released, Ack, RunEffect)  # what the world may see of a step


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
        self.standby_target = 0  # how many standbys follow this instance's log
        self.standbys: list[SimStandby] = []
        self.zombies: dict[int, SimNode] = {}  # incarnation -> the paused process taken over
        self.zombie = False  # this object is such a zombie
        self.taking_over = False  # a standby claimed the log and is about to serve
        self._standby_count = 0

    def new_coordinator(self) -> Coordinator:
        world = self.world
        sources = Sources(
            clock=lambda: world.now,
            new_uuid=lambda: uuid.UUID(int=world.rng.getrandbits(128)),
            new_seed=lambda: world.rng.getrandbits(64),
        )
        return self.coordinator_cls(
            self.app_cls, name=self.name, config=world.coordinator_config(), sources=sources
        )

    # -- life and death ------------------------------------------------------------------------

    def start(self, warm: Coordinator | None = None, epoch: int | None = None) -> None:
        """Start a new incarnation: recover from the log, or (``warm``, a takeover) go on from
        a standby's coordinator that replayed the whole durable log already."""
        world = self.world
        self.incarnation += 1
        self.alive = True
        self.epoch = epoch if epoch is not None else world.registry_next_epoch(self.name)
        self._links, self._link_delay, self._incoming, self._ends = {}, {}, {}, []
        self._timers = {}
        found = self.log.newest_checkpoint()
        if warm is not None:
            c = self.coordinator = warm
        else:
            c = self.coordinator = self.new_coordinator()
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
        if self.standby_target:
            self._look_for_standbys(self.incarnation)

    def crash(self, why: str) -> None:
        if not self.alive:
            return
        world = self.world
        self.alive = False
        self.crashes += 1
        self.coordinator = None
        kept = self.log.crash(world.rng, self.epoch)
        world.trace(f"{self.name}: CRASH ({why}); {kept}")
        for end in self._ends:
            end.close()
        if self.zombie:
            return
        self._primary_lost()

    def _primary_lost(self) -> None:
        """The primary is gone: a standby takes over, or the instance restarts elsewhere."""
        if self.taking_over:
            return
        standby = next((s for s in self.standbys if s.alive), None)
        if standby is None:
            self.world.schedule_restart(self)
        else:
            self.begin_takeover(standby)

    # -- fencing, standbys and takeovers ---------------------------------------------------------

    def fenced(self) -> bool:
        """Whether a higher epoch claimed the log (the fence file, in the real driver)."""
        return self.log.claimed_above(self.epoch) is not None

    def release_fenced(self) -> bool:
        """The fence check before releasing anything (a planted driver skips it)."""
        return self.fenced()

    def exit_fenced(self, what: str) -> None:
        """A higher epoch claimed the log: release nothing, exit."""
        world = self.world
        world.trace(f"{self.name}: FENCED at epoch {self.epoch} ({what}); exits")
        self.alive = False
        self.coordinator = None
        self.log.crash(world.rng, self.epoch)
        for end in self._ends:
            end.close()
        if not self.zombie and not self.taking_over:
            self._primary_lost()  # the takeover that claimed the log did not happen

    def _fence_check(self) -> None:
        """A zombie woke up: its lease and the fence tell it it is no longer the primary."""
        if self.fenced():
            self.exit_fenced("woke up after its lease")

    def fill_standbys(self) -> None:
        """Start standbys until ``standby_target`` follow the log."""
        while sum(1 for s in self.standbys if s.alive) < self.standby_target:
            self._standby_count += 1
            standby = SimStandby(self, self._standby_count)
            self.standbys.append(standby)
            standby.start()

    def standby_lost(self, standby: SimStandby) -> None:
        if standby in self.standbys:
            self.standbys.remove(standby)
        self.world.after(self.world.rng.uniform(0.05, 0.5), self.fill_standbys)

    def _look_for_standbys(self, incarnation: int) -> None:
        """The primary's periodic look at the registry: while a standby follows, it writes the
        checkpoints and this primary holds no input for quiescence."""
        if not self._mine(incarnation):
            return
        c = self.coordinator
        assert c is not None
        c.checkpoints_elsewhere(any(s.alive for s in self.standbys))
        self._do()
        self.world.after(0.2, self.deliver, incarnation, self._look_for_standbys, incarnation)

    def begin_takeover(self, standby: SimStandby) -> None:
        """``standby`` got the writer lock: it claims the log at a new epoch at once, and
        serves once it applied the durable tail."""
        world = self.world
        epoch = world.registry_next_epoch(self.name)
        self.log.claim(epoch)
        self.taking_over = True
        world.trace(f"{self.name}: standby #{standby.number} claims the log at epoch {epoch}")
        world.after(world.rng.uniform(0.0002, 0.004), self._take_over, standby, epoch)

    def _take_over(self, standby: SimStandby, epoch: int) -> None:
        world = self.world
        self.taking_over = False
        if not standby.alive:  # it died before it served: another standby, or a restart
            if not self.alive:
                self._primary_lost()
            return
        standby.catch_up()
        point = self.log.fix_takeover(epoch)
        c = standby.coordinator
        assert c is not None
        fresh = self.new_coordinator()
        for lsn in range(1, self.log.last_lsn + 1):
            fresh.replay(self.log.records[lsn - 1], lsn)
        mine = app_state(c.executor.app) if c.executor.app is not None else None
        theirs = app_state(fresh.executor.app) if fresh.executor.app is not None else None
        if mine != theirs or c.next_lsn != fresh.next_lsn:
            world.problems.append(
                f"{self.name}: standby #{standby.number} took over at LSN {c.next_lsn - 1} with "
                f"{mine!r}; the durable log (to LSN {fresh.next_lsn - 1}) gives {theirs!r}"
            )
        if self.alive:  # paused past its lease, alive: a zombie from now on
            zombie = copy.copy(self)
            zombie.zombie = True
            self.zombies[zombie.incarnation] = zombie
            world.zombies += 1
            wake = max(zombie.paused_until, world.now) + 0.001
            world.at(wake, zombie.deliver, zombie.incarnation, zombie._fence_check)
            self.paused_until = 0.0
        self.standbys.remove(standby)
        standby.alive = False
        world.takeovers += 1
        world.trace(
            f"{self.name}: standby #{standby.number} takes over at epoch {epoch}, takeover "
            f"point {point}"
        )
        self.start(warm=c, epoch=epoch)
        world.after(world.rng.uniform(0.05, 0.5), self.fill_standbys)

    def lease_expired(self, incarnation: int) -> None:
        """A paused primary's lease ran out: the first standby takes over while it lives."""
        if not self._mine(incarnation) or self.taking_over:
            return
        if self.paused_until <= self.world.now:
            return  # it woke in time
        standby = next((s for s in self.standbys if s.alive), None)
        if standby is not None:
            self.world.trace(f"{self.name}: lease of epoch {self.epoch} expired")
            self.begin_takeover(standby)

    def crash_at(self, incarnation: int) -> None:
        """Crash if still the same incarnation (a scheduled fault)."""
        if self._mine(incarnation):
            self.crash("soon after a handshake")

    def _mine(self, incarnation: int) -> bool:
        return self.alive and self.incarnation == incarnation

    def deliver(self, incarnation: int, fn: Any, *args: Any) -> None:
        """Run ``fn`` for this incarnation unless it died; later if the process is paused."""
        zombie = self.zombies.get(incarnation) if incarnation != self.incarnation else None
        if zombie is not None and zombie is not self:
            if getattr(fn, "__self__", None) is self:  # the old process's method, not ours
                fn = getattr(zombie, fn.__name__)
            zombie.deliver(incarnation, fn, *args)
            return
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
            if isinstance(action, Append) and self.fenced():
                self.exit_fenced(f"before {action!r}")
                return
            if isinstance(action, RELEASES):
                if self.release_fenced():
                    self.exit_fenced(f"before {action!r}")
                    return
                world.note_release(self, action)
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
        written = self.log.begin(batch, self.epoch)
        self.world.after(
            self.world.fsync_latency(), self.deliver, self.incarnation, self._durable, written
        )

    def _durable(self, written: int) -> None:
        if self.world.crash_now(self):  # between the fsync and the driver hearing of it
            self.crash("as its append completes")
            return
        self.log.finish(self.epoch)
        if self.release_fenced():  # durable (or void), but a higher epoch owns the log now
            self.exit_fenced("as its append completes")
            return
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


class SimStandby:
    """A process following an instance's log: it replays each durable step (the state moves
    on; it never acts on the coordinator's actions) and, the first of them alive, writes the
    checkpoints from its replayed state."""

    def __init__(self, node: SimNode, number: int) -> None:
        self.node = node
        self.number = number
        self.alive = False
        self.coordinator: Coordinator | None = None
        self._written = 0
        self._written_at = 0.0

    def start(self) -> None:
        node, world = self.node, self.node.world
        self.alive = True
        c = self.coordinator = node.new_coordinator()
        found = node.log.newest_checkpoint()
        if found is not None:
            lsn, payload = found
            c.restore(read_checkpoint(payload, where=f"{node.name} checkpoint {lsn}"), lsn)
            self._written = lsn
        self._written_at = world.now
        self.catch_up()
        world.trace(
            f"{node.name}: standby #{self.number} follows from "
            f"{found[0] if found else 'the start'}, at LSN {c.next_lsn - 1}"
        )
        world.after(world.poll_interval, self._poll)

    def crash(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.coordinator = None
        self.node.world.trace(f"{self.node.name}: standby #{self.number} CRASH")
        self.node.standby_lost(self)

    def catch_up(self) -> int:
        c, log = self.coordinator, self.node.log
        assert c is not None
        count = 0
        for lsn in range(c.next_lsn, log.last_lsn + 1):
            c.replay(log.records[lsn - 1], lsn)
            count += 1
        if c.actions:
            self.node.world.problems.append(
                f"{self.node.name}: standby #{self.number}: replay queued {c.actions!r}"
            )
            c.actions.clear()
        return count

    def _poll(self) -> None:
        if not self.alive:
            return
        node, world = self.node, self.node.world
        self.catch_up()
        c = self.coordinator
        assert c is not None
        first = next((s for s in node.standbys if s.alive), None)
        due = world.now - self._written_at >= world.config.checkpoint_seconds
        if first is self and due:
            self._written_at = world.now
            lsn = c.next_lsn - 1
            if lsn > self._written:
                packed = c.checkpoint_now()
                c.actions.clear()  # a warning about an unstorable state: nothing to act on
                if packed is not None:
                    node.log.write_checkpoint(lsn, *packed)
                    self._written = lsn
                    world.trace(f"{node.name}: standby #{self.number} checkpoint at {lsn}")
        world.after(world.poll_interval, self._poll)
