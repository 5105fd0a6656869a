"""The deterministic executor: one input in, one step record out. No I/O, no event loop.

Handlers run here, on this module's own coroutine driver: a coroutine is resumed only when a
logged input (a reply, a timer firing) says so, so interleavings are a function of the log and
replay reproduces them exactly. The same code runs live and in replay; the only difference is
where non-deterministic values come from (the world, or the recorded step) and that replay
compares the effects it regenerates with the recorded ones.

A step record is a msgpack map (see docs/ARCHITECTURE.md, "Step records")::

    in    the input, one of
            {"k": "start"}                                    the first start: runs main()
            {"k": "call", "from": peer, "seq": n, "m", "a", "r"}   a call from another instance
            {"k": "call", "id": key, "m", "a"}                a call from an outside caller
            {"k": "reply", "from": peer, "seq": n, "re": m, "ok": v | "err": [type, msg]}
            {"k": "timer", "tid": n}
    nd    non-deterministic values consumed, in order: ["now", t] | ["uuid", bytes] | ["seed", n]
    out   messages to other instances, each numbered in its directed stream (self -> target):
            [target, seq, "c", method, args, wants_reply]     a call
            [target, seq, "r", re, ok, value]                 the reply to call ``re`` of target
    emit  external outputs, in order
    rep   results for outside callers and main(): [key, ok, value] (key "main" for main())
    tim   timers set: [tid, due]

A failed outcome's value is [type name, message]. Keys with nothing to say are left out, so a
plain call that returns costs few bytes. ``_schema`` holds these shapes as types, with the one
reader of each.
"""

from __future__ import annotations

import random
import time
import uuid as uuid_mod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import CoroutineType
from typing import Any

from logformat import ValueCodecError, pack_value

from . import _sandbox as sandbox
from ._api import Immortal, PendingReply, RuntimeAwaitable, TimerWait, rpc_methods
from ._errors import NondeterminismError, RemoteError, SandboxError, UnknownMethodError
from ._schema import MAX_VALUE_BYTES, call_message, reply_message

_SCALARS = frozenset((int, float, bool, type(None)))

Origin = tuple[Any, Any, bool]  # (caller, key, wants_reply); caller None is main()


def _unstorable(value: Any) -> str | None:
    """Why ``value`` cannot be stored and sent (None: it can).

    A value must pack with the log's codec and stay within ``MAX_VALUE_BYTES``, so that no
    message is ever logged that the wire could not carry. Scalars, strings and short lists of
    them are judged by their lengths (UTF-8 takes at most 4 bytes a character); anything else
    is packed once to find out.
    """
    kind = type(value)
    if kind in _SCALARS:
        return None
    if kind is str or kind is bytes:
        if len(value) * 4 <= MAX_VALUE_BYTES:
            return None
    elif kind is list and len(value) <= 64:
        budget = MAX_VALUE_BYTES // 4
        for item in value:
            item_kind = type(item)
            if item_kind in _SCALARS:
                continue
            if item_kind is not str and item_kind is not bytes:
                break
            budget -= len(item)
        else:
            if budget >= 0:
                return None
    try:
        size = len(pack_value(value))
    except ValueCodecError:
        return f"a {kind.__name__}, which cannot be stored or sent"
    if size > MAX_VALUE_BYTES:
        return f"{size:,} bytes packed, over the {MAX_VALUE_BYTES:,} a value may have"
    return None


@dataclass(slots=True)
class Sources:
    """Where live non-determinism comes from; tests inject fixed ones (trio's MockClock idea)."""

    clock: Callable[[], float] = time.time
    new_uuid: Callable[[], uuid_mod.UUID] = uuid_mod.uuid4
    new_seed: Callable[[], int] = lambda: random.SystemRandom().getrandbits(64)


class StepContext:
    """What a handler's runtime calls reach while one step executes."""

    __slots__ = (
        "_recorded",
        "active",
        "emits",
        "executor",
        "lsn",
        "nd",
        "out",
        "replies",
        "timers",
    )

    def __init__(self, executor: Executor, recorded_nd: list[Any] | None, lsn: int) -> None:
        self.executor = executor
        self.active = True
        self.lsn = lsn
        self.nd: list[Any] = []
        self.out: list[Any] = []
        self.emits: list[Any] = []
        self.replies: list[Any] = []
        self.timers: list[Any] = []
        self._recorded = recorded_nd

    def _nondeterministic(self, kind: str, produce: Callable[[], Any]) -> Any:
        if self._recorded is None:
            value = produce()
            self.nd.append([kind, value])
            return value
        index = len(self.nd)
        if index >= len(self._recorded) or self._recorded[index][0] != kind:
            expected = self._recorded[index] if index < len(self._recorded) else "nothing more"
            raise NondeterminismError(
                lsn=self.lsn,
                instance=self.executor.name,
                what=f"non-deterministic value #{index + 1}",
                expected=expected,
                actual=f"a request for {kind}",
            )
        entry = self._recorded[index]
        self.nd.append(entry)
        return entry[1]

    def now(self) -> float:
        return float(self._nondeterministic("now", self.executor.sources.clock))

    def uuid(self) -> uuid_mod.UUID:
        raw = self._nondeterministic("uuid", lambda: self.executor.sources.new_uuid().bytes)
        return uuid_mod.UUID(bytes=bytes(raw))

    def seed(self) -> int:
        return int(self._nondeterministic("seed", self.executor.sources.new_seed))

    def emit(self, value: Any) -> None:
        why = _unstorable(value)
        if why is not None:
            raise ValueCodecError(f"emit() got {why}")
        self.emits.append(value)

    def send_call(
        self, target: str, method: str, args: tuple[Any, ...], wants_reply: bool
    ) -> PendingReply | None:
        if not isinstance(target, str) or not target:
            raise ValueError("an instance name must be a non-empty string")
        args_list = list(args)
        why = _unstorable(args_list)
        if why is not None:
            raise ValueCodecError(f"the arguments of {target}.{method}() are {why}")
        seq = self.executor.next_seq(target)
        self.out.append(call_message(target, seq, method, args_list, wants_reply))
        return PendingReply(("r", target, seq)) if wants_reply else None

    def set_timer(self, seconds: float) -> TimerWait:
        due = self.now() + float(seconds)
        ex = self.executor
        ex.next_tid += 1
        tid = ex.next_tid
        ex.timers[tid] = due
        self.timers.append([tid, due])
        return TimerWait(("t", tid))


