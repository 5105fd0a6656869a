"""The immortals runtime: write plain Python classes, get state that survives any crash.

Public face::

    from runtime import Immortal, rpc, connect, RemoteError
"""

from ._api import Immortal, Ref, rpc
from ._client import Client, connect
from ._errors import (
    AppLoadError,
    ImmortalsError,
    InstanceError,
    NondeterminismError,
    RemoteError,
    SandboxError,
    UnknownMethodError,
)

__all__ = [
    "AppLoadError",
    "Client",
    "Immortal",
    "ImmortalsError",
    "InstanceError",
    "NondeterminismError",
    "Ref",
    "RemoteError",
    "SandboxError",
    "UnknownMethodError",
    "connect",
    "rpc",
]
