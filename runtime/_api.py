"""What app authors write against: ``Immortal``, ``@rpc``, references to other instances.

An ``Immortal`` subclass is plain Python. Its instance attributes are its state (attributes
starting with ``_imm_`` belong to the runtime and are never part of it). Handlers reach the
runtime through ``self``: ``ref``, ``emit``, ``now``, ``random``, ``uuid``, ``sleep``,
``call_later``/``call_at``/``cancel_timer``, ``gather``/``first``/``timeout`` and ``run``. Each of
those goes to the step context the executor installs, so in replay the very same calls return
the recorded values instead of asking the world again.

What a handler may ``await`` is a tree of runtime awaitables: leaves (a reply, a timer, a side
effect's outcome) and combinators over them (all of, the first of, with a timeout). The
executor, not asyncio, decides when a waiting handler resumes: when a logged input completes
the tree. That is why the combinators exist instead of ``asyncio.gather``: asyncio's scheduling
is not in the log, so it would not replay.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._executor import StepContext

F = TypeVar("F", bound=Callable[..., Any])

RPC_MARK = "__immortal_rpc__"


def rpc(fn: F) -> F:
    """Expose a method to other instances and outside callers. Plain or ``async def``."""
    setattr(fn, RPC_MARK, True)
    return fn


def rpc_methods(cls: type) -> dict[str, Callable[..., Any]]:
    """Every ``@rpc`` method of an app class, by name (inherited ones included)."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if callable(value) and getattr(value, RPC_MARK, False):
                found[name] = value
    return found


