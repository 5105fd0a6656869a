"""What a standby needs besides the node's own replay: a thread waiting on the writer lock, and
the numbers it reports.

A standby follows the primary's log and applies each durable step (``Node._stand_by``). On one
machine the primary's death is seen at once: the log's writer lock is an ``flock``, which the
kernel releases the instant its holder dies, so a thread blocked on it wakes then. That is
faster than any lease could lapse, and needs no clock.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from logformat import LOCK_NAME

from ._home import process_alive

FOLLOW_POLL: Final = 0.005  # seconds between two looks at the log for new steps
REPORT_EVERY: Final = 0.25  # seconds between two standby reports to the registry
REPORT_FRESH: Final = 3.0  # a report older than this means the standby is gone


def holder_id() -> str:
    """Who this process is, in leases and standby reports: ``pid@host``."""
    return f"{os.getpid()}@{socket.gethostname()}"


def local_pid(holder: str) -> int | None:
    """The pid of a holder (``pid@host``) if it is on this host, else None."""
    pid, _, host = holder.partition("@")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def holder_alive(holder: str) -> bool:
    """Whether a lease's (or a reservation's) holder may still run: its process exists, if it
    is on this host (elsewhere, only the lease's lapse can tell)."""
    pid = local_pid(holder)
    return pid is None or process_alive(pid)


class LockWaiter:
    """A daemon thread blocked on the log's writer lock; ``on_granted`` runs in the event loop
    once this process holds it. The fd that holds it is then handed to the log writer
    (``take_fd``): closing it first would hand the lock to the next waiting standby."""

    def __init__(
        self, log_dir: Path, loop: asyncio.AbstractEventLoop, on_granted: Callable[[], None]
    ) -> None:
        self.path = log_dir / LOCK_NAME
        self._loop = loop
        self._on_granted = on_granted
        self._fd = -1
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        threading.Thread(target=self._wait, name="standby-lock", daemon=True).start()

    def _wait(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the writer (and any earlier waiter) is gone
        with self._lock:
            if self._closed:
                os.close(fd)
                return
            self._fd = fd
        self._loop.call_soon_threadsafe(self._on_granted)

    def take_fd(self) -> int:
        """The fd holding the lock (the caller owns it from now on)."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd < 0:
            raise RuntimeError("the writer lock is not held")
        return fd

    def close(self) -> None:
        """Give the lock back if held (and drop it if it is granted later)."""
        with self._lock:
            self._closed = True
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
