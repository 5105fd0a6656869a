"""The exception tree of ``runtime``::

RuntimeError_ (ImmortalsError)
├── RemoteError            a handler of another instance raised; carries type name and message
├── NondeterminismError    replay produced a different effect than the log recorded
├── SandboxError           a handler used asyncio, a thread, a socket, a file or a subprocess
├── UnknownMethodError     a call named a method that is not an @rpc handler
├── AppLoadError           APP (path/file.py:Class or module:Class) cannot be imported
└── InstanceError          registry problems: unknown name, a second live process, ...
"""

from __future__ import annotations

from typing import Any


class ImmortalsError(Exception):
    """Base class of every error the runtime raises on purpose."""


class RemoteError(ImmortalsError):
    """The called handler raised. ``type_name`` and ``message`` are what it raised."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, self.message))


class NondeterminismError(ImmortalsError):
    """Re-executing a logged step did not reproduce what the log recorded.

    This means the handler's result depends on something the runtime did not record: the real
    clock, an unseeded random number, a file, the network, iteration order of a set of objects
    hashed by address, or code that changed since the log was written. Use ``self.now()``,
    ``self.random()``, ``self.uuid()`` and ``await self.sleep()`` for non-determinism, and pass
    outside data in as call arguments. If the code changed on purpose, use ``immortals upgrade``.
    """

    def __init__(self, *, lsn: int, instance: str, what: str, expected: Any, actual: Any) -> None:
        self.lsn = lsn
        self.instance = instance
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"instance {instance!r}, step {lsn}: replay diverged in {what}: "
            f"recorded {expected!r}, replay produced {actual!r}. The handler depends on something "
            "not recorded (real clock, unseeded randomness, I/O) or its code changed"
        )


class SandboxError(ImmortalsError):
    """Handler code tried something that cannot be replayed deterministically."""


class UnknownMethodError(ImmortalsError):
    """A call named a method the instance does not expose with ``@rpc``."""


class AppLoadError(ImmortalsError):
    """The app given as ``path/file.py:Class`` or ``module:Class`` cannot be loaded."""


class InstanceError(ImmortalsError):
    """An instance cannot be found, started, or reached."""
