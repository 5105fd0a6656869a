"""The coordinator: every exactly-once decision of a running instance, with no I/O at all.

No sockets, no files, no clock, no event loop. A driver feeds it events (an input arrived from a
peer, an outside caller or a timer; an append finished; an acknowledgement arrived; a link
opened with the peer's handshake number; time passed) and carries out the actions it returns
(``_actions.py``: append, send, answer, emit, acknowledge, set a timer). The asyncio node
(``_node.py``) is one driver; the simulator (``runtime/sim``) is another, which is how these
rules are tested under crashes, torn appends, loss, duplication, reordering and partitions.

The rules, each in one place below:

* **Execute, then log, then release** (``_kick``, ``append_done``, ``_release``): inputs execute
  at once; their records queue and go out as one ``Append`` while the next inputs execute; only
  when that append is durable are its messages sent, its emits printed, its outside callers
  answered and its inputs acknowledged. One append is outstanding at a time (group commit).
* **Admission** (``receive_messages``): a peer's message executes only if it is the next number
  of its stream; a lower one is a duplicate (dropped), a higher one a gap (the driver drops the
  connection; the peer resends on reconnect). Messages already held for a checkpoint count as
  accepted.
* **What a handshake promises** (``durable_from``): the highest number from a peer whose step is
  *durable*, never merely executed: the peer forgets everything up to it.
* **What a handshake trims and resends** (``link_opened``, ``peer_connected``): the peer's number
  acknowledges our outbox up to it; everything after it is sent again, in order.
* **Acknowledgements** (``_release``, ``timer_fired``): only for durable steps, coalesced per peer
  for ``ack_delay``.
* **Outside callers** (``outside_call``): a key executes once; a retry gets the recorded result,
  but only once the step that produced it is durable; concurrent retries wait for the one run.
* **Checkpoints** (``_kick``, ``_holding``): due after ``checkpoint_bytes`` of log,
  ``checkpoint_seconds``, or once the steps since the last would take
  ``checkpoint_replay_seconds`` to replay (at the replay cost the driver measured,
  ``set_step_cost``), which bounds recovery whatever the step size; taken only when no handler
  is suspended, and by a standby instead while one runs (``checkpoints_elsewhere``). While one is due and handlers
  are suspended, new work (calls, timer callbacks) is *held* (not executed) so the suspended
  ones can finish; replies, sleeps' timers and side effects' outcomes still run. If quiescence does not come within ``quiescence_timeout`` of the
  checkpoint falling due, the hold is lifted (by a timer, even if nothing else happens) and a
  warning says why. Once quiescent, the checkpoint is taken before any held call runs.
* **Identity** (``refusal``): a peer must be registered at the epoch it claims.
* **Messages to itself** (``_release``, ``start``): a call or post an instance sends to its
  own name never touches the network. Like any message it is released only once its step is
  durable, then admitted by the same numbering as a peer's and executed as a new input; it is
  acknowledged when that step is durable, and redelivered by ``start`` after a crash.
  (Delivering at once would be safe too: one log, so the receiving step is never durable
  without the sending one. But a handler that posts to itself in a loop would then starve
  every other input; waiting for durability paces such a loop by group commit.)
* **Side effects** (``_release``, ``effect_done``, ``start``): a requested effect is handed
  to the driver (``RunEffect``) only once the step that asked for it is durable, so an effect
  never runs for a step a crash could undo; its outcome comes back as a new input. After a
  crash, ``start`` hands out again every effect whose outcome is not in the log.

Seams for later drivers: a standby follows a log with ``replay`` (state moves, nothing is
released); ``start`` is "take over as primary" after any amount of ``replay``.

Rejected: putting these rules in the asyncio class with hooks for tests (the rules could then
only be tested by killing processes), and a coordinator that owns the log writer (it could not
be run against a simulated log that loses unsynced writes).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from logformat import pack_state

from ._actions import (
    ACK_TIMER,
    CHECKPOINT_TIMER,
    HOLD_TIMER,
    Ack,
    Action,
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
    Warn,
)
from ._api import Immortal
from ._errors import NondeterminismError
from ._executor import Sources, unstorable
from ._replica import Replica
from ._schema import (
    MAIN_KEY,
    CheckpointPayload,
    OutsideCallInput,
    PeerMessage,
    StepRecord,
    as_input,
    call_fingerprint,
    input_sender,
    input_seq,
    message_seq,
    message_target,
    read_call,
)
from ._streams import DEFAULT_RESULT_CACHE

NO_CHECKPOINT_WARNING_EVERY = 60.0  # seconds between two "no checkpoint" warnings
DEFAULT_STEP_COST = 40e-6  # seconds to replay a step, until the driver measures it


# With the interpreter's start, a restart after any history serves within a second (after
# 1,000,000 pipelined calls, 0.5 s of replay budget meant 10,000 steps replayed, about 0.4 s).
CHECKPOINT_REPLAY_SECONDS: Final = 0.25


@dataclass(slots=True)
class CoordinatorConfig:
    """The coordinator's knobs. Defaults suit production; tests shrink the intervals."""

    durable: bool = True
    checkpoint_bytes: int = 64 * 1024 * 1024
    checkpoint_seconds: float = 60.0
    # A checkpoint also falls due once replaying the steps since the last one would take this
    # long (steps x the measured replay cost of a step: ``Coordinator.set_step_cost``), so
    # recovery stays short whatever the step size and the rate; but not sooner than
    # ``checkpoint_min_seconds`` after the last one, so a busy instance does not checkpoint
    # all the time.
    checkpoint_replay_seconds: float = CHECKPOINT_REPLAY_SECONDS
    checkpoint_min_seconds: float = 0.5
    quiescence_timeout: float = 5.0
    ack_delay: float = 0.005
    allow_pickle: bool = False
    result_cache: int = DEFAULT_RESULT_CACHE  # outside results kept in memory (and checkpoints)
    look_up_keys: bool = False  # the driver can find older keys' results in the log (LookUp)


