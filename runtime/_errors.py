"""The exception tree of ``runtime``::

ImmortalsError               every error the runtime raises on purpose
├── RemoteError              a called handler raised: its type name, message and step (LSN)
├── EffectError              a durable side effect (``self.run``) failed on its last attempt
├── NondeterminismError      replay produced a different effect than the log recorded
├── SandboxError             a handler used asyncio, a thread, a socket, a file or a subprocess
├── UnknownMethodError       a call named a method that is not an @rpc handler
├── AppLoadError             APP (path/file.py:Class or module:Class) cannot be imported
│   └── AppInitError         the app's ``__init__`` raised at the instance's first start
├── CheckpointFormatError    a checkpoint's payload has a format this version cannot read
├── UpgradeError             new code cannot take over: a failed migration, a refused check
├── IdempotencyKeyError      a caller's key is empty, too long or reserved (also a ValueError)
├── InstanceError            registry problems: unknown name, a second live process, ...
│   ├── CallTimeoutError     a call from outside got no answer before its timeout
│   ├── InstanceNameError    a name outside the safe alphabet (``_schema.NAME_RULE``)
│   ├── SecretError          the cluster secret is missing, short, unreadable or exposed
│   └── RegistryError        the registry cannot be read or written (damaged, disk full)
└── PeerError                the remote side broke the protocol (its fault, not ours)
    ├── WireError            bytes that are not a valid message (raised in ``_wire``)
    └── ProtocolError        a message the protocol does not allow there (``_protocol``)

``logformat`` keeps its own tree (``LogError``): the log format knows nothing of the runtime.
"""

from __future__ import annotations

from typing import Any


class ImmortalsError(Exception):
    """Base class of every error the runtime raises on purpose."""


class RemoteError(ImmortalsError):
    """The called handler raised. ``type_name`` and ``message`` are what it raised, ``lsn`` the
    callee's step that raised it (None from logs written before it was recorded): ``immortals
    replay CALLEE --from LSN --to LSN`` or the debugger show that step.

    Only the type's name crosses the wire (the caller may not even have the class), so catch
    ``RemoteError`` and look at ``type_name``. State changes the callee made before raising are
    kept: an exception does not roll anything back."""

    def __init__(self, type_name: str, message: str, lsn: int | None = None) -> None:
        self.type_name = type_name
        self.message = message
        self.lsn = lsn
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, self.message, self.lsn))


class EffectError(ImmortalsError):
    """A side effect (``self.run``) failed on its last attempt: ``type_name`` and ``message``
    are what the function raised (``TimeoutError`` when an attempt took longer than its
    ``timeout``). Replay raises the same recorded failure without calling the function."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (EffectError, (self.type_name, self.message))


class NondeterminismError(ImmortalsError):
    """Re-executing a logged step did not reproduce what the log recorded.

    This means the handler's result depends on something the runtime did not record: the real
    clock, an unseeded random number, a file, the network, iteration order of a set of objects
    hashed by address, or code that changed since the log was written. Use ``self.now()``,
    ``self.random()``, ``self.uuid()`` and ``await self.sleep()`` for non-determinism, and pass
    outside data in as call arguments. The log keeps the code that ran each step and replays
    with it, so editing the code does not cause this (a restart with new code is an upgrade);
    only a log written before code was kept replays with the code at hand. ``immortals replay
    NAME --verify`` lists every step that does not replay.
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
            "not recorded (real clock, unseeded randomness, I/O; use self.now(), self.random()), "
            "or, in a log written before code was kept, its code changed. `immortals replay "
            f"{instance} --verify` lists every such step"
        )


class SandboxError(ImmortalsError):
    """Handler code tried something that cannot be replayed deterministically."""


class UnknownMethodError(ImmortalsError):
    """A call named a method the instance does not expose with ``@rpc``."""


class AppLoadError(ImmortalsError):
    """The app given as ``path/file.py:Class`` or ``module:Class`` cannot be loaded."""


class AppInitError(AppLoadError):
    """The app's ``__init__`` raised (or needs arguments) at the instance's first start.

    Nothing is logged for that start, so fixing the code and starting again is safe."""


class CheckpointFormatError(ImmortalsError):
    """A checkpoint's payload has a format this version cannot read."""


class UpgradeError(ImmortalsError):
    """New code cannot take over an instance: its migration failed, or the retroactive test
    refused it. Nothing was logged; the message says what to do."""


class InstanceError(ImmortalsError):
    """An instance cannot be found, started, or reached."""


class IdempotencyKeyError(ImmortalsError, ValueError):
    """An outside caller's idempotency key is not one an instance accepts."""


class CallTimeoutError(InstanceError):
    """A call from outside got no answer in time (the instance is down, busy, or unreachable).

    The call may or may not have run: retrying with the same idempotency key (``key``) is always
    safe, for as long as the instance remembers keys (24 hours by default).
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CallTimeoutError, (self.key, str(self)))


class InstanceNameError(InstanceError):
    """An instance name outside the safe alphabet; the message states the rule."""


class SecretError(InstanceError):
    """The home's cluster secret is missing, too short, unreadable, or readable by others."""


class RegistryError(InstanceError):
    """The registry cannot be used: lmdb failed (a full disk, a damaged file) or a stored
    record does not decode. The message names the registry and what to do."""


class PeerError(ImmortalsError):
    """The remote side broke the protocol; the message is what gets logged and sent to it."""


class WireError(PeerError):
    """The remote side sent bytes that are not a valid message (its fault, not ours)."""


class ProtocolError(PeerError):
    """The remote side sent a message the protocol does not allow at this point."""
