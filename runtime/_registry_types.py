"""The registry's records: what each backend stores and returns (see ``_registry.Registry``)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What the registry knows of one instance."""

    name: str
    host: str
    port: int
    epoch: int
    log_dir: str
    app: str
    code_version: str
    pid: int
    started: float

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Lease:
    """The primary role of one instance: held by ``holder`` at ``epoch`` until ``expires``
    (wall time, seconds) unless renewed. Only the holder at the current epoch may renew it."""

    name: str
    holder: str
    epoch: int
    expires: float

    def live(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires


@dataclass(frozen=True, slots=True)
class StandbyRecord:
    """What a standby of ``name`` reports: how far it has applied the log, and when."""

    name: str
    holder: str  # unique per standby process: "pid@host"
    pid: int
    applied_lsn: int  # the last step it applied
    log_lsn: int  # the log's last durable step when it looked
    lag_ms: float  # how long the oldest step it had not applied had been durable, then
    seen: float  # wall time of this report
    checkpoint_lsn: int  # the newest checkpoint it wrote (0: none)


class Damaged(Exception):
    """A stored registry value that does not decode (the registry turns it into RegistryError,
    naming the registry and what to do)."""