class Coordinator:
    """One instance's decisions. Feed events; take ``actions`` after each (``take()``)."""

    def __init__(
        self,
        app_cls: type[Immortal],
        *,
        name: str,
        config: CoordinatorConfig | None = None,
        sources: Sources | None = None,
    ) -> None:
        self.name = name
        self.config = config or CoordinatorConfig()
        self.replica = Replica(
            app_cls, name=name, sources=sources, result_cache=self.config.result_cache
        )
        self.executor = self.replica.executor
        self.streams = self.replica.streams
        self.actions: list[Action] = []
        self.now = 0.0
        self.next_lsn = 1
        self.durable_lsn = 0
        self.released_lsn = 0
        self.started = False  # start() was called: the instance acts as the primary
        self._pending: list[StepRecord] = []  # executed, not yet handed to an append
        self._inflight: Append | None = None
        self._held: deque[dict[str, Any]] = deque()  # calls held back until a checkpoint
        self._held_upto: dict[str, int] = {}
        self._waiters: dict[Any, list[Any]] = {}  # outside call key -> callers waiting
        self._lookups: dict[Any, tuple[bytes, OutsideCallInput]] = {}  # key -> (fingerprint, call)
        self._result_lsn: dict[Any, int] = {}  # outside call key -> LSN of its result
        self._durable_in: dict[str, int] = {}  # per peer: highest number durably logged
        self._released_out: dict[str, int] = {}  # per peer: highest of ours released (durable)
        self._acks_due: dict[str, int] = {}
        self._ack_timer_set = False
        self._app_timers: set[int] = set()  # handler timers handed to the driver
        self._bytes_since_checkpoint = 0
        self._steps_since_checkpoint = 0
        self.step_cost = DEFAULT_STEP_COST  # seconds to replay one step (the driver measures)
        self._last_checkpoint = 0.0
        self._last_warning = float("-inf")
        self._due_since: float | None = None  # when a checkpoint fell due (None: not due)
        self._checkpoints_elsewhere = False  # a standby writes them: never hold inputs for one

    def take(self) -> list[Action]:
        """The actions decided since the last call, in order."""
        actions, self.actions = self.actions, []
        return actions

    # -- recovery (and a standby following a log) -----------------------------------------------

    def restore(self, payload: CheckpointPayload, lsn: int) -> None:
        """Start from a checkpoint taken after step ``lsn``."""
        self.replica.restore(payload)
        self.next_lsn = lsn + 1

    def replay(
        self, record: StepRecord, lsn: int, *, accept: bool = False
    ) -> NondeterminismError | None:
        """Apply a durable step of the log: the state moves on; nothing is released.

        A step the code does not reproduce raises NondeterminismError; with ``accept``, the
        state is what the code does and the difference is returned (``Replica.accept``)."""
        if lsn != self.next_lsn:
            raise ValueError(f"{self.name}: replaying LSN {lsn}, expected {self.next_lsn}")
        differs = None
        if accept:
            differs = self.replica.accept(record, lsn)
        else:
            self.replica.apply(record, lsn)
        self.next_lsn = lsn + 1
        return differs

    def checkpoint_now(self) -> tuple[int, bytes] | None:
        """The state packed for a checkpoint after the last step, now, outside the policy (a
        recovery that accepted steps its code does not reproduce writes one, so they are
        never replayed again); None while a handler is suspended or the state cannot be stored
        (then a warning says why)."""
        if not self.replica.quiescent:
            return None
        return self._pack_checkpoint(self.next_lsn - 1)

    def unreleased(self, released_lsn: int) -> tuple[int, int] | None:
        """The durable steps whose emits may never have been printed (feed them to
        ``rerelease``), given the last LSN the driver remembers releasing."""
        self.released_lsn = released_lsn
        last = self.next_lsn - 1
        return (released_lsn + 1, last) if released_lsn < last else None

    def rerelease(self, record: StepRecord, lsn: int) -> None:
        """Print again the emits of a durable step that a crash may have kept from the world.

        The released mark is written after printing, without fsync, so a line may print twice
        across a crash: the documented at-least-once window of emits (``--emit-tagged`` lets a
        consumer drop the repeat by its LSN and index).
        """
        emits = record.get("emit")
        if emits:
            self.actions.append(Emit(lsn, emits))
        if lsn > self.released_lsn:
            self.released_lsn = lsn
            self.actions.append(Released(lsn))

    def start(self, now: float, *, upgrade: dict[str, Any] | None = None) -> None:
        """Take over as the primary after recovery: timers, links, and the first start.

        ``upgrade`` (an upgrade step's input) is executed before anything else, so every input
        from here on runs the new code; the driver passes it only when the replica is
        quiescent (a suspended handler would go on running the old code)."""
        self.now = now
        self.started = True
        if upgrade is not None:
            self._submit(upgrade)
        self.durable_lsn = self.next_lsn - 1
        self._durable_in = dict(self.streams.seq_in)
        self._released_out = {  # everything recovered from the log is durable
            peer: max(box) for peer, box in self.streams.outbox.items() if box
        }
        self._restart_checkpoint_clock()
        for tid, due in self.executor.timers.items():
            self._schedule_app_timer(tid, due)
        for peer in sorted(self.streams.peers()):
            if peer != self.name and self.streams.unacknowledged(peer):
                self.actions.append(Connect(peer))
        for _eid, request in sorted(self.executor.effects.items()):
            self.actions.append(RunEffect(request))  # its outcome never reached the log
        if not self.executor.started:
            self._submit({"k": "start"})
        # Messages to itself that were durable but not yet executed durably: deliver again
        # (admission drops what was executed already).
        self.streams.acknowledge(self.name, self.streams.seq_in.get(self.name, 0))
        self._deliver_locally(self.streams.unacknowledged(self.name))

    # -- events ------------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Time passed (the driver's clock, the same one handler timers are due on)."""
        if now > self.now:
            self.now = now

    def receive_messages(self, peer: str, messages: list[PeerMessage]) -> bool:
        """Execute the new ones among a batch from ``peer``; False on a sequence gap (the driver
        then drops the connection, and the peer resends from what the handshake says)."""
        for message in messages:
            verdict = self._admission(peer, message_seq(message))
            if verdict == "duplicate":
                continue
            if verdict == "gap":
                return False
            self._submit(as_input(peer, message))  # type: ignore[arg-type]
        return True

    def outside_call(self, caller: Any, message: dict[str, Any]) -> None:
        """An outside caller's ``call`` message; ``caller`` is the driver's token for it."""
        inp = read_call(message)
        if isinstance(inp, str):
            self.actions.append(Answer(caller, message.get("id"), False, ["BadRequest", inp]))
            return
        key = inp["id"]
        wanted = call_fingerprint(inp["m"], inp["a"])
        first = self.streams.fingerprint(key)
        if first is None and key in self._lookups:
            first = self._lookups[key][0]
        if first is not None and first != wanted:
            self.actions.append(Answer(caller, key, False, _reused(key, inp)))
            return
        known = self.streams.known_result(key)
        if known is not None and self._result_lsn.get(key, 0) <= self.durable_lsn:
            self.actions.append(Answer(caller, key, known[0], known[1]))
            return
        waiting = self._waiters.setdefault(key, [])
        waiting.append(caller)
        if known is not None or key in self.streams.running or len(waiting) > 1:
            return  # its result is coming: every waiter gets it
        if self.config.look_up_keys:
            # Not among the recent results: the log may still hold it (an older call).
            self._lookups[key] = (wanted, inp)
            self.actions.append(LookUp(key))
            return
        self._submit(inp)  # type: ignore[arg-type]

    def key_looked_up(self, key: Any, found: LookedUp | str | None) -> None:
        """The driver's answer to ``LookUp(key)``: the call and outcome the log holds for it
        (within the key retention); None when it never ran (then it runs now); or why its
        outcome can no longer be given (the log was trimmed past it)."""
        wanted, inp = self._lookups.pop(key)
        waiting = self._waiters.get(key, [])
        if found is None:
            if waiting:
                self._submit(inp)  # type: ignore[arg-type]  # an input is a dict to the executor
            return
        self._waiters.pop(key, None)
        if isinstance(found, str):
            outcome: tuple[bool, Any] = (False, ["ResultExpiredError", found])
        elif call_fingerprint(found.method, found.args) == wanted:
            outcome = (found.ok, found.value)
        else:
            outcome = (False, _reused(key, inp))
        for caller in waiting:
            self.actions.append(Answer(caller, key, *outcome))

    def effect_done(self, eid: int, ok: bool, value: Any) -> None:
        """The driver ran side effect ``eid`` (``RunEffect``): its value, or ``[type name,
        message]`` of its last failure. Logged as an input, which resumes the handler."""
        if ok:
            why = unstorable(value)
            if why is not None:
                ok, value = False, ["ValueCodecError", f"the side effect returned {why}"]
        inp: dict[str, Any] = {"k": "effect", "eid": eid}
        if ok:
            inp["ok"] = value
        else:
            inp["err"] = [str(value[0]), str(value[1])]
        self._submit(inp)

    def timer_fired(self, key: Any) -> None:
        """A timer the coordinator set (``SetTimer``) is due."""
        if key == ACK_TIMER:
            self._ack_timer_set = False
            acks, self._acks_due = self._acks_due, {}
            for peer, upto in acks.items():
                self.actions.append(Ack(peer, upto))
        elif key == CHECKPOINT_TIMER:
            self._note_due()
        elif key == HOLD_TIMER:
            self._release_held()  # quiescence did not come in time: stop holding
            self._kick()
        else:
            tid = key[1]
            self._app_timers.discard(tid)
            if tid in self.executor.timers:
                self._submit({"k": "timer", "tid": tid})

    def append_done(self, bytes_written: int) -> None:
        """The outstanding ``Append`` is durable (records, and its checkpoint if it had one)."""
        batch = self._inflight
        if batch is None:
            raise RuntimeError(f"{self.name}: append_done without an append in flight")
        self._inflight = None
        self.durable_lsn = batch.last_lsn
        if batch.checkpoint is not None:
            self._restart_checkpoint_clock()
        else:
            self._bytes_since_checkpoint += bytes_written
            self._steps_since_checkpoint += len(batch.records)
            if self._bytes_since_checkpoint >= self.config.checkpoint_bytes or (
                self._steps_since_checkpoint * self.step_cost
                >= self.config.checkpoint_replay_seconds
                and self.now - self._last_checkpoint >= self.config.checkpoint_min_seconds
            ):
                self._note_due()
        self._release(batch)
        # What is pending goes first, with the checkpoint if it is due and possible now: the
        # held calls run after it (one that suspends again would otherwise starve it).
        self._kick()
        self._release_held()
        self._kick()

    def link_opened(self, peer: str, last: int) -> None:
        """Our link to ``peer`` finished its handshake: the peer has durably logged ``last``."""
        self.streams.acknowledge(peer, last)
        pending = self._resend(peer, last)
        if pending:
            self.actions.append(Send(peer, pending))

    def peer_connected(self, peer: str, last: int) -> None:
        """``peer`` opened a link to us; its handshake says it has durably logged ``last`` of
        ours. Replies go back on a link of our own, so make sure there is one."""
        self.streams.acknowledge(peer, last)
        self.actions.append(Connect(peer))

    def ack_received(self, peer: str, upto: int) -> None:
        self.streams.acknowledge(peer, upto)

    # -- questions a driver asks ---------------------------------------------------------------

    def durable_from(self, peer: str) -> int:
        """What a handshake may promise ``peer``: the highest number from it whose step is
        durable. Not ``streams.seq_in`` (executed, perhaps not logged): a peer told that number
        would forget messages that a crash before the fsync would then lose. Before ``start``
        every step there is was replayed from the log, so all of it is durable."""
        if not self.started:
            return self.streams.seq_in.get(peer, 0)
        return self._durable_in.get(peer, 0)

    def refusal(self, peer: str | None, epoch: int, registered_epoch: int | None) -> str | None:
        """Why an authenticated peer may still not talk to us (None: it may).

        The cluster secret proves membership, not identity: the registry says which epoch of
        each instance is the current one, so a stale instance (a zombie that lost its log lock)
        or a peer using another instance's name is turned away.
        """
        if peer is None:
            return None
        if peer == self.name:
            return f"a peer claims to be {self.name!r}, which is this instance"
        if registered_epoch is None:
            return f"a peer claims to be {peer!r}, which is not registered"
        if registered_epoch != epoch:
            return (
                f"a peer claims to be {peer!r} at epoch {epoch}, "
                f"but {peer!r} is at epoch {registered_epoch}"
            )
        return None

    @property
    def idle(self) -> bool:
        """Everything executed is durable and released (a clean stop may proceed)."""
        return self._inflight is None and not self._pending

    def flush(self) -> None:
        """Start an append of whatever is pending (used by a stopping driver)."""
        self._kick()

    # -- the rules ---------------------------------------------------------------------------------

    def _admission(self, peer: str, seq: int) -> str:
        """Execute message ``seq`` of ``peer`` ("new"), drop it ("duplicate"), or refuse the
        batch ("gap"). Messages held for a checkpoint count as accepted."""
        held = self._held_upto.get(peer)
        if held is not None:
            if seq <= held:
                return "duplicate"
            return "new" if seq == held + 1 else "gap"
        return self.streams.admit(peer, seq)

    def _resend(self, peer: str, last: int) -> list[PeerMessage]:
        """What a link that opened sends again: the unacknowledged messages after ``last``,
        but only those already released. A message whose step is executed and not yet durable
        goes out with its batch; sent now, a crash before the fsync would leave the peer
        holding a message no log has."""
        upto = self._released_out.get(peer, 0)
        return [m for m in self.streams.unacknowledged(peer, last) if message_seq(m) <= upto]

    def _submit(self, inp: dict[str, Any]) -> None:
        """Execute one input now, or hold it while waiting for quiescence for a checkpoint."""
        if (self._held or (self._due_since is not None and self._holding())) and self._new_work(
            inp
        ):
            if not self._held and self._due_since is not None:
                due = self._due_since + self.config.quiescence_timeout
                self.actions.append(SetTimer(HOLD_TIMER, due))
            self._held.append(inp)
            sender = input_sender(inp)  # type: ignore[arg-type]
            if sender is not None:
                self._held_upto[sender] = input_seq(inp)  # type: ignore[arg-type]
            return
        self._execute(inp)
        self._kick()

    def _new_work(self, inp: dict[str, Any]) -> bool:
        """Whether an input starts a handler (a call, the start, a timer callback) rather than
        resuming one (a reply, a sleep's timer, a side effect's outcome): only new work is held
        for a checkpoint, since what resumes is what lets the instance become quiescent."""
        kind = inp["k"]
        return kind in ("call", "start") or (
            kind == "timer" and inp["tid"] in self.executor.callbacks
        )

    def _execute(self, inp: dict[str, Any]) -> None:
        lsn = self.next_lsn
        record = self.replica.execute(inp, lsn)
        self.next_lsn = lsn + 1
        for key, _ok, _value in record.get("rep", ()):
            self._result_lsn[key] = lsn
        for timer in record.get("tim", ()):
            self._schedule_app_timer(timer[0], timer[1])  # [tid, due] or [tid, due, method, args]
        self._pending.append(record)

    def _holding(self) -> bool:
        """Whether new calls wait: a checkpoint is due, handlers are suspended, and the wait
        for them has not gone on too long."""
        return self._checkpoint_due() and not self.replica.quiescent and self._hold_allowed()

    def _hold_allowed(self) -> bool:
        since = self._due_since
        return since is not None and self.now - since < self.config.quiescence_timeout

    def _note_due(self) -> None:
        if self._due_since is None and self.config.durable and not self._checkpoints_elsewhere:
            self._due_since = self.now

    def set_step_cost(self, seconds: float) -> None:
        """What replaying one step costs, as the driver measured it (a recovery's replay);
        the checkpoint policy bounds replay work with it (``checkpoint_replay_seconds``)."""
        if seconds > 0:
            self.step_cost = seconds

    def checkpoints_elsewhere(self, elsewhere: bool) -> None:
        """Whether another process (a standby, from its replayed state) writes the checkpoints.
        While it does, this instance takes none and so never holds inputs waiting for
        quiescence; when it stops, the usual policy resumes from now."""
        if elsewhere == self._checkpoints_elsewhere:
            return
        self._checkpoints_elsewhere = elsewhere
        self._restart_checkpoint_clock()  # no checkpoint due now; held calls go on
        self._release_held()
        self._kick()

    def _checkpoint_due(self) -> bool:
        """``checkpoint_bytes`` of log or ``checkpoint_seconds`` since the last checkpoint (or
        since the last attempt, when the state could not be stored)."""
        return self._due_since is not None

    def _may_checkpoint(self) -> bool:
        return self.replica.quiescent

    def _restart_checkpoint_clock(self) -> None:
        self._last_checkpoint = self.now
        self._bytes_since_checkpoint = 0
        self._steps_since_checkpoint = 0
        self._due_since = None
        self.actions.append(SetTimer(CHECKPOINT_TIMER, self.now + self.config.checkpoint_seconds))

    def _kick(self) -> None:
        """Hand the pending records to the log as one append, unless one is outstanding."""
        if self._inflight is not None or not self._pending:
            return
        records, self._pending = self._pending, []
        checkpoint = None
        if self._checkpoint_due():
            if self._may_checkpoint():
                checkpoint = self._pack_checkpoint(self.next_lsn - 1)
            elif not self._hold_allowed():
                self._warn_no_checkpoint()
        batch = Append(self.next_lsn - len(records), records, checkpoint)
        self._inflight = batch
        self.actions.append(batch)

    def _pack_checkpoint(self, lsn: int) -> tuple[int, bytes] | None:
        try:
            return pack_state(self.replica.checkpoint(), use_pickle=self.config.allow_pickle)
        except Exception as exc:  # unstorable state: keep serving, keep the log, say why
            self.actions.append(Warn(f"{self.name}: checkpoint at LSN {lsn} skipped: {exc}"))
            self._restart_checkpoint_clock()
            return None

    def _warn_no_checkpoint(self) -> None:
        if self.now - self._last_warning > NO_CHECKPOINT_WARNING_EVERY:
            self._last_warning = self.now
            self.actions.append(
                Warn(
                    f"{self.name}: no checkpoint for {self.now - self._last_checkpoint:.0f} s: a "
                    "handler stays suspended mid-await (a main() that never returns?). Recovery "
                    "replays from the last checkpoint; for periodic work, schedule a handler with "
                    "self.call_later() instead of a loop that awaits self.sleep()"
                )
            )

    def _release(self, batch: Append) -> None:
        """The batch is durable: now the world may see it."""
        acks: dict[str, int] = {}
        per_peer: dict[str, list[PeerMessage]] = {}
        actions = self.actions
        lsn = batch.first_lsn
        for record in batch.records:
            inp = record["in"]
            sender = inp.get("from")  # inlined input_sender/input_seq: once per step released
            if sender is not None:
                seq: int = inp["seq"]  # type: ignore[typeddict-item]
                if seq > acks.get(sender, 0):  # type: ignore[call-overload]
                    acks[sender] = seq  # type: ignore[index]
            for message in record.get("out", ()):
                target = message_target(message)
                box = per_peer.get(target)
                if box is None:
                    per_peer[target] = [message]
                else:
                    box.append(message)
            emits = record.get("emit")
            if emits:
                actions.append(Emit(lsn, emits))
            for key, ok, value in record.get("rep", ()):
                self._answer(key, ok, value)
            if "fx" in record or "fail" in record:
                self._release_rare(record, lsn)
            lsn += 1
        if lsn - 1 > self.released_lsn:
            self.released_lsn = lsn - 1
            actions.append(Released(lsn - 1))
        durable_in = self._durable_in
        for peer, upto in acks.items():
            if upto > durable_in.get(peer, 0):
                durable_in[peer] = upto
        mine = acks.pop(self.name, None)
        if mine is not None:  # executed durably here: no acknowledgement to send
            self.streams.acknowledge(self.name, mine)
        released_out = self._released_out
        local = per_peer.pop(self.name, None)
        for peer, messages in per_peer.items():
            actions.append(Send(peer, messages))
            released_out[peer] = message_seq(messages[-1])
        if acks:
            self._acks_due.update(acks)
            if not self._ack_timer_set:
                self._ack_timer_set = True
                actions.append(SetTimer(ACK_TIMER, self.now + self.config.ack_delay))
        if local is not None:
            released_out[self.name] = message_seq(local[-1])
            self._deliver_locally(local)

    def _release_rare(self, record: StepRecord, lsn: int) -> None:
        """Side effects to run and failures nobody receives, of a durable step."""
        for eid, _key, _name in record.get("fx", ()):
            request = self.executor.effects.get(eid)
            if request is not None:
                self.actions.append(RunEffect(request))
        for type_name, message, *_ in record.get("fail", ()):
            inp = record["in"]
            what = (
                f"timer callback (timer {inp['tid']})"
                if inp["k"] == "timer"
                else f"post {inp.get('m')}() from {inp.get('from', 'outside')}"
            )
            self.actions.append(
                Warn(f"{self.name}: step {lsn}: {what} raised {type_name}: {message}")
            )

    def _deliver_locally(self, messages: list[PeerMessage]) -> None:
        """Calls and replies this instance sent to itself, durable now: execute them as inputs,
        admitted by their numbers like a peer's (a gap would be a bug: nothing is lost here)."""
        if messages and not self.receive_messages(self.name, messages):
            raise RuntimeError(f"{self.name}: a gap in the messages to itself")

    def _answer(self, key: Any, ok: bool, value: Any) -> None:
        self._result_lsn.pop(key, None)  # durable now: known_result alone answers retries
        if key == MAIN_KEY:
            if not ok:
                self.actions.append(Warn(f"{self.name}: main() raised {value[0]}: {value[1]}"))
            return
        for caller in self._waiters.pop(key, ()):
            self.actions.append(Answer(caller, key, ok, value))

    def _release_held(self) -> None:
        while self._held and not self._holding():
            self._execute(self._held.popleft())
        if not self._held:
            self._held_upto.clear()

    def _schedule_app_timer(self, tid: int, due: float) -> None:
        if tid not in self._app_timers:
            self._app_timers.add(tid)
            self.actions.append(SetTimer(("app", tid), due))


def _reused(key: Any, inp: OutsideCallInput) -> list[str]:
    """The error outcome for a key reused with another method or other arguments."""
    return [
        "KeyReusedError",
        f"the idempotency key {key!r} was first used for another call than {inp['m']}(...) "
        "with these arguments; a retry must repeat the call exactly, and a new call needs a "
        "new key",
    ]
