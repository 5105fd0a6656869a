"""The immortals runtime: write plain Python classes, get state that survives any crash.

Public face::

    from runtime import Immortal, rpc, connect, RemoteError
"""

from ._api import Immortal, Ref, rpc
from ._client import Client, connect
from ._errors import (
    AppInitError,
    AppLoadError,
    CallTimeoutError,
    CheckpointFormatError,
    EffectError,
    IdempotencyKeyError,
    ImmortalsError,
    InstanceError,
    InstanceNameError,
    NondeterminismError,
    PeerError,
    RegistryError,
    RemoteError,
    SandboxError,
    SecretError,
    UnknownMethodError,
    UpgradeError,
)

__all__ = [
    "AppInitError",
    "AppLoadError",
    "CallTimeoutError",
    "CheckpointFormatError",
    "Client",
    "EffectError",
    "IdempotencyKeyError",
    "Immortal",
    "ImmortalsError",
    "InstanceError",
    "InstanceNameError",
    "NondeterminismError",
    "PeerError",
    "Ref",
    "RegistryError",
    "RemoteError",
    "SandboxError",
    "SecretError",
    "UnknownMethodError",
    "UpgradeError",
    "connect",
    "rpc",
]
