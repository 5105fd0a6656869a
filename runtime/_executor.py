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
            {"k": "timer", "tid": n}                         a timer fired (a sleep or a callback)
            {"k": "effect", "eid": n, "ok": v | "err": [type, msg]}   a side effect's outcome
    nd    non-deterministic values consumed, in order: ["now", t] | ["uuid", bytes] | ["seed", n]
    out   messages to instances (this one included), each numbered in its directed stream:
            [target, seq, "c", method, args, wants_reply]     a call
            [target, seq, "r", re, ok, value]                 the reply to call ``re`` of target
    emit  external outputs, in order
    rep   results for outside callers and main(): [key, ok, value] (key "main" for main())
    tim   timers set: [tid, due] (a sleep) | [tid, due, method, args] (a callback)
    tcx   callback timers cancelled: [tid, ...]
    fx    side effects requested: [eid, key, function name]
    fail  a failure nobody receives (a post, a timer callback): [type, msg, lsn]

A failed outcome's value is [type name, message, LSN of the step that failed] (logs written
before the LSN was added hold [type name, message]). Keys with nothing to say are left out, so
a plain call that returns costs few bytes. ``_schema`` holds these shapes as types, with the
one reader of each.

What a suspended handler waits on is a tree (``_Node``): leaves keyed ``("r", target, seq)``
(a reply), ``("t", tid)`` (a timer) or ``("x", eid)`` (a side effect), under combinators. A
logged outcome settles its leaf; when the root settles, the handler resumes and the leaves it
no longer needs are *abandoned*: a timer among them is cancelled, and a reply or side effect
outcome that arrives later is dropped (the key is kept in ``abandoned``, part of the state,
so replay drops it the same way).
"""

from __future__ import annotations

import difflib
import math
import random
import time
import uuid as uuid_mod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, Final

from logformat import ValueCodecError, pack_value

from . import _sandbox as sandbox
from ._api import (
    Combined,
    Immortal,
    PendingReply,
    RuntimeAwaitable,
    SideEffect,
    Timeout,
    TimerWait,
    rpc_methods,
)
from ._errors import (
    AppInitError,
    EffectError,
    NondeterminismError,
    RemoteError,
    SandboxError,
    UnknownMethodError,
    UpgradeError,
)
from ._schema import MAX_VALUE_BYTES, call_message, failure, read_failure, reply_message
from ._versions import migrate_state

_SCALARS = frozenset((int, float, bool, type(None)))

Origin = tuple[Any, Any, bool]  # (caller, key, wants_reply); caller None is main()


def unstorable(value: Any) -> str | None:
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


@dataclass(frozen=True, slots=True)
class EffectRequest:
    """A side effect a handler awaits: what the driver runs once the asking step is durable."""

    eid: int
    lsn: int  # the step that asked for it: the effect may run only once that step is durable
    key: str  # the idempotency key handed to ``fn``: instance/LSN/position, stable across runs
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    retries: int
    backoff: float
    timeout: float | None


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
        "rare",
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
        self.rare: dict[str, list[Any]] | None = None  # "tcx", "fx", "fail": made when needed
        self._recorded = recorded_nd

    def rare_list(self, key: str) -> list[Any]:
        """The list of a record key that few steps have (created on first use)."""
        rare = self.rare
        if rare is None:
            rare = self.rare = {}
        found = rare.get(key)
        if found is None:
            found = rare[key] = []
        return found

    @property
    def replaying(self) -> bool:
        return self._recorded is not None

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
        why = unstorable(value)
        if why is not None:
            raise ValueCodecError(f"emit() got {why}")
        self.emits.append(value)

    def send_call(
        self, target: str, method: str, args: tuple[Any, ...], wants_reply: bool
    ) -> PendingReply | None:
        if not isinstance(target, str) or not target:
            raise ValueError("an instance name must be a non-empty string")
        args_list = list(args)
        why = unstorable(args_list)
        if why is not None:
            raise ValueCodecError(f"the arguments of {target}.{method}() are {why}")
        seq = self.executor.next_seq(target)
        self.out.append(call_message(target, seq, method, args_list, wants_reply))
        return PendingReply(("r", target, seq)) if wants_reply else None

    def set_timer(self, seconds: float) -> TimerWait:
        due = self.now() + _finite(seconds, "a timer's delay")
        ex = self.executor
        ex.next_tid += 1
        tid = ex.next_tid
        ex.timers[tid] = due
        self.timers.append([tid, due])
        return TimerWait(("t", tid))

    def set_callback(self, due: float, method: str, args: tuple[Any, ...]) -> int:
        _finite(due, "a timer's due time")
        ex = self.executor
        if method not in ex.methods:
            raise UnknownMethodError(ex.no_such_method(method) + " to schedule")
        args_list = list(args)
        why = unstorable(args_list)
        if why is not None:
            raise ValueCodecError(f"the arguments of the timer callback {method}() are {why}")
        ex.next_tid += 1
        tid = ex.next_tid
        ex.timers[tid] = due
        ex.callbacks[tid] = [method, args_list]
        self.timers.append([tid, due, method, args_list])
        return tid

    def cancel_callback(self, tid: int) -> bool:
        ex = self.executor
        if ex.callbacks.pop(tid, None) is None:
            return False
        ex.timers.pop(tid, None)
        self.rare_list("tcx").append(tid)
        return True

    def request_effect(self, effect: SideEffect) -> tuple[str, int]:
        """Record that this step asks for ``effect``; its key in the wait tree."""
        ex = self.executor
        ex.next_eid += 1
        eid = ex.next_eid
        requested = self.rare_list("fx")
        key = f"{ex.name}/{self.lsn}/{len(requested)}"
        name = getattr(effect.fn, "__qualname__", None) or type(effect.fn).__name__
        requested.append([eid, key, name])
        ex.effects[eid] = EffectRequest(
            eid,
            self.lsn,
            key,
            effect.fn,
            effect.args,
            effect.retries,
            effect.backoff,
            effect.timeout,
        )
        return ("x", eid)


class _Node:
    """One awaitable in a wait tree: a leaf (``key`` set) or a combinator (``children``)."""

    __slots__ = ("children", "done", "index", "key", "kind", "parent", "remaining", "results")

    def __init__(self, kind: str, parent: _Node | None, index: int) -> None:
        self.kind = kind  # "leaf", "all", "first" or "timeout"
        self.parent = parent
        self.index = index
        self.key: tuple[Any, ...] = ()
        self.children: list[_Node] = []
        self.done = False
        self.remaining = 0
        self.results: list[Any] = []

    def leaves(self) -> list[_Node]:
        if self.kind == "leaf":
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]


_Outcome = tuple[Any, BaseException | None]  # (value to send, or exception to throw)


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
        self.timers: dict[int, float] = {}  # every pending timer's due time, sleeps and callbacks
        self.callbacks: dict[int, list[Any]] = {}  # callback timers: tid -> [method, args]
        self.next_eid = 0
        self.effects: dict[int, EffectRequest] = {}  # requested, outcome not yet logged
        # Leaf key -> (coroutine, origin, leaf node); the node is None for a plain await of one
        # reply or timer (the common case, kept free of tree building).
        self.suspended: dict[
            tuple[Any, ...], tuple[Coroutine[Any, Any, Any], Origin, _Node | None]
        ] = {}
        # Outcomes that arrived before anyone awaited them: key -> (ok, value or [type, msg]).
        self.early: dict[tuple[Any, ...], tuple[bool, Any]] = {}
        self.abandoned: set[tuple[Any, ...]] = set()  # outcomes to drop when they arrive
        # The app class of a code version, for upgrade steps (the log's code book); None: this
        # executor cannot take an upgrade step.
        self.code_for: Callable[[str], type[Immortal]] | None = None

    def use_code(self, app_cls: type[Immortal]) -> None:
        """Run ``app_cls`` from now on (the state stays: see upgrade steps for migrations)."""
        self.app_cls = app_cls
        self.methods = rpc_methods(app_cls)

    def next_seq(self, target: str) -> int:
        """The next number in the directed stream self -> target (1, 2, 3, ...)."""
        seq = self.seq_out.get(target, 0) + 1
        self.seq_out[target] = seq
        return seq

    def no_such_method(self, method: str) -> str:
        """Why ``method`` cannot be called, with the closest names this app has."""
        close = difflib.get_close_matches(method, list(self.methods), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(self.methods)) or "none"
        return f"{self.app_cls.__name__} has no @rpc method {method!r}{hint} (it has: {known})"

    # -- state -----------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.app is not None

    @property
    def quiescent(self) -> bool:
        """True when no handler is suspended mid-await: only then can state be snapshotted."""
        return not self.suspended

    def snapshot(self) -> dict[str, Any]:
        """The instance's whole state as plain data (requires quiescence).

        Side effects still running are not in it: only an abandoned one can be running while
        no handler waits, and its outcome, if it is ever logged, is dropped (``abandoned``)."""
        if not self.quiescent:
            raise RuntimeError("cannot snapshot while handlers are suspended mid-await")
        snap: dict[str, Any] = {
            "app": app_state(self.app) if self.app is not None else None,
            "rng": self.rng.getstate(),
            "seq_out": dict(self.seq_out),
            "next_tid": self.next_tid,
            "timers": dict(self.timers),
            "early": [[list(k), ok, v] for k, (ok, v) in self.early.items()],
        }
        if self.callbacks:
            snap["callbacks"] = dict(self.callbacks)
        if self.next_eid:
            snap["next_eid"] = self.next_eid
        if self.abandoned:
            snap["abandoned"] = [list(k) for k in self.abandoned]
        return snap

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
        self.callbacks = {int(k): [v[0], list(v[1])] for k, v in snap.get("callbacks", {}).items()}
        self.next_eid = int(snap.get("next_eid", 0))
        self.effects = {}
        self.suspended = {}
        self.early = {tuple(k): (bool(ok), v) for k, ok, v in snap.get("early", [])}
        self.abandoned = {tuple(k) for k in snap.get("abandoned", ())}

    # -- steps -----------------------------------------------------------------------------------

    def execute(
        self,
        inp: dict[str, Any],
        *,
        lsn: int = 0,
        recorded: dict[str, Any] | None = None,
        compare: bool = True,
    ) -> dict[str, Any]:
        """Execute one input; return its step record. With ``recorded``, replay and compare
        (``compare=False``: take its non-deterministic values, and leave comparing to the
        caller, as a retroactive test of other code does)."""
        ctx = StepContext(self, recorded.get("nd", []) if recorded is not None else None, lsn)
        app = self.app
        if app is not None:
            app.__dict__["_imm_ctx"] = ctx
        previous = sandbox.enter(None if recorded is not None else (self.name, lsn))
        try:
            self._dispatch(ctx, inp)
        finally:
            sandbox.leave(previous)
            ctx.active = False
        record: dict[str, Any] = {"in": inp}
        if ctx.nd:
            record["nd"] = ctx.nd
        if ctx.out:
            record["out"] = ctx.out
        if ctx.emits:
            record["emit"] = ctx.emits
        if ctx.replies:
            record["rep"] = ctx.replies
        if ctx.timers:
            record["tim"] = ctx.timers
        if ctx.rare is not None:  # cancelled timers, side effects, unreceived failures
            record.update(ctx.rare)
        if recorded is not None and compare:
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
            callback = self.callbacks.pop(tid, None)
            if callback is not None:
                self._call(ctx, callback[0], callback[1], (None, None, False))
            else:
                self._resume(ctx, ("t", tid), True, None)
        elif kind == "upgrade":
            self._upgrade(inp)
        elif kind == "effect":
            eid = int(inp["eid"])
            self.effects.pop(eid, None)
            if "err" in inp:
                self._resume(ctx, ("x", eid), False, inp["err"])
            else:
                self._resume(ctx, ("x", eid), True, inp.get("ok"))
        else:
            raise ValueError(f"unknown input kind {kind!r}")

    def _upgrade(self, inp: dict[str, Any]) -> None:
        """An upgrade step: from here on the app runs the code of version ``to``, with its state
        migrated (``_versions.migrate_state``). Only taken when no handler is suspended: a
        suspended coroutine would go on running the old code on the old object."""
        if self.code_for is None:
            raise UpgradeError(
                f"step of {self.name!r} upgrades to {inp.get('to')}: replaying it needs that "
                "version's code (the log's code book)"
            )
        if not self.quiescent:
            raise UpgradeError(f"{self.name}: an upgrade step while handlers are suspended")
        self.adopt(self.code_for(str(inp["to"])), inp.get("fv"))

    def adopt(self, new_cls: type[Immortal], from_version: int | None) -> None:
        """Run ``new_cls`` from now on, the app's state migrated from ``from_version``'s: the
        one place an upgrade replaces the app object (the upgrade step, the upgrade check)."""
        if self.app is not None:
            state = migrate_state(new_cls, app_state(self.app), from_version)
            app = new_cls.__new__(new_cls)
            app.__dict__.update(state)
            self.app = app
        self.use_code(new_cls)

    def _start(self, ctx: StepContext) -> None:
        if self.app is not None:
            return  # a second start input is a no-op: main() runs once per instance
        self.rng.seed(ctx.seed())
        app = self._construct(ctx)
        self.app = app
        main = getattr(app, "main", None)
        if main is not None:
            self._run(ctx, main, [], (None, "main", True))

    def _construct(self, ctx: StepContext) -> Immortal:
        """A new app object, its ``__init__`` run within the step ``ctx``."""
        app = self.app_cls.__new__(self.app_cls)
        app.__dict__["_imm_ctx"] = ctx
        try:
            app.__init__()  # type: ignore[misc]
        except Exception as exc:
            raise AppInitError(
                f"{self.app_cls.__name__}.__init__() raised {type(exc).__name__}: {exc} at the "
                f"first start of {self.name!r}; nothing was logged, so fix it and start again"
            ) from exc
        return app

    def initial_state(self) -> dict[str, Any]:
        """The state the app's ``__init__`` builds, the shape its code expects (``main`` does not
        run). Ask a scratch executor of the class: ``self.random()`` in ``__init__`` draws from
        this executor's generator."""
        ctx = StepContext(self, None, 0)
        previous = sandbox.enter((self.name, 0))
        try:
            return app_state(self._construct(ctx))
        finally:
            sandbox.leave(previous)
            ctx.active = False

    def _call(self, ctx: StepContext, method: str, args: list[Any], origin: Origin) -> None:
        fn = self.methods.get(method)
        if fn is None or self.app is None:
            why = (
                self.no_such_method(method)
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

    # -- waiting -------------------------------------------------------------------------------

    def _resume(self, ctx: StepContext, key: tuple[Any, ...], ok: bool, value: Any) -> None:
        """Deliver an outcome to the handler awaiting ``key``, keep it until one does, or drop
        it if the handler that asked for it stopped waiting (a timeout, ``first``)."""
        waiting = self.suspended.pop(key, None)
        if waiting is None:
            if key in self.abandoned:
                self.abandoned.discard(key)
                return
            self.early[key] = (ok, value)  # e.g. the 2nd of two calls, while the 1st is awaited
            return
        coro, origin, leaf = waiting
        if leaf is None:
            settled: _Outcome | None = _leaf_outcome(key, ok, value)
        else:
            settled = self._settle(leaf, *_leaf_outcome(key, ok, value))
            if settled is not None:
                self._abandon(leaf)
        if settled is not None:
            self._drive(ctx, coro, origin, value=settled[0], throw=settled[1])

    def _wait_on(
        self, ctx: StepContext, coro: Coroutine[Any, Any, Any], origin: Origin, awaited: Any
    ) -> _Outcome | None:
        """Suspend ``coro`` on what it awaits; or the outcome to continue with at once (it had
        arrived already, or the awaitable cannot be waited on)."""
        kind = type(awaited)
        if kind is PendingReply or kind is TimerWait:  # one leaf: no tree
            key = awaited.key
            arrived = self.early.pop(key, None)
            if arrived is not None:
                return _leaf_outcome(key, *arrived)
            if key in self.suspended or (kind is TimerWait and key[1] not in self.timers):
                return None, RuntimeError(self._unwaitable(awaited, set()))
            if self.abandoned:
                self.abandoned.discard(key)  # awaited again after a timeout: wanted after all
            self.suspended[key] = (coro, origin, None)
            return None
        problem = self._unwaitable(awaited, set())
        if problem is not None:
            return None, RuntimeError(problem)
        root = self._tree(ctx, awaited, None, 0)
        for leaf in root.leaves():
            key = leaf.key
            self.abandoned.discard(key)
            arrived = self.early.pop(key, None)
            if arrived is None:
                self.suspended[key] = (coro, origin, leaf)
                continue
            settled = self._settle(leaf, *_leaf_outcome(key, *arrived))
            if settled is not None:
                self._abandon(root)
                return settled
        return None

    def _unwaitable(self, awaited: RuntimeAwaitable, seen: set[tuple[Any, ...]]) -> str | None:
        """Why the awaitable tree cannot be waited on (before anything is registered)."""
        if isinstance(awaited, Combined):
            for child in awaited.children:
                problem = self._unwaitable(child, seen)
                if problem is not None:
                    return problem
            return None
        if isinstance(awaited, Timeout):
            return self._unwaitable(awaited.child, seen)
        if isinstance(awaited, SideEffect):
            return None if awaited.key == () else "this side effect was awaited already"
        key = awaited.key
        if key in self.suspended or key in seen:
            return "this reply is already being awaited elsewhere"
        if key[0] == "t" and key[1] not in self.timers and key not in self.early:
            return "this timer has fired already, or was cancelled by a timeout or first()"
        seen.add(key)
        return None

    def _tree(
        self, ctx: StepContext, awaited: RuntimeAwaitable, parent: _Node | None, index: int
    ) -> _Node:
        if isinstance(awaited, Combined):
            node = _Node(awaited.mode, parent, index)
            node.children = [
                self._tree(ctx, child, node, i) for i, child in enumerate(awaited.children)
            ]
            node.remaining = len(node.children)
            node.results = [None] * node.remaining
            return node
        if isinstance(awaited, Timeout):
            node = _Node("timeout", parent, index)
            clock = _Node("leaf", node, 1)
            node.children = [self._tree(ctx, awaited.child, node, 0), clock]
            clock.key = ctx.set_timer(awaited.seconds).key
            node.results = [awaited.seconds]
            return node
        leaf = _Node("leaf", parent, index)
        if isinstance(awaited, SideEffect):
            awaited.key = ctx.request_effect(awaited)
        leaf.key = awaited.key
        return leaf

    def _settle(self, node: _Node, value: Any, throw: BaseException | None) -> _Outcome | None:
        """An outcome for ``node``; the root's outcome if that settles the whole tree."""
        while True:
            node.done = True
            parent = node.parent
            if parent is None:
                return value, throw
            if parent.done:
                return None
            if parent.kind == "all" and throw is None:
                parent.results[node.index] = value
                parent.remaining -= 1
                if parent.remaining:
                    return None
                value = parent.results
            elif parent.kind == "first" and throw is None:
                value = (node.index, value)
            elif parent.kind == "timeout" and node.index == 1:
                value, throw = None, TimeoutError(f"no outcome within {parent.results[0]:g} s")
            node = parent

    def _abandon(self, node: _Node) -> None:
        """The handler resumes: forget what else its tree waited on (cancel timers; drop the
        outcomes of replies and side effects if they come later). ``node`` is any node of it."""
        while node.parent is not None:
            node = node.parent
        for leaf in node.leaves():
            if leaf.done:
                continue
            key = leaf.key
            self.suspended.pop(key, None)
            if key[0] == "t":
                self.timers.pop(key[1], None)
            else:
                self.abandoned.add(key)

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
                outcome = self._wait_on(ctx, coro, origin, yielded)
                if outcome is None:
                    return  # suspended until a logged input settles what it awaits
                value, throw = outcome
                continue
            throw = SandboxError(
                f"handlers can only await runtime awaitables (calls to self.ref(...), "
                f"self.sleep(), self.run() and the combinators self.gather(), self.first(), "
                f"self.timeout()), not {type(yielded).__name__}; asyncio does not replay"
            )
            value = None

    def _finish(self, ctx: StepContext, origin: Origin, ok: bool, value: Any) -> None:
        caller, key, wants_reply = origin
        if not wants_reply:
            if not ok:  # a post or a timer callback: nobody receives it, so the log says it
                ctx.rare_list("fail").append(failure(type(value).__name__, str(value), ctx.lsn))
            return
        why = unstorable(value) if ok else None
        if why is not None:
            ok, value = False, ValueCodecError(f"the handler returned {why}")
        if not ok:
            value = failure(type(value).__name__, str(value), ctx.lsn)
        if caller is None:
            ctx.replies.append([key, ok, value])
        else:
            ctx.out.append(reply_message(caller, self.next_seq(caller), key, ok, value))


def _finite(value: float, what: str) -> float:
    """``value`` as a float, refused (ValueError in the handler) unless it is a finite number:
    a NaN or infinite due time would never fire, or fire at once, without saying so."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number of seconds, not {value!r}")
    return number


def _leaf_outcome(key: tuple[Any, ...], ok: bool, value: Any) -> _Outcome:
    """A leaf's logged outcome as what the handler sees: a value, or an exception to raise."""
    if ok:
        return value, None
    type_name, message, lsn = read_failure(value)
    if key[0] == "x":
        return None, EffectError(type_name, message)
    return None, RemoteError(type_name, message, lsn)


def app_state(app: Immortal) -> dict[str, Any]:
    """An app object's state: its attributes, less the runtime's own (``_imm_*``)."""
    return {k: v for k, v in app.__dict__.items() if not k.startswith("_imm_")}


EFFECT_KEYS: Final = (
    ("nd", "non-deterministic values"),
    ("out", "calls sent"),
    ("emit", "emitted outputs"),
    ("rep", "results"),
    ("tim", "timers set"),
    ("tcx", "timers cancelled"),
    ("fx", "side effects requested"),
)
"""The keys of a step record that replay must reproduce, in the order they are compared, with
what each holds. (``fail`` is derived from the others and not compared: older logs lack it.)"""


def compare_effects(
    recorded: dict[str, Any], produced: dict[str, Any], *, lsn: int, instance: str
) -> None:
    """Raise NondeterminismError at the first effect that differs from the recorded step."""
    for key, what in EFFECT_KEYS:
        expected = recorded.get(key, [])
        actual = produced.get(key, [])
        if expected != actual and not same_but_error_lsns(key, expected, actual):
            raise NondeterminismError(
                lsn=lsn, instance=instance, what=what, expected=expected, actual=actual
            )


def same_but_error_lsns(key: str, expected: list[Any], actual: list[Any]) -> bool:
    """Logs written before failed outcomes carried their LSN hold ``[type, message]`` where the
    code now produces ``[type, message, lsn]``: the same outcome, not a divergence."""
    if key not in ("out", "rep") or len(expected) != len(actual):
        return False
    for old, new in zip(expected, actual, strict=True):
        if old == new:
            continue
        if len(old) != len(new) or old[:-1] != new[:-1] or old[-2] is not False:
            return False
        was, now = old[-1], new[-1]
        if not (isinstance(was, list) and len(was) == 2 and now[:2] == was):
            return False
    return True


def _as_rng_state(state: Any) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
