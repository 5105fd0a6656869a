"""Keeping handler code replayable: refuse sockets, subprocesses, threads and files in handlers.

A handler's effects must come only from (state, input, recorded non-determinism). Real I/O would
make replay differ, so while a handler runs on the executor's thread, an audit hook
(``sys.addaudithook``) refuses the events that mean I/O, and ``threading.Thread.start`` is
refused the same way (Python 3.11 has no audit event for starting a thread). Everything else
in the process (the coordinator, the log writer thread) is untouched: the guard is per thread.

Several threads may run handlers at once (the debugger's background indexer and its interactive
replayer both replay), so the guard is a set of the idents of the threads inside a handler, not
one global. ``enter`` adds the calling thread and returns a token; ``leave(token)`` removes that
thread again only if that ``enter`` added it, so nested (re-entrant) guards on one thread and
guards on other threads are left as they were. The hook and ``Thread.start`` ask whether
``threading.get_ident()`` is in the set; while the set is empty (no handler running anywhere)
they return after one truth test. A set add/discard is cheaper than a ``threading.local`` or a
per-thread counter here (measured), and both are atomic under the GIL.

Two more things differ between live and replay unless the guard evens them out:

* **asyncio**: live, a handler runs on the event loop's thread, so ``asyncio.gather()`` would
  find a running loop and schedule a task the log knows nothing of; in replay there is no
  loop and the same line raised another error. Inside a handler, asking asyncio for its loop
  (``get_running_loop``, ``get_event_loop``: what ``gather``, ``create_task``, ``sleep`` and
  ``wait_for`` do first) raises ``SandboxError``, live and in replay alike.
* **print()**: stdout carries the emit stream, and a handler's prints ran again on every
  replay. Inside a handler, ``print()`` to stdout goes to stderr, each line prefixed with the
  tag ``enter`` was given (instance and LSN); in replay (no tag) it prints nothing.

Rejected: running handlers in a subinterpreter or a seccomp jail (heavy, Linux-only, and it
would make every call cross a boundary); monkeypatching ``socket``/``open`` (misses C callers).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import builtins
import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._errors import SandboxError

# Idents of the threads currently inside a handler. Mutated in place, never rebound, so the
# bound methods below stay valid (they save an attribute lookup per step, about 20 ns).
_guarded: set[int] = set()
_add = _guarded.add
_discard = _guarded.discard
_get_ident = threading.get_ident
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
    "asyncio": (
        "await runtime awaitables instead: self.gather(), self.first(), self.timeout(), "
        "self.sleep(), self.run() (asyncio's scheduling is not in the log, so it would not replay)"
    ),
}
# What print() inside a handler is tagged with, per guarded thread (None: replay, keep quiet):
# (instance, LSN), formatted only when something is printed (it is set on every step).
_print_tags: dict[int, tuple[str, int] | None] = {}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _guarded or _get_ident() not in _guarded:
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
    if _guarded and _get_ident() in _guarded:
        _refuse("thread", "threading.Thread.start")
    _original_start(self)


def _refusing_loop(original: Any) -> Any:
    """``original`` (an asyncio loop getter), refused inside a handler."""

    def guarded_loop_getter(*args: Any, **kwargs: Any) -> Any:
        if _guarded and _get_ident() in _guarded:
            _refuse("asyncio", f"asyncio.{original.__name__.lstrip('_')}()")
        return original(*args, **kwargs)

    guarded_loop_getter.__name__ = original.__name__
    return guarded_loop_getter


_original_print = builtins.print


def _handler_print(*args: Any, **kwargs: Any) -> None:
    """``print`` as a handler sees it: stdout becomes tagged stderr lines, or nothing in replay."""
    target = kwargs.get("file")
    if not (_guarded and _get_ident() in _guarded) or (
        target is not None and target is not sys.stdout
    ):
        _original_print(*args, **kwargs)
        return
    tag = _print_tags.get(_get_ident())
    if tag is None:
        return  # replay: the line was printed when the step first ran
    text = io.StringIO()
    _original_print(*args, **{**kwargs, "file": text, "flush": False})
    lines = text.getvalue().splitlines()
    prefix = f"[{tag[0]} LSN {tag[1]}]"
    sys.stderr.write("".join(f"{prefix} {line}\n" for line in lines))
    sys.stderr.flush()


_installed = False


def install() -> None:
    """Install the guard once per process (audit hooks cannot be removed, so it stays idle)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        threading.Thread.start = _guarded_start  # type: ignore[method-assign]
        for module in (asyncio.events, asyncio):
            for getter in ("get_running_loop", "get_event_loop", "_get_event_loop"):
                original = getattr(module, getter, None)
                if original is not None:
                    setattr(module, getter, _refusing_loop(original))
        builtins.print = _handler_print
        _installed = True


def enter(print_tag: tuple[str, int] | None = None) -> int | None:
    """Start refusing I/O on this thread; returns the token ``leave`` needs. ``print_tag``,
    (instance, LSN), prefixes what the handler prints (to stderr); None keeps it quiet (replay).

    The token is this thread's ident if this call guarded it, or None if it was already guarded
    (a nested enter), in which case the matching ``leave`` keeps it guarded. Other threads are
    not affected either way.

    A pair of plain calls rather than a context manager: this runs once per step, and a
    generator-based context manager cost about 3% of a step in profiles.
    """
    if not _installed:
        install()
    ident = _get_ident()
    if ident in _guarded:
        return None
    _add(ident)
    _print_tags[ident] = print_tag
    return ident


def leave(token: int | None) -> None:
    """Undo the matching ``enter``: unguard this thread if that ``enter`` guarded it."""
    if token is not None:
        _discard(token)  # its print tag stays: unread until the thread is guarded (and set) again


@contextmanager
def guarded() -> Iterator[None]:
    """Refuse I/O on this thread for the duration (re-entrant)."""
    previous = enter()
    try:
        yield
    finally:
        leave(previous)
