"""What the coordinator asks its driver to do: the actions it returns.

The coordinator (``_coordinator.py``) decides; a driver (the asyncio node, the simulator, later
a standby) carries the actions out in the order given and reports back with events. Each action
is a small slotted class, so a driver dispatches on its type with ``match`` or ``type(a) is``.

A driver's duties per action:

``Append``      write the records (and then the checkpoint, if any) to the log, make them durable,
                and report ``append_done(bytes_written)``. At most one is outstanding.
``Send``        write the messages to the peer's link if it is open now; if not, drop them (they
                stay in the outbox and are resent when the link opens). Open the link if there
                is none.
``Connect``     make sure a link to the peer exists (it connects and reconnects by name).
``Answer``      send a result to an outside caller (drop it if the caller is gone).
``Emit``        print a step's external outputs; ``Released`` follows for the batch.
``Released``    remember (no fsync needed) that emits up to ``lsn`` have been printed.
``Ack``         tell the peer, on its connection to us, that its messages up to ``upto`` are
                durable here (drop it if the peer has no connection to us now).
``SetTimer``    call ``timer_fired(key)`` once the clock reaches ``due`` (replacing an earlier
                timer with the same key).
``LookUp``      find the call and outcome the log holds for an outside key (only asked of a
                driver with ``look_up_keys``) and report ``key_looked_up(key, LookedUp | None)``.
``RunEffect``   call the side effect's function on a worker thread (never on the thread that
                runs handlers), with its retries, backoff and per-attempt timeout, and report
                ``effect_done(eid, ok, value)``: the value, or ``[type name, message]`` of the
                last failure. The asking step is durable by then. A driver that restarts gets
                the effects again from ``start`` (at least once).
``Warn``        show a diagnostic line to the operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._schema import PeerMessage, StepRecord, message_seq

if TYPE_CHECKING:
    from ._executor import EffectRequest

TimerKey = str | tuple[str, int]
"""``"ack"``, ``"checkpoint"``, ``"hold"`` (the coordinator's own) or ``("app", tid)`` (a
handler's timer)."""

ACK_TIMER = "ack"  # send the acknowledgements collected since it was set
CHECKPOINT_TIMER = "checkpoint"  # a checkpoint is due by time
HOLD_TIMER = "hold"  # stop holding calls back for a checkpoint that quiescence did not allow


class Append:
    __slots__ = ("checkpoint", "first_lsn", "records")

    def __init__(
        self, first_lsn: int, records: list[StepRecord], checkpoint: tuple[int, bytes] | None
    ) -> None:
        self.first_lsn = first_lsn
        self.records = records
        self.checkpoint = checkpoint  # (state codec, packed payload) taken after the last record

    @property
    def last_lsn(self) -> int:
        return self.first_lsn + len(self.records) - 1

    def __repr__(self) -> str:
        extra = " +checkpoint" if self.checkpoint is not None else ""
        return f"Append({self.first_lsn}..{self.last_lsn}{extra})"


class Send:
    __slots__ = ("messages", "peer")

    def __init__(self, peer: str, messages: list[PeerMessage]) -> None:
        self.peer = peer
        self.messages = messages

    def __repr__(self) -> str:
        return f"Send({self.peer}, {[message_seq(m) for m in self.messages]})"


class Connect:
    __slots__ = ("peer",)

    def __init__(self, peer: str) -> None:
        self.peer = peer

    def __repr__(self) -> str:
        return f"Connect({self.peer})"


class Answer:
    __slots__ = ("caller", "key", "ok", "value")

    def __init__(self, caller: Any, key: Any, ok: bool, value: Any) -> None:
        self.caller = caller  # the driver's token for the outside caller's connection
        self.key = key
        self.ok = ok
        self.value = value

    def __repr__(self) -> str:
        return f"Answer({self.caller}, {self.key!r}, {self.ok}, {self.value!r})"


class Emit:
    __slots__ = ("lsn", "values")

    def __init__(self, lsn: int, values: list[Any]) -> None:
        self.lsn = lsn
        self.values = values

    def __repr__(self) -> str:
        return f"Emit({self.lsn}, {self.values!r})"


class Released:
    __slots__ = ("lsn",)

    def __init__(self, lsn: int) -> None:
        self.lsn = lsn

    def __repr__(self) -> str:
        return f"Released({self.lsn})"


class Ack:
    __slots__ = ("peer", "upto")

    def __init__(self, peer: str, upto: int) -> None:
        self.peer = peer
        self.upto = upto

    def __repr__(self) -> str:
        return f"Ack({self.peer}, {self.upto})"


class SetTimer:
    __slots__ = ("due", "key")

    def __init__(self, key: TimerKey, due: float) -> None:
        self.key = key
        self.due = due

    def __repr__(self) -> str:
        return f"SetTimer({self.key!r}, {self.due:.3f})"


class LookUp:
    """Find in the log what an outside call with this key did (answer with ``key_looked_up``)."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"LookUp({self.key!r})"


class LookedUp:
    """What the log holds for a key: the call (method, arguments) and its outcome."""

    __slots__ = ("args", "method", "ok", "value")

    def __init__(self, method: str, args: list[Any], ok: bool, value: Any) -> None:
        self.method = method
        self.args = args
        self.ok = ok
        self.value = value


class RunEffect:
    """Run a side effect a handler awaits (``self.run``) and report its outcome."""

    __slots__ = ("request",)

    def __init__(self, request: EffectRequest) -> None:
        self.request = request

    def __repr__(self) -> str:
        return f"RunEffect({self.request.eid}, {self.request.key!r})"


class Warn:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Warn({self.text!r})"


Action = (
    Append | Send | Connect | Answer | Emit | Released | Ack | SetTimer | LookUp | RunEffect | Warn
)

# Needed by drivers that store records they appended (the simulator's log).
__all__ = [
    "ACK_TIMER",
    "CHECKPOINT_TIMER",
    "HOLD_TIMER",
    "Ack",
    "Action",
    "Answer",
    "Append",
    "Connect",
    "Emit",
    "LookUp",
    "LookedUp",
    "Released",
    "RunEffect",
    "Send",
    "SetTimer",
    "StepRecord",
    "TimerKey",
    "Warn",
]