class Executor:
    """Runs one instance's handlers, one input at a time."""

    def __init__(
        self,
        app_cls: type[Immortal],
        *,
        name: str,
        sources: Sources | None = None,
    ) -> None:
        self.app_cls = app_cls
        self.name = name
        self.sources = sources or Sources()
        self.methods = rpc_methods(app_cls)
        self.app: Immortal | None = None
        self.rng = random.Random(0)
        self.seq_out: dict[str, int] = {}
        self.next_tid = 0
        self.timers: dict[int, float] = {}
        self.suspended: dict[tuple[Any, ...], tuple[Coroutine[Any, Any, Any], Origin]] = {}
        # Outcomes that arrived before anyone awaited them: key -> (ok, value or [type, msg]).
        self.early: dict[tuple[Any, ...], tuple[bool, Any]] = {}

    def next_seq(self, target: str) -> int:
        """The next number in the directed stream self -> target (1, 2, 3, ...)."""
        seq = self.seq_out.get(target, 0) + 1
        self.seq_out[target] = seq
        return seq

    # -- state -----------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.app is not None

    @property
    def quiescent(self) -> bool:
        """True when no handler is suspended mid-await: only then can state be snapshotted."""
        return not self.suspended

    def snapshot(self) -> dict[str, Any]:
        """The instance's whole state as plain data (requires quiescence)."""
        if not self.quiescent:
            raise RuntimeError("cannot snapshot while handlers are suspended mid-await")
        return {
            "app": app_state(self.app) if self.app is not None else None,
            "rng": self.rng.getstate(),
            "seq_out": dict(self.seq_out),
            "next_tid": self.next_tid,
            "timers": dict(self.timers),
            "early": [[list(k), ok, v] for k, (ok, v) in self.early.items()],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a snapshot taken by :meth:`snapshot` (``__init__`` of the app is not run)."""
        if snap["app"] is not None:
            app = self.app_cls.__new__(self.app_cls)
            app.__dict__.update(snap["app"])
            self.app = app
        self.rng.setstate(_as_rng_state(snap["rng"]))
        self.seq_out = dict(snap["seq_out"])
        self.next_tid = int(snap["next_tid"])
        self.timers = {int(k): float(v) for k, v in snap["timers"].items()}
        self.suspended = {}
        self.early = {tuple(k): (bool(ok), v) for k, ok, v in snap.get("early", [])}

    # -- steps -----------------------------------------------------------------------------------

    def execute(
        self, inp: dict[str, Any], *, lsn: int = 0, recorded: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Execute one input; return its step record. With ``recorded``, replay and compare."""
        ctx = StepContext(self, recorded.get("nd", []) if recorded is not None else None, lsn)
        app = self.app
        if app is not None:
            app.__dict__["_imm_ctx"] = ctx
        previous = sandbox.enter()
        try:
            self._dispatch(ctx, inp)
        finally:
            sandbox.leave(previous)
            ctx.active = False
        record: dict[str, Any] = {"in": inp}
        for key, value in (
            ("nd", ctx.nd),
            ("out", ctx.out),
            ("emit", ctx.emits),
            ("rep", ctx.replies),
            ("tim", ctx.timers),
        ):
            if value:
                record[key] = value
        if recorded is not None:
            compare_effects(recorded, record, lsn=lsn, instance=self.name)
        return record

    def _dispatch(self, ctx: StepContext, inp: dict[str, Any]) -> None:
        kind = inp["k"]
        if kind == "start":
            self._start(ctx)
        elif kind == "call":
            peer = inp.get("from")
            key = inp["seq"] if peer is not None else inp.get("id")
            origin: Origin = (peer, key, bool(inp.get("r", True)))
            self._call(ctx, inp["m"], inp.get("a", []), origin)
        elif kind == "reply":
            key = ("r", inp["from"], inp["re"])
            if "err" in inp:
                self._resume(ctx, key, False, inp["err"])
            else:
                self._resume(ctx, key, True, inp.get("ok"))
        elif kind == "timer":
            tid = int(inp["tid"])
            self.timers.pop(tid, None)
            self._resume(ctx, ("t", tid), True, None)
        else:
            raise ValueError(f"unknown input kind {kind!r}")

    def _start(self, ctx: StepContext) -> None:
        if self.app is not None:
            return  # a second start input is a no-op: main() runs once per instance
        self.rng.seed(ctx.seed())
        app = self.app_cls.__new__(self.app_cls)
        app.__dict__["_imm_ctx"] = ctx
        app.__init__()  # type: ignore[misc]
        self.app = app
        main = getattr(app, "main", None)
        if main is not None:
            self._run(ctx, main, [], (None, "main", True))

    def _call(self, ctx: StepContext, method: str, args: list[Any], origin: Origin) -> None:
        fn = self.methods.get(method)
        if fn is None or self.app is None:
            why = (
                f"{self.app_cls.__name__} has no @rpc method {method!r}"
                if self.app is not None
                else f"instance {self.name!r} has not started"
            )
            self._finish(ctx, origin, False, UnknownMethodError(why))
            return
        self._run(ctx, fn.__get__(self.app), args, origin)

    def _run(
        self, ctx: StepContext, bound: Callable[..., Any], args: list[Any], origin: Origin
    ) -> None:
        try:
            result = bound(*args)
        except Exception as exc:
            self._finish(ctx, origin, False, exc)
            return
        if type(result) is CoroutineType:  # an exact check: ABC isinstance showed in profiles
            self._drive(ctx, result, origin, value=None, throw=None)
        else:
            self._finish(ctx, origin, True, result)

    def _resume(self, ctx: StepContext, key: tuple[Any, ...], ok: bool, value: Any) -> None:
        """Deliver an outcome to the coroutine awaiting ``key``, or keep it until one does."""
        waiting = self.suspended.pop(key, None)
        if waiting is None:
            self.early[key] = (ok, value)  # e.g. the 2nd of two calls, while the 1st is awaited
            return
        coro, origin = waiting
        self._drive(ctx, coro, origin, **_outcome(ok, value))

    def _drive(
        self,
        ctx: StepContext,
        coro: Coroutine[Any, Any, Any],
        origin: Origin,
        *,
        value: Any,
        throw: BaseException | None,
    ) -> None:
        while True:
            try:
                yielded = coro.throw(throw) if throw is not None else coro.send(value)
            except StopIteration as stop:
                self._finish(ctx, origin, True, stop.value)
                return
            except Exception as exc:
                self._finish(ctx, origin, False, exc)
                return
            if isinstance(yielded, RuntimeAwaitable):
                arrived = self.early.pop(yielded.key, None)
                if arrived is not None:  # the outcome came first: continue at once
                    outcome = _outcome(*arrived)
                    value, throw = outcome["value"], outcome["throw"]
                    continue
                if yielded.key in self.suspended:
                    throw, value = (
                        RuntimeError("this reply is already being awaited elsewhere"),
                        None,
                    )
                    continue
                self.suspended[yielded.key] = (coro, origin)
                return
            throw = SandboxError(
                f"handlers can only await runtime awaitables (calls to self.ref(...) and "
                f"self.sleep()), not {type(yielded).__name__}; asyncio does not replay"
            )
            value = None

    def _finish(self, ctx: StepContext, origin: Origin, ok: bool, value: Any) -> None:
        caller, key, wants_reply = origin
        if not wants_reply:
            return
        why = _unstorable(value) if ok else None
        if why is not None:
            ok, value = False, ValueCodecError(f"the handler returned {why}")
        if not ok:
            value = [type(value).__name__, str(value)]
        if caller is None:
            ctx.replies.append([key, ok, value])
        else:
            ctx.out.append(reply_message(caller, self.next_seq(caller), key, ok, value))


def _outcome(ok: bool, value: Any) -> dict[str, Any]:
    """Keyword arguments for ``_drive``: a value to send, or a RemoteError to throw."""
    if ok:
        return {"value": value, "throw": None}
    return {"value": None, "throw": RemoteError(str(value[0]), str(value[1]))}


def app_state(app: Immortal) -> dict[str, Any]:
    """An app object's state: its attributes, less the runtime's own (``_imm_*``)."""
    return {k: v for k, v in app.__dict__.items() if not k.startswith("_imm_")}


def compare_effects(
    recorded: dict[str, Any], produced: dict[str, Any], *, lsn: int, instance: str
) -> None:
    """Raise NondeterminismError at the first effect that differs from the recorded step."""
    for key, what in (
        ("nd", "non-deterministic values"),
        ("out", "calls sent"),
        ("emit", "emitted outputs"),
        ("rep", "results"),
        ("tim", "timers set"),
    ):
        expected = recorded.get(key, [])
        actual = produced.get(key, [])
        if expected != actual:
            raise NondeterminismError(
                lsn=lsn, instance=instance, what=what, expected=expected, actual=actual
            )


def _as_rng_state(state: Any) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
