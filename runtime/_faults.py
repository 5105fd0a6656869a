"""Fault injection: SIGKILL this process at a named point, for crash tests and demos.

Set ``IMMORTALS_FAULT=POINT[:N][,POINT[:N]...]`` in an instance's environment; the process kills
itself with SIGKILL the N-th time (default 1st) it reaches POINT. Points:

``before-fsync``    a batch has executed; its steps are about to be written and fsynced
``after-fsync``     a batch is durable; nothing of it has been released yet
``after-send``      a batch's outgoing messages (calls or replies) were handed to the network
``after-receive``   a message from a peer arrived and was decoded; it is not executed or logged
``mid-frame``       half of a batch's frame bytes are written to the log, the rest are not
``mid-checkpoint``  half of a checkpoint file is written (under its temporary name)
``before-effect``   a side effect's asking step is durable; its function has not been called
``after-effect``    a side effect's function returned; its outcome is not executed or logged
``takeover-follow`` a live upgrade followed the log and checked the new code; the old process
                    has not been asked to stop
``stopping``        a clean stop began (SIGTERM): the server is closed, nothing is drained yet
``draining``        a clean stop is draining: a batch it made durable is not released yet
``takeover-locked`` a live upgrade saw the old process stop (its lock is free); the log is not
                    opened yet

SIGKILL, not an exception: nothing may run after the fault (no ``finally``, no flush), exactly as
when a machine loses power or the kernel's OOM killer strikes.
"""

from __future__ import annotations

import os
import signal
from typing import Final

POINTS: Final = (
    "before-fsync",
    "after-fsync",
    "after-send",
    "after-receive",
    "mid-frame",
    "mid-checkpoint",
    "before-effect",
    "after-effect",
    "takeover-follow",
    "takeover-locked",
    "stopping",
    "draining",
)


def _parse(spec: str) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, _, count = part.partition(":")
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}")
        wanted[point] = int(count) if count else 1
    return wanted


_wanted = _parse(os.environ.get("IMMORTALS_FAULT", ""))
_seen: dict[str, int] = {}


def armed(*points: str) -> bool:
    """Whether any of ``points`` is armed (so callers add hooks only when needed)."""
    return any(p in _wanted for p in points)


def hit(point: str) -> None:
    """Mark that execution reached ``point``; die here if this is the chosen moment."""
    if not _wanted:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _wanted.get(point) == _seen[point]:
        os.kill(os.getpid(), signal.SIGKILL)
