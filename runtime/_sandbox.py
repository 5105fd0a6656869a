"""Keeping handler code replayable: refuse sockets, subprocesses, threads and files in handlers.

A handler's effects must come only from (state, input, recorded non-determinism). Real I/O would
make replay differ, so while a handler runs on the executor's thread, an audit hook
(``sys.addaudithook``) refuses the events that mean I/O, and ``threading.Thread.start`` is
refused the same way (Python 3.11 has no audit event for starting a thread). Everything else
in the process (the coordinator, the log writer thread) is untouched: the guard is per thread.

Rejected: running handlers in a subinterpreter or a seccomp jail (heavy, Linux-only, and it
would make every call cross a boundary); monkeypatching ``socket``/``open`` (misses C callers).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._errors import SandboxError

_guarded_thread: int | None = None
_IMPORT_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth", ".zip")
_BLOCKED_PREFIXES = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.fork",
    "os.spawn",
    "os.posix_spawn",
    "os.startfile",
)
_ADVICE = {
    "socket": "call other instances with self.ref(name).method(...), not sockets",
    "subprocess": "run outside work outside the handler and pass results in as call arguments",
    "open": "pass file contents in as call arguments, or emit() what should be written",
    "thread": "handlers run on the runtime's scheduler; await calls or self.sleep() instead",
}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _guarded_thread is None or threading.get_ident() != _guarded_thread:
        return
    if event == "open":
        path = args[0] if args else None
        if isinstance(path, str | bytes) and str(path).endswith(_IMPORT_SUFFIXES):
            return  # the import system reading code
        _refuse("open", f"open({path!r})")
    elif event.startswith(_BLOCKED_PREFIXES):
        _refuse(event.split(".")[0] if event.startswith("socket") else "subprocess", event)


def _refuse(kind: str, what: str) -> None:
    raise SandboxError(
        f"handlers cannot do real I/O ({what}): it would not replay. {_ADVICE.get(kind, '')}"
    )


_original_start = threading.Thread.start


def _guarded_start(self: threading.Thread) -> None:
    if _guarded_thread is not None and threading.get_ident() == _guarded_thread:
        _refuse("thread", "threading.Thread.start")
    _original_start(self)


_installed = False


def install() -> None:
    """Install the guard once per process (audit hooks cannot be removed, so it stays idle)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        threading.Thread.start = _guarded_start  # type: ignore[method-assign]
        _installed = True


def enter() -> int | None:
    """Start refusing I/O on this thread; returns what ``leave`` must restore.

    A pair of plain calls rather than a context manager: this runs once per step, and a
    generator-based context manager cost about 3% of a step in profiles.
    """
    global _guarded_thread
    if not _installed:
        install()
    previous = _guarded_thread
    _guarded_thread = threading.get_ident()
    return previous


def leave(previous: int | None) -> None:
    global _guarded_thread
    _guarded_thread = previous


@contextmanager
def guarded() -> Iterator[None]:
    """Refuse I/O on this thread for the duration (re-entrant)."""
    previous = enter()
    try:
        yield
    finally:
        leave(previous)