class RuntimeAwaitable:
    """Base of the only things a handler may ``await``: they yield a request to the executor."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self)


class PendingReply(RuntimeAwaitable):
    """The reply to a call this step sent; awaiting it suspends until the reply is a logged input."""

    __slots__ = ()


class TimerWait(RuntimeAwaitable):
    """A durable timer: awaiting it suspends until the timer-fired input is logged."""

    __slots__ = ()


class SideEffect(RuntimeAwaitable):
    """``self.run(fn, ...)``: work outside the deterministic executor, whose outcome is logged.

    Nothing happens until it is awaited (alone or in a combinator): only then does the step
    record the request, and only once that step is durable does the runtime call ``fn`` on a
    worker thread. Its key is given when the request is recorded."""

    __slots__ = ("args", "backoff", "fn", "retries", "timeout")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        retries: int,
        backoff: float,
        timeout: float | None,
    ) -> None:
        super().__init__(())
        self.fn = fn
        self.args = args
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout


class Combined(RuntimeAwaitable):
    """Several awaitables waited on together: ``mode`` is ``"all"`` (``self.gather``) or
    ``"first"`` (``self.first``)."""

    __slots__ = ("children", "mode")

    def __init__(self, mode: str, children: tuple[RuntimeAwaitable, ...]) -> None:
        super().__init__(())
        if not children:
            raise ValueError(f"self.{'gather' if mode == 'all' else 'first'}() needs awaitables")
        for child in children:
            if not isinstance(child, RuntimeAwaitable):
                raise TypeError(
                    "combinators take runtime awaitables (calls through self.ref(...), "
                    f"self.sleep(), self.run(), other combinators), not {type(child).__name__}"
                )
        self.mode = mode
        self.children = children


class Timeout(RuntimeAwaitable):
    """``self.timeout(awaitable, seconds)``: the awaitable's outcome, or ``TimeoutError`` once a
    durable timer fires first (the abandoned outcome, if it comes later, is dropped)."""

    __slots__ = ("child", "seconds")

    def __init__(self, child: RuntimeAwaitable, seconds: float) -> None:
        super().__init__(())
        if not isinstance(child, RuntimeAwaitable):
            raise TypeError(f"self.timeout() takes a runtime awaitable, not {type(child).__name__}")
        self.child = child
        self.seconds = float(seconds)


class MethodRef:
    """``ref.method``: call it to send a request (awaitable reply), or ``.post`` for one-way."""

    __slots__ = ("_name", "_ref")

    def __init__(self, ref: Ref, name: str) -> None:
        self._ref = ref
        self._name = name

    def __call__(self, *args: Any) -> PendingReply:
        reply = self._ref._owner._imm_context().send_call(self._ref.name, self._name, args, True)
        assert reply is not None
        return reply

    def post(self, *args: Any) -> None:
        """Send the call with no reply expected (fire and forget, still exactly once)."""
        self._ref._owner._imm_context().send_call(self._ref.name, self._name, args, False)


class Ref:
    """A handle on another instance by name. Its address may change; the name never does."""

    __slots__ = ("_owner", "name")

    def __init__(self, owner: Immortal, name: str) -> None:
        self._owner = owner
        self.name = name

    def __getattr__(self, method: str) -> MethodRef:
        if method.startswith("_"):
            raise AttributeError(method)
        return MethodRef(self, method)

    def __repr__(self) -> str:
        return f"Ref({self.name!r})"


class Immortal:
    """Base class of an app. Subclass it; mark handlers with ``@rpc``; optionally ``async def main``.

    ``__init__`` runs once, at the instance's first start; after that the state comes from
    checkpoints and replay, never from ``__init__`` again. ``main()``, if defined, also runs once.
    """

    _imm_ctx: StepContext | None = None

    def _imm_context(self) -> StepContext:
        ctx: StepContext | None = self.__dict__.get("_imm_ctx")
        if ctx is None or not ctx.active:
            from ._errors import SandboxError

            raise SandboxError(
                "runtime services (ref calls, emit, now, random, uuid, sleep) can only be used "
                "while a handler runs"
            )
        return ctx

    @property
    def instance_name(self) -> str:
        """This instance's name (its identity forever)."""
        return self._imm_context().executor.name

    def ref(self, name: str) -> Ref:
        """A reference to the instance called ``name`` (it need not be running right now)."""
        return Ref(self, name)

    def emit(self, value: Any) -> None:
        """An output to the outside world: released once, after the step is durable."""
        self._imm_context().emit(value)

    def now(self) -> float:
        """Wall-clock seconds since the epoch, recorded so that replay sees the same value."""
        return self._imm_context().now()

    def random(self) -> _random.Random:
        """This instance's random generator: seeded once, recorded, part of the state."""
        return self._imm_context().executor.rng

    def uuid(self) -> _uuid.UUID:
        """A random UUID, recorded so that replay sees the same value."""
        return self._imm_context().uuid()

    def sleep(self, seconds: float) -> TimerWait:
        """``await self.sleep(s)``: a durable timer; it fires after a restart too.

        A handler suspended in ``sleep`` blocks checkpoints until it resumes; for periodic work
        use ``call_later``, which suspends nothing."""
        return self._imm_context().set_timer(seconds)

    # -- timer callbacks ---------------------------------------------------------------------------

    def call_later(self, seconds: float, handler: Callable[..., Any] | str, *args: Any) -> int:
        """Call one of this instance's ``@rpc`` handlers after ``seconds``; returns a timer id.

        The timer is part of the state: it survives crashes and restarts, fires once (a logged
        input that runs ``handler(*args)``), and suspends nothing, so checkpoints go on. The
        pattern for periodic work is a handler that ends by scheduling itself again."""
        ctx = self._imm_context()
        return ctx.set_callback(ctx.now() + float(seconds), _handler_name(self, handler), args)

    def call_at(self, when: float, handler: Callable[..., Any] | str, *args: Any) -> int:
        """Like ``call_later``, at wall-clock time ``when`` (seconds since the epoch, as
        ``self.now()``); a time in the past fires at once."""
        return self._imm_context().set_callback(float(when), _handler_name(self, handler), args)

    def cancel_timer(self, timer_id: int) -> bool:
        """Cancel a timer of ``call_later``/``call_at``; False if it already fired or is unknown."""
        return self._imm_context().cancel_callback(timer_id)

    # -- combinators -----------------------------------------------------------------------------

    def gather(self, *awaitables: RuntimeAwaitable) -> Combined:
        """``await self.gather(a, b, c)``: every outcome, as a list in argument order. The first
        failure to arrive is raised at once, and the others are no longer waited for."""
        return Combined("all", awaitables)

    def first(self, *awaitables: RuntimeAwaitable) -> Combined:
        """``index, value = await self.first(a, b)``: the first outcome to arrive (raised if it
        is a failure); the others are no longer waited for."""
        return Combined("first", awaitables)

    def timeout(self, awaitable: RuntimeAwaitable, seconds: float) -> Timeout:
        """``await self.timeout(x, 5)``: ``x``'s outcome, or ``TimeoutError`` after ``seconds``
        (a durable timer, so replay times out at the same step). A reply or side effect that
        arrives after the timeout is dropped, unless the handler awaits it again."""
        return Timeout(awaitable, seconds)

    # -- durable side effects ----------------------------------------------------------------------

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        retries: int = 0,
        backoff: float = 0.5,
        timeout: float | None = None,
    ) -> SideEffect:
        """``await self.run(fn, *args)``: call ``fn(key, *args)`` outside the handler and log what
        it returned or raised, so replay gets the recorded outcome without calling it again.

        ``fn`` runs on a worker thread once the step that asked for it is durable, and may do
        any I/O. It runs *at least* once: a crash after it ran and before its outcome was
        logged runs it again, so pass ``key`` (a string, the same on every run of this effect)
        to the outside service as its idempotency key. A failed attempt (an exception, or no
        answer within ``timeout`` seconds) is retried ``retries`` times, after ``backoff``,
        doubling; the last failure is raised in the handler as ``EffectError``."""
        if not callable(fn):
            raise TypeError(f"self.run() takes a function, not {type(fn).__name__}")
        if retries < 0 or backoff < 0 or (timeout is not None and timeout <= 0):
            raise ValueError("self.run(): retries and backoff must be >= 0, timeout > 0")
        return SideEffect(fn, args, retries=int(retries), backoff=float(backoff), timeout=timeout)


def _handler_name(app: Immortal, handler: Callable[..., Any] | str) -> str:
    """The name of one of ``app``'s own handlers, given as a bound method or as a name."""
    if isinstance(handler, str):
        return handler
    owner = getattr(handler, "__self__", None)
    name = getattr(handler, "__name__", None)
    if owner is not app or not isinstance(name, str):
        raise TypeError(
            "a timer callback is one of this instance's own handlers: pass self.method or "
            "its name (to call another instance later, schedule a handler that calls it)"
        )
    return name
