"""What app authors write against: ``Immortal``, ``@rpc``, references to other instances.

An ``Immortal`` subclass is plain Python. Its instance attributes are its state (attributes
starting with ``_imm_`` belong to the runtime and are never part of it). Handlers reach the
runtime through ``self``: ``ref``, ``emit``, ``now``, ``random``, ``uuid``, ``sleep``. Each of those
goes to the step context the executor installs, so in replay the very same calls return the
recorded values instead of asking the world again.
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
        """``await self.sleep(s)``: a durable timer; it fires after a restart too."""
        return self._imm_context().set_timer(seconds)
